//! A SQLite commit as one hand-off: the whole batch goes to sqlx's SQLite
//! worker thread as one multi-statement query, `BEGIN IMMEDIATE` to
//! `COMMIT`, with one statement per kind of row, each taking its rows as one
//! JSON array through `json_each` (what `UNNEST` is to the Postgres store).
//!
//! sqlx hands every statement to its worker thread and waits for the
//! answer; one statement per op cost about 45 µs of wake-ups each, a
//! 32-order batch about 100 of them. Here a batch of any size is one round
//! trip. The text of the query depends only on which kinds of row the batch
//! holds, so there are few of them and each is prepared once per connection.
//!
//! Within a kind, rows keep their op order (ledger and rule-history ids,
//! the outbox's push order, the last state of a reservation). Pools are
//! folded first ([`fold_pools`]): a hot SKU is one row per batch. Rules are
//! folded to their last put or delete per key, outbox updates to their last
//! standing per entry: each of those ops sets the whole row, so the last one
//! is the outcome of all of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use super::fold::fold_pools;
use super::sqlite::to_json;
use super::{Op, StoreError};
use crate::domain::{ChannelCode, Sku, WarehouseCode};

/// One kind of row: its statement, `{}` standing for its rows (a
/// `json_each` argument). Listed in the order they run.
const KINDS: [&str; 13] = [
    // Warehouses and channels: a new one goes after every existing one, in
    // batch order (`key` is its index in the array); a rename keeps its place.
    "INSERT INTO warehouses (code, name, position) \
     SELECT value->>0, value->>1, (SELECT COALESCE(MAX(position), 0) FROM warehouses) + key + 1 \
     FROM json_each({}) WHERE true ORDER BY key \
     ON CONFLICT (code) DO UPDATE SET name = excluded.name",
    "INSERT INTO channels (code, name, position) \
     SELECT value->>0, value->>1, (SELECT COALESCE(MAX(position), 0) FROM channels) + key + 1 \
     FROM json_each({}) WHERE true ORDER BY key \
     ON CONFLICT (code) DO UPDATE SET name = excluded.name",
    // A rule without a channel carries null: the NOT NULL constraint refuses
    // it, naming the column.
    "INSERT INTO rules (channel, sku, warehouses, fence, share_percent, buffer, \
         max_published, min_published, updated_at_ms) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
         value->>7, value->>8 \
     FROM json_each({}) WHERE true ORDER BY key \
     ON CONFLICT (channel, sku) DO UPDATE SET \
         warehouses = excluded.warehouses, \
         fence = excluded.fence, \
         share_percent = excluded.share_percent, \
         buffer = excluded.buffer, \
         max_published = excluded.max_published, \
         min_published = excluded.min_published, \
         updated_at_ms = excluded.updated_at_ms",
    "DELETE FROM rules WHERE (channel, sku) IN (SELECT value->>0, value->>1 FROM json_each({}))",
    // Pools that only saw deltas: a new pool starts at zero, so the same
    // values serve the insert and the update.
    "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4 \
     FROM json_each({}) WHERE true \
     ON CONFLICT (sku, warehouse) DO UPDATE SET \
         on_hand = on_hand + excluded.on_hand, \
         reserved = reserved + excluded.reserved, \
         version = version + excluded.version",
    // Pools counted in the batch: on_hand is the last count plus the deltas
    // after it; reserved still adds up.
    "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4 \
     FROM json_each({}) WHERE true \
     ON CONFLICT (sku, warehouse) DO UPDATE SET \
         on_hand = excluded.on_hand, \
         reserved = reserved + excluded.reserved, \
         version = version + excluded.version",
    "INSERT INTO ledger (at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, \
         on_hand_after, reserved_after, reason, reference) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
         value->>7, value->>8, value->>9 \
     FROM json_each({}) ORDER BY key",
    // Rows are upserted one after another: a reservation written twice keeps
    // its last state.
    "INSERT INTO reservations (channel, order_id, id, status, created_at_ms, expires_at_ms, \
         lines_json, allocations_json, shipments_json, refunds_json, \
         currency, customer_ref, prices_include_tax, unit_prices_json) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
         value->>7, value->>8, value->>9, value->>10, value->>11, value->>12, value->>13 \
     FROM json_each({}) WHERE true ORDER BY key \
     ON CONFLICT (channel, order_id) DO UPDATE SET \
         id = excluded.id, \
         status = excluded.status, \
         created_at_ms = excluded.created_at_ms, \
         expires_at_ms = excluded.expires_at_ms, \
         lines_json = excluded.lines_json, \
         allocations_json = excluded.allocations_json, \
         shipments_json = excluded.shipments_json, \
         refunds_json = excluded.refunds_json, \
         currency = excluded.currency, \
         customer_ref = excluded.customer_ref, \
         prices_include_tax = excluded.prices_include_tax, \
         unit_prices_json = excluded.unit_prices_json",
    // A duplicate id fails this statement, and with it the commit.
    "INSERT INTO movements (movement_id, fingerprint) \
     SELECT value->>0, value->>1 FROM json_each({}) ORDER BY key",
    "INSERT INTO channel_events (channel, seq, sku, published, atp, at_ms, open) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 \
     FROM json_each({}) ORDER BY key",
    "INSERT INTO rule_history (at_ms, changed_by, comment, channel, sku, before_json, after_json) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 \
     FROM json_each({}) ORDER BY key",
    "INSERT INTO outbox (created_at_ms, reservation_id, channel, order_id, event, lines_json, \
         next_attempt_at_ms, updated_at_ms, terms_json) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>0, value->>0, \
         value->>6 \
     FROM json_each({}) ORDER BY key",
    "UPDATE outbox SET state = u.state, attempts = u.attempts, last_error = u.last_error, \
         next_attempt_at_ms = u.next_attempt_at_ms, updated_at_ms = u.at_ms \
     FROM (SELECT value->>0 AS id, value->>1 AS state, value->>2 AS attempts, \
             value->>3 AS last_error, value->>4 AS next_attempt_at_ms, value->>5 AS at_ms \
         FROM json_each({})) AS u \
     WHERE outbox.id = u.id",
];

