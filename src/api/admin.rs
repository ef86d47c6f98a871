//! The `Admin` service: warehouses, channels and rules, for ops.

use tonic::{Request, Response, Status};

use super::auth::{Need, Tokens};
use super::convert as cv;
use super::pb::{self, admin_server::Admin};
use crate::domain::{Channel, Warehouse};
use crate::engine::Engine;

pub struct AdminService {
    pub engine: Engine,
    pub tokens: Tokens,
    /// The process's role, for GetServerInfo.
    pub serving: crate::ha::Serving,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminService {
    /// Served by the process in either role (`info::route` takes the path
    /// first); the same answer when this service is reached directly.
    async fn get_server_info(
        &self,
        req: Request<pb::GetServerInfoRequest>,
    ) -> Reply<pb::ServerInfo> {
        super::info::server_info(&self.serving, &self.tokens, req.metadata()).map(Response::new)
    }

    async fn upsert_warehouse(&self, req: Request<pb::Warehouse>) -> Reply<pb::Warehouse> {
        self.tokens.check(req.metadata(), Need::Ops)?;
        let r = req.get_ref();
        let code = cv::warehouse(&r.code)?;
        let name = cv::name(&r.name, code.as_str())?;
        let w = self
            .engine
            .upsert_warehouse(Warehouse { code, name })
            .await?;
        Ok(Response::new(cv::warehouse_pb(&w)))
    }

    async fn list_warehouses(
        &self,
        req: Request<pb::ListWarehousesRequest>,
    ) -> Reply<pb::ListWarehousesResponse> {
        self.tokens.check(req.metadata(), Need::Read)?;
        let catalog = self.engine.catalog();
        Ok(Response::new(pb::ListWarehousesResponse {
            warehouses: catalog.warehouses.iter().map(cv::warehouse_pb).collect(),
        }))
    }

    async fn upsert_channel(&self, req: Request<pb::Channel>) -> Reply<pb::Channel> {
        self.tokens.check(req.metadata(), Need::Ops)?;
        let r = req.get_ref();
        let code = cv::channel(&r.code)?;
        let name = cv::name(&r.name, code.as_str())?;
        let c = self.engine.upsert_channel(Channel { code, name }).await?;
        Ok(Response::new(cv::channel_pb(&c)))
    }

    async fn list_channels(
        &self,
        req: Request<pb::ListChannelsRequest>,
    ) -> Reply<pb::ListChannelsResponse> {
        self.tokens.check(req.metadata(), Need::Read)?;
        let catalog = self.engine.catalog();
        Ok(Response::new(pb::ListChannelsResponse {
            channels: catalog.channels.iter().map(cv::channel_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(changed_by = %req.get_ref().changed_by))]
    async fn put_rule(&self, req: Request<pb::PutRuleRequest>) -> Reply<pb::Rule> {
        self.tokens.check(req.metadata(), Need::Ops)?;
        let r = req.get_ref();
        let rule = r
            .rule
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("rule must be set"))?;
        let changed_by = cv::line_text("changed_by", &r.changed_by)?;
        let comment = cv::text("comment", &r.comment)?;
        let stored = self
            .engine
            .put_rule(cv::rule(rule)?, &changed_by, &comment)
            .await?;
        tracing::info!(rule = ?crate::api::convert::rule_to_pb(&stored), changed_by = %r.changed_by, comment = %r.comment, "rule stored");
        Ok(Response::new(cv::rule_to_pb(&stored)))
    }

    async fn delete_rule(&self, req: Request<pb::DeleteRuleRequest>) -> Reply<pb::Empty> {
        self.tokens.check(req.metadata(), Need::Ops)?;
        let r = req.get_ref();
        let channel = cv::channel(&r.channel)?;
        let sku = if r.sku.is_empty() {
            None
        } else {
            Some(cv::sku(&r.sku)?)
        };
        let changed_by = cv::line_text("changed_by", &r.changed_by)?;
        let comment = cv::text("comment", &r.comment)?;
        self.engine
            .delete_rule(&channel, sku.as_ref(), &changed_by, &comment)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_rules(&self, req: Request<pb::ListRulesRequest>) -> Reply<pb::ListRulesResponse> {
        let r = req.get_ref();
        let channel = self.tokens.check_channel_read(req.metadata(), &r.channel)?;
        let rules = self.engine.list_rules(channel.as_ref())?;
        Ok(Response::new(pb::ListRulesResponse {
            rules: rules.iter().map(cv::rule_to_pb).collect(),
        }))
    }

    async fn rule_history(
        &self,
        req: Request<pb::RuleHistoryRequest>,
    ) -> Reply<pb::RuleHistoryResponse> {
        let r = req.get_ref();
        let channel = cv::channel(&r.channel)?;
        self.tokens
            .check(req.metadata(), Need::ReadChannel(&channel))?;
        let sku = if r.sku.is_empty() {
            None
        } else {
            Some(cv::sku(&r.sku)?)
        };
        let changes = self
            .engine
            .rule_history(&channel, sku.as_ref(), r.all_skus)
            .await?;
        Ok(Response::new(pb::RuleHistoryResponse {
            changes: changes
                .iter()
                .map(|c| pb::RuleChange {
                    changed_by: c.changed_by.clone(),
                    at_ms: c.at_ms,
                    before: c.before.as_ref().map(cv::rule_to_pb),
                    after: c.after.as_ref().map(cv::rule_to_pb),
                    comment: c.comment.clone(),
                })
                .collect(),
        }))
    }

    async fn simulate_rules(
        &self,
        req: Request<pb::SimulateRulesRequest>,
    ) -> Reply<pb::SimulateRulesResponse> {
        self.tokens.check(req.metadata(), Need::ReadAllChannels)?;
        let r = req.get_ref();
        let proposed = r
            .proposed
            .iter()
            .map(cv::rule)
            .collect::<Result<Vec<_>, _>>()?;
        let skus = cv::skus(&r.skus)?;
        let engine = self.engine.clone();
        // Thousands of SKUs take a while: off the async workers.
        let changes = tokio::task::spawn_blocking(move || engine.simulate_rules(&proposed, &skus))
            .await
            .map_err(|e| Status::internal(format!("simulation failed: {e}")))??;
        Ok(Response::new(pb::SimulateRulesResponse {
            changes: changes
                .iter()
                .map(|c| pb::SimulatedChange {
                    sku: c.sku.to_string(),
                    channel: c.channel.to_string(),
                    atp_before: c.atp_before,
                    atp_after: c.atp_after,
                    published_before: c.published_before,
                    published_after: c.published_after,
                })
                .collect(),
        }))
    }

    async fn list_outbox(
        &self,
        req: Request<pb::ListOutboxRequest>,
    ) -> Reply<pb::ListOutboxResponse> {
        self.tokens.check(req.metadata(), Need::ReadAllChannels)?;
        let r = req.get_ref();
        let state = cv::outbox_state(r.state)?;
        let limit = match r.limit {
            0 => 100,
            n if n > MAX_OUTBOX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is more than the {MAX_OUTBOX_PAGE} allowed per page; page with after_id"
                )))
            }
            n => i64::from(n),
        };
        if r.after_id < 0 {
            return Err(Status::invalid_argument(format!(
                "after_id: {} is negative; 0 lists from the start",
                r.after_id
            )));
        }
        let entries = self.engine.outbox_list(state, r.after_id, limit).await?;
        Ok(Response::new(pb::ListOutboxResponse {
            entries: entries.iter().map(cv::outbox_entry_pb).collect(),
        }))
    }

    async fn retry_outbox(
        &self,
        req: Request<pb::RetryOutboxRequest>,
    ) -> Reply<pb::RetryOutboxResponse> {
        self.tokens.check(req.metadata(), Need::Ops)?;
        let ids = cv::outbox_ids(&req.get_ref().ids)?;
        let entries = self.engine.outbox_retry(&ids).await?;
        Ok(Response::new(pb::RetryOutboxResponse {
            entries: entries.iter().map(cv::outbox_entry_pb).collect(),
        }))
    }
}

/// Most outbox entries listed per page.
const MAX_OUTBOX_PAGE: u32 = 1000;
