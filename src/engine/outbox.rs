//! Which reservation changes Odoo must hear about, and the outbox entry that
//! tells it: written in the same commit as the change, so a change is never
//! acknowledged without its entry nor stored without it.
//!
//! Also the outbox reads and the outcome writes of the dispatcher, which go
//! through the engine's writer like every other write.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{Engine, EngineError};
use crate::domain::{Reservation, Status};
use crate::store::{
    NewOutboxEntry, Op, OutboxEntry, OutboxEvent, OutboxLine, OutboxState, OutboxStats,
    OutboxUpdate,
};

/// The entry a change from `before` (None: a new reservation) to `after`
/// writes, if Odoo must hear of it. A HELD reservation is not pushed: Odoo
/// hears of it once it is confirmed (by Confirm, or by shipping it), and not
/// at all when it is released or expires while held.
pub(super) fn entry_for(
    before: Option<&Reservation>,
    after: &Reservation,
    event: OutboxEvent,
    at_ms: i64,
) -> Option<NewOutboxEntry> {
    let pushed_before =
        before.is_some_and(|b| matches!(b.status, Status::Confirmed | Status::Fulfilled));
    let pushed_after = matches!(after.status, Status::Confirmed | Status::Fulfilled);
    if !pushed_before && !pushed_after {
        return None;
    }
    let event = if pushed_before {
        event
    } else {
        OutboxEvent::Confirmed
    };
    let mut lines: BTreeMap<_, OutboxLine> = BTreeMap::new();
    for a in &after.allocations {
        let line = lines
            .entry((a.warehouse.clone(), a.sku.clone()))
            .or_insert_with(|| OutboxLine {
                warehouse: a.warehouse.clone(),
                sku: a.sku.clone(),
                ordered: 0,
                fulfilled: 0,
            });
        line.ordered += a.quantity - a.released;
        line.fulfilled += a.fulfilled;
    }
    Some(NewOutboxEntry {
        at_ms,
        reservation_id: after.id.clone(),
        channel: after.channel.clone(),
        order_id: after.order_id.clone(),
        event,
        lines: lines.into_values().collect(),
        terms: after.terms.clone(),
    })
}

impl Engine {
    /// Starts writing outbox entries with reservation changes (when an ERP is
    /// connected). Entries are not written for changes made before.
    pub fn enable_outbox(&self) {
        self.inner.outbox.store(true, Ordering::Relaxed);
    }

    /// The op recording `after` in the outbox, when enabled and due.
    pub(super) fn outbox_op(
        &self,
        before: Option<&Reservation>,
        after: &Reservation,
        event: Option<OutboxEvent>,
    ) -> Option<Op> {
        if !self.inner.outbox.load(Ordering::Relaxed) {
            return None;
        }
        entry_for(before, after, event?, self.now_ms()).map(|e| Op::Outbox(Box::new(e)))
    }

    /// Of each reservation its oldest pending entry, when due now.
    pub async fn outbox_due(&self, limit: i64) -> Result<Vec<OutboxEntry>, EngineError> {
        self.inner
            .store
            .outbox_due(self.now_ms(), limit)
            .await
            .map_err(EngineError::Load)
    }

    pub async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, EngineError> {
        self.inner
            .store
            .outbox_list(state, after_id, limit)
            .await
            .map_err(EngineError::Load)
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats, EngineError> {
        self.inner
            .store
            .outbox_stats()
            .await
            .map_err(EngineError::Load)
    }

    /// Records the outcome of one push; acknowledged once committed.
    pub async fn outbox_record(&self, update: OutboxUpdate) -> Result<(), EngineError> {
        self.record(vec![Op::OutboxUpdate(update)])
            .wait()
            .await
            .map_err(EngineError::Unavailable)
    }

    /// Puts dead (or waiting) entries back in line for a push now, with a
    /// fresh attempt budget. All or nothing: an unknown id, or one already
    /// pushed, refuses the whole request.
    pub async fn outbox_retry(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, EngineError> {
        let found = self
            .inner
            .store
            .outbox_entries(ids)
            .await
            .map_err(EngineError::Load)?;
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.iter().any(|e| e.id == **id))
            .map(i64::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::NotFound {
                what: "outbox entry",
                code: missing.join(", "),
            });
        }
        let pushed: Vec<String> = found
            .iter()
            .filter(|e| e.state == OutboxState::Pushed)
            .map(|e| e.id.to_string())
            .collect();
        if !pushed.is_empty() {
            return Err(EngineError::Refused(format!(
                "outbox entries {} were already pushed to Odoo; only dead or pending entries can be retried",
                pushed.join(", ")
            )));
        }
        let now = self.now_ms();
        let ops: Vec<Op> = found
            .iter()
            .map(|e| {
                Op::OutboxUpdate(OutboxUpdate {
                    id: e.id,
                    state: OutboxState::Pending,
                    attempts: 0,
                    last_error: e.last_error.clone(),
                    next_attempt_at_ms: now,
                    at_ms: now,
                })
            })
            .collect();
        self.record(ops)
            .wait()
            .await
            .map_err(EngineError::Unavailable)?;
        Ok(found
            .into_iter()
            .map(|mut e| {
                e.state = OutboxState::Pending;
                e.attempts = 0;
                e.next_attempt_at_ms = now;
                e.updated_at_ms = now;
                e
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::*;

    fn held() -> Reservation {
        reservation_with(Status::Held)
    }

    #[test]
    fn a_held_reservation_is_not_pushed() {
        assert_eq!(entry_for(None, &held(), OutboxEvent::Confirmed, 1), None);
    }

    #[test]
    fn a_reservation_confirmed_at_once_is_pushed_as_confirmed() {
        let r = reservation_with(Status::Confirmed);
        let e = entry_for(None, &r, OutboxEvent::Confirmed, 7).unwrap();
        assert_eq!(
            (e.event, e.at_ms, e.reservation_id.as_str()),
            (OutboxEvent::Confirmed, 7, r.id.as_str())
        );
        let ordered: i64 = e.lines.iter().map(|l| l.ordered).sum();
        assert_eq!(
            ordered,
            r.allocations.iter().map(|a| a.quantity).sum::<i64>()
        );
    }

    #[test]
    fn a_hold_released_before_confirmation_is_never_pushed() {
        let before = held();
        let mut after = before.clone();
        after.status = Status::Released;
        for a in &mut after.allocations {
            a.released = a.quantity;
        }
        assert_eq!(
            entry_for(Some(&before), &after, OutboxEvent::Released, 1),
            None
        );
    }

    #[test]
    fn a_hold_shipped_before_confirmation_is_pushed_as_confirmed() {
        let before = held();
        let mut after = before.clone();
        after.status = Status::Fulfilled;
        let e = entry_for(Some(&before), &after, OutboxEvent::Fulfilled, 1).unwrap();
        assert_eq!(e.event, OutboxEvent::Confirmed);
    }

    #[test]
    fn a_partial_release_lowers_what_is_ordered() {
        let before = reservation_with(Status::Confirmed);
        let mut after = before.clone();
        after.allocations[0].released = 1;
        let e = entry_for(Some(&before), &after, OutboxEvent::Released, 1).unwrap();
        let a = &after.allocations[0];
        let line = e
            .lines
            .iter()
            .find(|l| l.sku == a.sku && l.warehouse == a.warehouse)
            .unwrap();
        assert_eq!(
            (e.event, line.ordered),
            (OutboxEvent::Released, a.quantity - 1)
        );
    }
}