const WAREHOUSES: usize = 0;
const CHANNELS: usize = 1;
const RULES_PUT: usize = 2;
const RULES_DELETE: usize = 3;
const POOLS_ADD: usize = 4;
const POOLS_SET: usize = 5;
const LEDGER: usize = 6;
const RESERVATIONS: usize = 7;
const MOVEMENTS: usize = 8;
const EVENTS: usize = 9;
const RULE_HISTORY: usize = 10;
const OUTBOX: usize = 11;
const OUTBOX_UPDATES: usize = 12;

/// A batch ready to send: the query text and, in order, the JSON array of
/// rows of each kind it holds, one parameter per statement.
///
/// Each statement takes its rows as an anonymous `?`: sqlx binds those in
/// order across the statements of one query (numbered `?N` it does not
/// bind past the first statements).
pub struct Encoded {
    pub sql: &'static str,
    pub rows: Vec<String>,
}

/// Rows of one kind: a JSON array (being written) of arrays of columns.
type Rows = Vec<u8>;

/// Appends one row (a tuple: a JSON array of its columns) to `rows`.
fn push(rows: &mut Rows, row: &impl serde::Serialize) -> Result<(), StoreError> {
    rows.push(if rows.is_empty() { b'[' } else { b',' });
    serde_json::to_writer(&mut *rows, row)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
}

/// A rule's key: channel (None only for a rule the database will refuse)
/// and SKU ('' for the channel default).
type RuleKey<'a> = (Option<&'a str>, &'a str);

