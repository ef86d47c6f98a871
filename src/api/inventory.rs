//! The `Inventory` service: channel adapters and the ERP. Each method
//! checks the caller, converts the request, calls the engine, converts the
//! answer. No business logic lives here.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::{Need, Tokens};
use super::convert as cv;
use super::pb::{self, inventory_server::Inventory};
use crate::engine::{AdjustCmd, Engine, FulfillCmd, ReleaseCmd, ReserveCmd, RestockCmd, SetCmd};
use crate::publish::{Publisher, WatchError};

pub struct InventoryService {
    pub engine: Engine,
    pub publisher: Publisher,
    pub tokens: Tokens,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Inventory for InventoryService {
    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, order_id = %req.get_ref().order_id))]
    async fn reserve(&self, req: Request<pb::ReserveRequest>) -> Reply<pb::ReserveResponse> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens.check(req.metadata(), Need::Channel(&channel))?;
        let r = req.get_ref();
        let cmd = ReserveCmd {
            channel,
            order_id: cv::order_id(&r.order_id)?,
            lines: cv::reserve_lines(&r.lines)?,
            hold_seconds: r.hold_seconds,
            terms: cv::order_terms(r)?,
        };
        let (reservation, replayed) = self.engine.reserve(cmd).await?;
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(cv::reservation(&reservation)),
            replayed,
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, order_id = %req.get_ref().order_id))]
    async fn confirm(&self, req: Request<pb::ConfirmRequest>) -> Reply<pb::Reservation> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens.check(req.metadata(), Need::Channel(&channel))?;
        let order_id = cv::order_id(&req.get_ref().order_id)?;
        let r = self.engine.confirm(&channel, &order_id).await?;
        Ok(Response::new(cv::reservation(&r)))
    }

    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, order_id = %req.get_ref().order_id))]
    async fn release(&self, req: Request<pb::ReleaseRequest>) -> Reply<pb::Reservation> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens.check(req.metadata(), Need::Channel(&channel))?;
        let r = req.get_ref();
        let cmd = ReleaseCmd {
            channel,
            order_id: cv::order_id(&r.order_id)?,
            lines: cv::line_requests(&r.lines)?,
            reason: cv::text("reason", &r.reason)?,
        };
        let r = self.engine.release(cmd).await?;
        Ok(Response::new(cv::reservation(&r)))
    }

    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, order_id = %req.get_ref().order_id))]
    async fn fulfill(&self, req: Request<pb::FulfillRequest>) -> Reply<pb::Reservation> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens.check(req.metadata(), Need::Channel(&channel))?;
        let r = req.get_ref();
        let cmd = FulfillCmd {
            channel,
            order_id: cv::order_id(&r.order_id)?,
            lines: cv::line_requests(&r.lines)?,
            shipment_id: cv::key("shipment_id", &r.shipment_id)?,
        };
        let r = self.engine.fulfill(cmd).await?;
        Ok(Response::new(cv::reservation(&r)))
    }

    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, order_id = %req.get_ref().order_id))]
    async fn restock(&self, req: Request<pb::RestockRequest>) -> Reply<pb::RestockResponse> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens.check(req.metadata(), Need::Channel(&channel))?;
        let r = req.get_ref();
        let refund_id = cv::key("refund_id", &r.refund_id)?.ok_or_else(|| {
            Status::invalid_argument(
                "refund_id must not be empty: it is what makes a repeated refund harmless",
            )
        })?;
        let cmd = RestockCmd {
            channel,
            order_id: cv::order_id(&r.order_id)?,
            refund_id,
            lines: cv::line_requests(&r.lines)?,
        };
        let out = self.engine.restock(cmd).await?;
        Ok(Response::new(pb::RestockResponse {
            restocked: out
                .allocations
                .iter()
                .map(|a| cv::allocation(a, &out.terms))
                .collect(),
            replayed: out.replayed,
        }))
    }

    #[tracing::instrument(skip_all, fields(sku = %req.get_ref().sku, warehouse = %req.get_ref().warehouse))]
    async fn adjust_stock(&self, req: Request<pb::AdjustStockRequest>) -> Reply<pb::StockLevel> {
        self.tokens.check(req.metadata(), Need::Stock)?;
        let r = req.get_ref();
        let cmd = AdjustCmd {
            sku: cv::sku(&r.sku)?,
            warehouse: cv::warehouse(&r.warehouse)?,
            delta: r.delta,
            reason: cv::text("reason", &r.reason)?,
            movement_id: cv::key("movement_id", &r.movement_id)?,
        };
        let level = self.engine.adjust_stock(cmd).await?;
        Ok(Response::new(cv::stock_level(&level)))
    }

    #[tracing::instrument(skip_all, fields(sku = %req.get_ref().sku, warehouse = %req.get_ref().warehouse))]
    async fn set_stock(&self, req: Request<pb::SetStockRequest>) -> Reply<pb::StockLevel> {
        self.tokens.check(req.metadata(), Need::Stock)?;
        let r = req.get_ref();
        let expected_version = match r.expected_version {
            Some(v) if v < 0 => {
                return Err(Status::invalid_argument(format!(
                    "expected_version must not be negative, got {v}"
                )))
            }
            v => v.map(|v| v as u64),
        };
        let cmd = SetCmd {
            sku: cv::sku(&r.sku)?,
            warehouse: cv::warehouse(&r.warehouse)?,
            on_hand: r.on_hand,
            reason: cv::text("reason", &r.reason)?,
            expected_version,
            movement_id: cv::key("movement_id", &r.movement_id)?,
        };
        let level = self.engine.set_stock(cmd).await?;
        Ok(Response::new(cv::stock_level(&level)))
    }

    async fn get_reservation(
        &self,
        req: Request<pb::GetReservationRequest>,
    ) -> Reply<pb::Reservation> {
        let r = req.get_ref();
        let channel = cv::channel(&r.channel)?;
        self.tokens
            .check(req.metadata(), Need::ReadChannel(&channel))?;
        let r = self
            .engine
            .get_reservation(&channel, &cv::order_id(&r.order_id)?)
            .await?;
        Ok(Response::new(cv::reservation(&r)))
    }

    async fn get_stock(&self, req: Request<pb::GetStockRequest>) -> Reply<pb::GetStockResponse> {
        self.tokens.check(req.metadata(), Need::Read)?;
        let skus = cv::skus(&req.get_ref().skus)?;
        let levels = self.engine.get_stock(&skus);
        Ok(Response::new(pb::GetStockResponse {
            levels: levels.iter().map(cv::stock_level).collect(),
        }))
    }

    async fn get_availability(
        &self,
        req: Request<pb::GetAvailabilityRequest>,
    ) -> Reply<pb::GetAvailabilityResponse> {
        let r = req.get_ref();
        let skus = cv::skus(&r.skus)?;
        let channel = if r.channel.is_empty() {
            None
        } else {
            Some(cv::channel(&r.channel)?)
        };
        let need = channel
            .as_ref()
            .map_or(Need::ReadAllChannels, Need::ReadChannel);
        self.tokens.check(req.metadata(), need)?;
        let items = self.engine.availability(&skus, channel.as_ref())?;
        Ok(Response::new(pb::GetAvailabilityResponse {
            items: items.iter().map(cv::channel_availability).collect(),
        }))
    }

    type WatchChannelStockStream =
        Pin<Box<dyn Stream<Item = Result<pb::ChannelStockUpdate, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(channel = %req.get_ref().channel, after_seq = req.get_ref().after_seq))]
    async fn watch_channel_stock(
        &self,
        req: Request<pb::WatchChannelStockRequest>,
    ) -> Reply<Self::WatchChannelStockStream> {
        let channel = cv::channel(&req.get_ref().channel)?;
        self.tokens
            .check(req.metadata(), Need::ReadChannel(&channel))?;
        let mut watch = self
            .publisher
            .watch(&channel, req.get_ref().after_seq)
            .map_err(|e| match e {
                WatchError::UnknownChannel(_) => Status::invalid_argument(format!("channel {e}")),
                WatchError::AheadOfLog { .. } => Status::out_of_range(e.to_string()),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                for e in batch {
                    let update = pb::ChannelStockUpdate {
                        channel: e.channel.to_string(),
                        sku: e.sku.to_string(),
                        published: e.published,
                        atp: e.atp,
                        seq: e.seq,
                        open: e.open,
                        at_ms: e.at_ms,
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
            }
            // The publisher stopped: this server is shutting down or
            // stepping down to standby. The watcher resumes elsewhere from
            // the last seq it received.
            let _ = tx
                .send(Err(Status::unavailable(
                    "this server stopped streaming: it is shutting down or stepping down to \
                     standby; reconnect (to the active server) with after_seq = the last seq \
                     received",
                )))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
