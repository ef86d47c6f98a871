//! The embedded store: SQLite through sqlx. (Being written.)

use std::path::Path;

use async_trait::async_trait;

use super::{LedgerRow, Op, PoolRow, Snapshot, Store, StoreError};
use crate::domain::{ChannelCode, OrderId, Reservation, Sku};

/// SQLite file `stockpool.db` in a data directory.
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating) `<data_dir>/stockpool.db` and runs the migrations.
    pub async fn open(_data_dir: &Path) -> Result<Self, StoreError> {
        todo!()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        todo!()
    }
    async fn commit(&self, _ops: &[Op]) -> Result<(), StoreError> {
        todo!()
    }
    async fn load_pools(&self, _skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        todo!()
    }
    async fn load_reservation(
        &self,
        _channel: &ChannelCode,
        _order_id: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        todo!()
    }
    async fn ledger(
        &self,
        _sku: Option<&Sku>,
        _after_id: i64,
        _limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        todo!()
    }
}