/// Encodes `ops` (not empty); fails before any I/O on what cannot be
/// encoded.
pub fn encode(ops: &[Op], now_ms: i64) -> Result<Encoded, StoreError> {
    let mut kinds: [Rows; KINDS.len()] = Default::default();
    // The last put (Some) or delete (None) of each rule key, in first-seen order.
    let mut rules: Vec<(RuleKey<'_>, Option<&crate::domain::Rule>)> = Vec::new();
    let mut updates: Vec<&super::OutboxUpdate> = Vec::new();
    for op in ops {
        match op {
            Op::PoolDelta { .. } | Op::PoolSetOnHand { .. } => {}
            Op::Warehouse(w) => push(&mut kinds[WAREHOUSES], &(w.code.as_str(), &w.name))?,
            Op::Channel(c) => push(&mut kinds[CHANNELS], &(c.code.as_str(), &c.name))?,
            Op::PutRule(rule) => {
                let key = (
                    rule.channel.as_ref().map(ChannelCode::as_str),
                    rule.sku.as_ref().map_or("", Sku::as_str),
                );
                last_by_key(&mut rules, key, Some(rule));
            }
            Op::DeleteRule { channel, sku } => {
                let key = (Some(channel.as_str()), sku.as_ref().map_or("", Sku::as_str));
                last_by_key(&mut rules, key, None);
            }
            Op::Ledger(e) => push(
                &mut kinds[LEDGER],
                &(
                    e.at_ms,
                    e.sku.as_str(),
                    e.warehouse.as_str(),
                    e.kind.as_str(),
                    e.on_hand_delta,
                    e.reserved_delta,
                    e.on_hand_after,
                    e.reserved_after,
                    &e.reason,
                    &e.reference,
                ),
            )?,
            Op::Reservation(r) => push(
                &mut kinds[RESERVATIONS],
                &(
                    r.channel.as_str(),
                    r.order_id.as_str(),
                    &r.id,
                    r.status.as_str(),
                    r.created_at_ms,
                    r.expires_at_ms,
                    to_json(&r.lines)?,
                    to_json(&r.allocations)?,
                    to_json(&r.shipments)?,
                    to_json(&r.refunds)?,
                    r.terms.currency.as_ref().map_or("", |c| c.as_str()),
                    r.terms.customer_ref.as_ref().map_or("", |c| c.as_str()),
                    r.terms.prices_include_tax,
                    to_json(&r.terms.unit_prices)?,
                ),
            )?,
            Op::Movement(m) => push(&mut kinds[MOVEMENTS], &(&m.movement_id, &m.fingerprint))?,
            Op::ChannelEvents(events) => {
                for e in events {
                    let seq = i64::try_from(e.seq)
                        .map_err(|_| super::sqlite::corrupt("channel event", "seq", e.seq))?;
                    push(
                        &mut kinds[EVENTS],
                        &(
                            e.channel.as_str(),
                            seq,
                            e.sku.as_str(),
                            e.published,
                            e.atp,
                            e.at_ms,
                            e.open,
                        ),
                    )?;
                }
            }
            Op::RuleChange(c) => push(
                &mut kinds[RULE_HISTORY],
                &(
                    c.at_ms,
                    &c.changed_by,
                    &c.comment,
                    c.channel.as_str(),
                    c.sku.as_ref().map_or("", Sku::as_str),
                    c.before.as_ref().map(to_json).transpose()?,
                    c.after.as_ref().map(to_json).transpose()?,
                ),
            )?,
            Op::Outbox(e) => push(
                &mut kinds[OUTBOX],
                &(
                    e.at_ms,
                    &e.reservation_id,
                    e.channel.as_str(),
                    e.order_id.as_str(),
                    e.event.as_str(),
                    to_json(&e.lines)?,
                    to_json(&e.terms)?,
                ),
            )?,
            Op::OutboxUpdate(u) => match updates.iter_mut().find(|v| v.id == u.id) {
                Some(v) => *v = u,
                None => updates.push(u),
            },
        }
    }
    for ((channel, sku), put) in rules {
        match put {
            Some(rule) => push(
                &mut kinds[RULES_PUT],
                &(
                    channel,
                    sku,
                    rule.warehouses
                        .iter()
                        .map(WarehouseCode::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    rule.fence,
                    rule.share_percent,
                    rule.buffer,
                    rule.max_published,
                    rule.min_published,
                    now_ms,
                ),
            )?,
            None => push(&mut kinds[RULES_DELETE], &(channel, sku))?,
        }
    }
    for ((sku, warehouse), f) in fold_pools(ops) {
        let kind = if f.set.is_some() {
            POOLS_SET
        } else {
            POOLS_ADD
        };
        push(
            &mut kinds[kind],
            &(sku, warehouse, f.on_hand_value(), f.reserved, f.bumps),
        )?;
    }
    for u in updates {
        push(
            &mut kinds[OUTBOX_UPDATES],
            &(
                u.id,
                u.state.as_str(),
                u.attempts,
                &u.last_error,
                u.next_attempt_at_ms,
                u.at_ms,
            ),
        )?;
    }

    let mut present = 0u16;
    let mut rows = Vec::new();
    for (i, mut kind) in kinds.into_iter().enumerate() {
        if !kind.is_empty() {
            present |= 1 << i;
            kind.push(b']');
            rows.push(String::from_utf8(kind).expect("serde_json writes UTF-8"));
        }
    }
    Ok(Encoded {
        sql: query_text(present),
        rows,
    })
}

/// Keeps the last value per key, keys in first-seen order. Rules in a batch
/// are few: a scan is cheaper than a map.
fn last_by_key<K: PartialEq, V>(list: &mut Vec<(K, V)>, key: K, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => *v = value,
        None => list.push((key, value)),
    }
}

/// The query for a batch holding the kinds in `present` (bit i: `KINDS[i]`),
/// built once per combination and kept for the life of the process (at most
/// 2^13 of them; a handful in practice).
fn query_text(present: u16) -> &'static str {
    static TEXTS: OnceLock<Mutex<HashMap<u16, &'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    texts.entry(present).or_insert_with(|| {
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        for (i, statement) in KINDS.iter().enumerate() {
            if present & (1 << i) != 0 {
                let _ = writeln!(sql, "{};", statement.replace("{}", "?"));
            }
        }
        sql.push_str("COMMIT;");
        Box::leak(sql.into_boxed_str())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::fixtures::*;
    use crate::domain::Status;

    fn reserve(n: i64) -> Vec<Op> {
        let r = reservation_with(Status::Confirmed);
        vec![
            Op::PoolDelta {
                sku: Sku::parse("HOT").unwrap(),
                warehouse: WarehouseCode::parse("WH-EAST").unwrap(),
                on_hand: 0,
                reserved: n,
            },
            Op::Reservation(Arc::new(r)),
        ]
    }

    #[test]
    fn a_hot_pool_is_one_row_of_one_statement_per_batch() {
        let ops: Vec<Op> = (1..=32).flat_map(reserve).collect();
        let batch = encode(&ops, 1).unwrap();
        assert_eq!(batch.sql.matches("INSERT INTO pools").count(), 1);
        let pools: serde_json::Value = serde_json::from_str(&batch.rows[0]).unwrap();
        assert_eq!(
            pools,
            serde_json::json!([["HOT", "WH-EAST", 0, 528, 32]]),
            "32 deltas summed, 32 version bumps"
        );
        let reservations: serde_json::Value = serde_json::from_str(&batch.rows[1]).unwrap();
        assert_eq!(reservations.as_array().unwrap().len(), 32);
    }

    #[test]
    fn the_query_depends_only_on_the_kinds_of_row_in_the_batch() {
        let one = encode(&reserve(1), 1).unwrap();
        let many = encode(&(1..=100).flat_map(reserve).collect::<Vec<_>>(), 1).unwrap();
        assert!(
            std::ptr::eq(one.sql, many.sql),
            "the same text, prepared once"
        );
        assert!(one.sql.starts_with("BEGIN IMMEDIATE;") && one.sql.ends_with("COMMIT;"));
    }
}
