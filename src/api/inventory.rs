//! The `Inventory` service: channel adapters and the ERP. Each method
//! checks the caller, converts the request, calls the engine, converts the
//! answer. No business logic lives here.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::{Need, Tokens};
use super::convert as cv;
use super::paging;
use super::pb::{self, inventory_server::Inventory};
use crate::domain::Sku;
use crate::engine::{
    AdjustCmd, Engine, FulfillCmd, ReleaseCmd, ReservationFilter, ReserveCmd, RestockCmd, SetCmd,
};
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
        let cmd = set_cmd(r)?;
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
        let r = req.get_ref();
        let (skus, next_page_token) =
            self.page_of_skus("stock", &r.skus, r.page_size, &r.page_token)?;
        let levels = self.engine.get_stock(&skus);
        Ok(Response::new(pb::GetStockResponse {
            levels: levels.iter().map(cv::stock_level).collect(),
            next_page_token,
        }))
    }

    async fn get_availability(
        &self,
        req: Request<pb::GetAvailabilityRequest>,
    ) -> Reply<pb::GetAvailabilityResponse> {
        let r = req.get_ref();
        let channel = self.tokens.check_channel_read(req.metadata(), &r.channel)?;
        let (skus, next_page_token) =
            self.page_of_skus("availability", &r.skus, r.page_size, &r.page_token)?;
        let items = if skus.is_empty() {
            // An empty page of every SKU: not "every SKU" again.
            self.engine
                .availability(&[], channel.as_ref())
                .map(|_| Vec::new())?
        } else {
            self.engine.availability(&skus, channel.as_ref())?
        };
        Ok(Response::new(pb::GetAvailabilityResponse {
            items: items.iter().map(cv::channel_availability).collect(),
            next_page_token,
        }))
    }

    async fn list_reservations(
        &self,
        req: Request<pb::ListReservationsRequest>,
    ) -> Reply<pb::ListReservationsResponse> {
        let r = req.get_ref();
        let channel = self.tokens.check_channel_read(req.metadata(), &r.channel)?;
        let size = paging::size(
            "page_size",
            r.page_size,
            paging::DEFAULT_RESERVATION_PAGE,
            paging::MAX_RESERVATION_PAGE,
        )?;
        let statuses = r
            .statuses
            .iter()
            .enumerate()
            .map(|(i, s)| cv::reservation_status(&format!("statuses[{i}]"), *s))
            .collect::<Result<Vec<_>, _>>()?;
        let sku = if r.sku.is_empty() {
            None
        } else {
            Some(cv::sku(&r.sku)?)
        };
        let after = paging::read("reservations", &r.page_token)?
            .map(|body| {
                body.split_once('|')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| Status::invalid_argument("page_token is malformed"))
            })
            .transpose()?;
        let filter = ReservationFilter {
            channel,
            statuses,
            sku,
            created_after_ms: r.created_after_ms,
        };
        let (found, more) = self
            .engine
            .list_reservations(&filter, after.as_ref(), size)
            .await;
        let next_page_token = match found.last() {
            Some(last) if more => paging::issue(
                "reservations",
                &format!("{}|{}", last.created_at_ms, last.id),
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListReservationsResponse {
            reservations: found.iter().map(cv::reservation).collect(),
            next_page_token,
        }))
    }

    async fn list_movements(
        &self,
        req: Request<pb::ListMovementsRequest>,
    ) -> Reply<pb::ListMovementsResponse> {
        // The ledger names every channel's orders: a channel token reads it
        // only when it may read every channel.
        self.tokens.check(req.metadata(), Need::ReadAllChannels)?;
        let r = req.get_ref();
        let sku = if r.sku.is_empty() {
            None
        } else {
            Some(cv::sku(&r.sku)?)
        };
        let warehouse = if r.warehouse.is_empty() {
            None
        } else {
            Some(cv::warehouse(&r.warehouse)?)
        };
        let limit = paging::size(
            "limit",
            r.limit,
            paging::DEFAULT_MOVEMENTS,
            paging::MAX_MOVEMENTS,
        )?;
        let after_id = i64::try_from(r.after_id).map_err(|_| {
            Status::invalid_argument(format!("after_id {} is beyond any ledger id", r.after_id))
        })?;
        let rows = self
            .engine
            .movements(sku.as_ref(), warehouse.as_ref(), after_id, limit as i64)
            .await?;
        Ok(Response::new(pb::ListMovementsResponse {
            movements: rows.iter().map(cv::movement).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(items = req.get_ref().items.len()))]
    async fn batch_set_stock(
        &self,
        req: Request<pb::BatchSetStockRequest>,
    ) -> Reply<pb::BatchSetStockResponse> {
        self.tokens.check(req.metadata(), Need::Stock)?;
        let items = &req.get_ref().items;
        if items.len() > paging::MAX_BATCH_ITEMS {
            return Err(Status::invalid_argument(format!(
                "items: at most {} counts per BatchSetStock, got {}; send them in chunks",
                paging::MAX_BATCH_ITEMS,
                items.len()
            )));
        }
        let mut results: Vec<Option<pb::BatchSetStockResult>> = vec![None; items.len()];
        let mut cmds = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match set_cmd(item) {
                Ok(cmd) => {
                    cmds.push(cmd);
                    positions.push(i);
                }
                Err(status) => results[i] = Some(failed(i, item, &status)),
            }
        }
        let decided = self.engine.batch_set_stock(cmds).await?;
        for (i, outcome) in positions.into_iter().zip(decided) {
            results[i] = Some(match outcome {
                Ok((level, replayed)) => pb::BatchSetStockResult {
                    level: Some(cv::stock_level(&level)),
                    replayed,
                    ..Default::default()
                },
                Err(e) => failed(i, &items[i], &Status::from(e)),
            });
        }
        Ok(Response::new(pb::BatchSetStockResponse {
            results: results
                .into_iter()
                .map(|r| r.expect("every item answered"))
                .collect(),
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

impl InventoryService {
    /// The SKUs a GetStock/GetAvailability answers, and the token of the
    /// page after: the named ones (at most [`paging::MAX_NAMED_SKUS`]), or
    /// with none named one page of every SKU.
    fn page_of_skus(
        &self,
        kind: &str,
        named: &[String],
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Sku>, String), Status> {
        if !named.is_empty() {
            if named.len() > paging::MAX_NAMED_SKUS {
                return Err(Status::invalid_argument(format!(
                    "skus: at most {} SKUs per call, got {}; leave skus empty to page \
                     through every SKU",
                    paging::MAX_NAMED_SKUS,
                    named.len()
                )));
            }
            return Ok((cv::skus(named)?, String::new()));
        }
        let size = paging::size(
            "page_size",
            page_size,
            paging::DEFAULT_SKU_PAGE,
            paging::MAX_SKU_PAGE,
        )?;
        let after = paging::read_sku(kind, page_token)?;
        let (skus, more) = self.engine.sku_page(after.as_ref(), size);
        let next = match skus.last() {
            Some(last) if more => paging::issue(kind, last.as_str()),
            _ => String::new(),
        };
        Ok((skus, next))
    }
}

/// A SetStock request as the engine takes it.
fn set_cmd(r: &pb::SetStockRequest) -> Result<SetCmd, Status> {
    let expected_version = match r.expected_version {
        Some(v) if v < 0 => {
            return Err(Status::invalid_argument(format!(
                "expected_version must not be negative, got {v}"
            )))
        }
        v => v.map(|v| v as u64),
    };
    Ok(SetCmd {
        sku: cv::sku(&r.sku)?,
        warehouse: cv::warehouse(&r.warehouse)?,
        on_hand: r.on_hand,
        reason: cv::text("reason", &r.reason)?,
        expected_version,
        movement_id: cv::key("movement_id", &r.movement_id)?,
    })
}

/// The result of an item that failed, naming it.
fn failed(i: usize, item: &pb::SetStockRequest, status: &Status) -> pb::BatchSetStockResult {
    pb::BatchSetStockResult {
        level: None,
        error_code: crate::api::error::code_name(status.code()).to_string(),
        error_message: format!(
            "items[{i}] ({} at {}): {}",
            item.sku,
            item.warehouse,
            status.message()
        ),
        replayed: false,
    }
}
