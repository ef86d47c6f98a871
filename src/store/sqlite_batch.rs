//! A SQLite commit as one hand-off: the whole batch goes to sqlx's SQLite
//! worker thread as one multi-statement query, `BEGIN IMMEDIATE` to
//! `COMMIT`, with one statement per kind of row and chunk of rows, each
//! taking its rows as plain bound values: `WITH r(i, ...) AS (VALUES (?, ...),
//! ...)` (what `UNNEST` is to the Postgres store).
//!
//! sqlx hands every statement to its worker thread and waits for the
//! answer; one statement per op cost about 45 µs of wake-ups each, a
//! 32-order batch about 100 of them. Here a batch of any size is one round
//! trip. The rows used to go in as one JSON array per kind, through
//! `json_each`: SQLite then turned each row back into JSON text and parsed
//! it again for every column it read, about a tenth of the server's CPU
//! under a flash sale.
//!
//! A statement's text fixes its number of rows, and sqlx prepares and caches
//! a query by its whole text. So that the texts stay few, every chunk of a
//! batch has the same capacity, the smallest of [`CAPACITIES`] that holds
//! the batch's largest kind (64 past it, in as many chunks as it takes), and
//! a chunk's unused rows are bound to NULL, their ordinal `i` included,
//! which the statement skips. The text then depends only on which kinds the
//! batch holds, that capacity, and the chunks per kind.
//!
//! The kinds that only insert say `OR ROLLBACK`: a constraint they break
//! ends the whole transaction at once, as the commit's failure would anyway,
//! so SQLite keeps no statement journal of the pages they change (for a
//! batch over many SKUs, a copy of most pages it touches). The upserts
//! keep one: SQLite aborts their `DO UPDATE` statement by statement.
//!
//! Within a kind, rows keep their op order (`ORDER BY i`: ledger and
//! rule-history ids, the outbox's push order, the last state of a
//! reservation). Pools are folded first ([`fold_pools`]): a hot SKU is one
//! row per batch. Rules are folded to their last put or delete per key,
//! outbox updates to their last standing per entry: each of those ops sets
//! the whole row, so the last one is the outcome of all of them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use super::fold::fold_pools;
use super::sqlite::to_json;
use super::{Op, StoreError};
use crate::domain::{ChannelCode, Sku, WarehouseCode};

/// One kind of row: the columns of its rows (after the ordinal `i`, 0 for
/// a chunk's first row, NULL for an unused one) and its statement over
/// them, reading the CTE `r`.
struct Kind {
    columns: &'static [&'static str],
    statement: &'static str,
}

/// Listed in the order they run.
const KINDS: [Kind; 13] = [
    // Warehouses and channels: a new one goes after every existing one, in
    // batch order; a rename keeps its place.
    Kind {
        columns: &["code", "name"],
        statement: "INSERT INTO warehouses (code, name, position) \
            SELECT code, name, (SELECT COALESCE(MAX(position), 0) FROM warehouses) + i + 1 \
            FROM r WHERE i IS NOT NULL ORDER BY i \
            ON CONFLICT (code) DO UPDATE SET name = excluded.name",
    },
    Kind {
        columns: &["code", "name"],
        statement: "INSERT INTO channels (code, name, position) \
            SELECT code, name, (SELECT COALESCE(MAX(position), 0) FROM channels) + i + 1 \
            FROM r WHERE i IS NOT NULL ORDER BY i \
            ON CONFLICT (code) DO UPDATE SET name = excluded.name",
    },
    // A rule without a channel carries null: the NOT NULL constraint refuses
    // it, naming the column.
    Kind {
        columns: &[
            "channel",
            "sku",
            "warehouses",
            "fence",
            "share_percent",
            "buffer",
            "max_published",
            "min_published",
            "updated_at_ms",
        ],
        statement: "INSERT INTO rules (channel, sku, warehouses, fence, share_percent, buffer, \
                max_published, min_published, updated_at_ms) \
            SELECT channel, sku, warehouses, fence, share_percent, buffer, max_published, \
                min_published, updated_at_ms \
            FROM r WHERE i IS NOT NULL ORDER BY i \
            ON CONFLICT (channel, sku) DO UPDATE SET \
                warehouses = excluded.warehouses, \
                fence = excluded.fence, \
                share_percent = excluded.share_percent, \
                buffer = excluded.buffer, \
                max_published = excluded.max_published, \
                min_published = excluded.min_published, \
                updated_at_ms = excluded.updated_at_ms",
    },
    Kind {
        columns: &["channel", "sku"],
        statement: "DELETE FROM rules WHERE (channel, sku) IN \
            (SELECT channel, sku FROM r WHERE i IS NOT NULL)",
    },
    // Pools that only saw deltas: a new pool starts at zero, so the same
    // values serve the insert and the update.
    Kind {
        columns: &["sku", "warehouse", "on_hand", "reserved", "version"],
        statement: "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
            SELECT sku, warehouse, on_hand, reserved, version FROM r WHERE i IS NOT NULL \
            ON CONFLICT (sku, warehouse) DO UPDATE SET \
                on_hand = on_hand + excluded.on_hand, \
                reserved = reserved + excluded.reserved, \
                version = version + excluded.version",
    },
    // Pools counted in the batch: on_hand is the last count plus the deltas
    // after it; reserved still adds up.
    Kind {
        columns: &["sku", "warehouse", "on_hand", "reserved", "version"],
        statement: "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
            SELECT sku, warehouse, on_hand, reserved, version FROM r WHERE i IS NOT NULL \
            ON CONFLICT (sku, warehouse) DO UPDATE SET \
                on_hand = excluded.on_hand, \
                reserved = reserved + excluded.reserved, \
                version = version + excluded.version",
    },
    Kind {
        columns: &[
            "at_ms",
            "sku",
            "warehouse",
            "kind",
            "on_hand_delta",
            "reserved_delta",
            "on_hand_after",
            "reserved_after",
            "reason",
            "reference",
        ],
        statement: "INSERT OR ROLLBACK INTO ledger (at_ms, sku, warehouse, kind, on_hand_delta, \
                reserved_delta, on_hand_after, reserved_after, reason, reference) \
            SELECT at_ms, sku, warehouse, kind, on_hand_delta, reserved_delta, on_hand_after, \
                reserved_after, reason, reference \
            FROM r WHERE i IS NOT NULL ORDER BY i",
    },
    // Rows are upserted one after another: a reservation written twice keeps
    // its last state.
    Kind {
        columns: &[
            "channel",
            "order_id",
            "id",
            "status",
            "created_at_ms",
            "expires_at_ms",
            "lines_json",
            "allocations_json",
            "shipments_json",
            "refunds_json",
            "currency",
            "customer_ref",
            "prices_include_tax",
            "unit_prices_json",
        ],
        statement: "INSERT INTO reservations (channel, order_id, id, status, created_at_ms, \
                expires_at_ms, lines_json, allocations_json, shipments_json, refunds_json, \
                currency, customer_ref, prices_include_tax, unit_prices_json) \
            SELECT channel, order_id, id, status, created_at_ms, expires_at_ms, lines_json, \
                allocations_json, shipments_json, refunds_json, currency, customer_ref, \
                prices_include_tax, unit_prices_json \
            FROM r WHERE i IS NOT NULL ORDER BY i \
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
    },
    // A duplicate id fails this statement, and with it the commit.
    Kind {
        columns: &["movement_id", "fingerprint"],
        statement: "INSERT OR ROLLBACK INTO movements (movement_id, fingerprint) \
            SELECT movement_id, fingerprint FROM r WHERE i IS NOT NULL ORDER BY i",
    },
    Kind {
        columns: &["channel", "seq", "sku", "published", "atp", "at_ms", "open"],
        statement: "INSERT OR ROLLBACK INTO channel_events (channel, seq, sku, published, atp, at_ms, open) \
            SELECT channel, seq, sku, published, atp, at_ms, open \
            FROM r WHERE i IS NOT NULL ORDER BY i",
    },
    Kind {
        columns: &[
            "at_ms",
            "changed_by",
            "comment",
            "channel",
            "sku",
            "before_json",
            "after_json",
        ],
        statement: "INSERT OR ROLLBACK INTO rule_history (at_ms, changed_by, comment, channel, sku, \
                before_json, after_json) \
            SELECT at_ms, changed_by, comment, channel, sku, before_json, after_json \
            FROM r WHERE i IS NOT NULL ORDER BY i",
    },
    Kind {
        columns: &[
            "at_ms",
            "reservation_id",
            "channel",
            "order_id",
            "event",
            "lines_json",
            "terms_json",
        ],
        statement: "INSERT OR ROLLBACK INTO outbox (created_at_ms, reservation_id, channel, order_id, event, \
                lines_json, next_attempt_at_ms, updated_at_ms, terms_json) \
            SELECT at_ms, reservation_id, channel, order_id, event, lines_json, at_ms, at_ms, \
                terms_json \
            FROM r WHERE i IS NOT NULL ORDER BY i",
    },
    Kind {
        columns: &[
            "id",
            "state",
            "attempts",
            "last_error",
            "next_attempt_at_ms",
            "at_ms",
        ],
        statement: "UPDATE outbox SET state = r.state, attempts = r.attempts, \
                last_error = r.last_error, next_attempt_at_ms = r.next_attempt_at_ms, \
                updated_at_ms = r.at_ms \
            FROM r WHERE r.i IS NOT NULL AND outbox.id = r.id",
    },
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

/// Rows per chunk a batch may use: a lone order is not padded to 64 rows,
/// and a busy batch is not split into many small statements.
pub const CAPACITIES: [usize; 3] = [4, 16, 64];

/// Query texts kept for the life of the process; a batch of another shape
/// (an import of thousands of rows, say) is sent unprepared.
const KEPT_TEXTS: usize = 256;

/// One bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    Null,
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Param<'_> {
    fn from(v: String) -> Self {
        Param::Text(Cow::Owned(v))
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// A batch ready to send: the query text and its values, in the order of
/// its `?`s across its statements (sqlx binds anonymous `?`s in order across
/// the statements of one query; numbered `?N` it does not bind past the
/// first statement).
pub struct Encoded<'a> {
    pub sql: Cow<'static, str>,
    pub params: Vec<Param<'a>>,
    /// Whether the text is one of the few kept, and worth preparing once.
    pub persistent: bool,
}

/// The rows of each kind, their columns one after another.
struct Rows<'a>([Vec<Param<'a>>; KINDS.len()]);

impl<'a> Rows<'a> {
    fn push<const N: usize>(&mut self, kind: usize, row: [Param<'a>; N]) {
        debug_assert_eq!(N, KINDS[kind].columns.len());
        self.0[kind].extend(row);
    }

    fn len(&self, kind: usize) -> usize {
        self.0[kind].len() / KINDS[kind].columns.len()
    }
}

/// A rule's key: channel (None only for a rule the database will refuse)
/// and SKU ('' for the channel default).
type RuleKey<'a> = (Option<&'a str>, &'a str);

/// Encodes `ops` (not empty); fails before any I/O on what cannot be
/// encoded.
pub fn encode(ops: &[Op], now_ms: i64) -> Result<Encoded<'_>, StoreError> {
    let mut rows = Rows(Default::default());
    // The last put (Some) or delete (None) of each rule key, in first-seen order.
    let mut rules: Vec<(RuleKey<'_>, Option<&crate::domain::Rule>)> = Vec::new();
    let mut updates: Vec<&super::OutboxUpdate> = Vec::new();
    for op in ops {
        match op {
            Op::PoolDelta { .. } | Op::PoolSetOnHand { .. } => {}
            Op::Warehouse(w) => rows.push(WAREHOUSES, [w.code.as_str().into(), (&w.name).into()]),
            Op::Channel(c) => rows.push(CHANNELS, [c.code.as_str().into(), (&c.name).into()]),
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
            Op::Ledger(e) => rows.push(
                LEDGER,
                [
                    e.at_ms.into(),
                    e.sku.as_str().into(),
                    e.warehouse.as_str().into(),
                    e.kind.as_str().into(),
                    e.on_hand_delta.into(),
                    e.reserved_delta.into(),
                    e.on_hand_after.into(),
                    e.reserved_after.into(),
                    (&e.reason).into(),
                    (&e.reference).into(),
                ],
            ),
            Op::Reservation(r) => rows.push(
                RESERVATIONS,
                [
                    r.channel.as_str().into(),
                    r.order_id.as_str().into(),
                    (&r.id).into(),
                    r.status.as_str().into(),
                    r.created_at_ms.into(),
                    r.expires_at_ms.into(),
                    to_json(&r.lines)?.into(),
                    to_json(&r.allocations)?.into(),
                    to_json(&r.shipments)?.into(),
                    to_json(&r.refunds)?.into(),
                    r.terms.currency.as_ref().map_or("", |c| c.as_str()).into(),
                    r.terms
                        .customer_ref
                        .as_ref()
                        .map_or("", |c| c.as_str())
                        .into(),
                    r.terms.prices_include_tax.into(),
                    to_json(&r.terms.unit_prices)?.into(),
                ],
            ),
            Op::Movement(m) => rows.push(
                MOVEMENTS,
                [(&m.movement_id).into(), (&m.fingerprint).into()],
            ),
            Op::ChannelEvents(events) => {
                for e in events {
                    let seq = i64::try_from(e.seq)
                        .map_err(|_| super::sqlite::corrupt("channel event", "seq", e.seq))?;
                    rows.push(
                        EVENTS,
                        [
                            e.channel.as_str().into(),
                            seq.into(),
                            e.sku.as_str().into(),
                            e.published.into(),
                            e.atp.into(),
                            e.at_ms.into(),
                            e.open.into(),
                        ],
                    );
                }
            }
            Op::RuleChange(c) => rows.push(
                RULE_HISTORY,
                [
                    c.at_ms.into(),
                    (&c.changed_by).into(),
                    (&c.comment).into(),
                    c.channel.as_str().into(),
                    c.sku.as_ref().map_or("", Sku::as_str).into(),
                    c.before.as_ref().map(to_json).transpose()?.into(),
                    c.after.as_ref().map(to_json).transpose()?.into(),
                ],
            ),
            Op::Outbox(e) => rows.push(
                OUTBOX,
                [
                    e.at_ms.into(),
                    (&e.reservation_id).into(),
                    e.channel.as_str().into(),
                    e.order_id.as_str().into(),
                    e.event.as_str().into(),
                    to_json(&e.lines)?.into(),
                    to_json(&e.terms)?.into(),
                ],
            ),
            Op::OutboxUpdate(u) => match updates.iter_mut().find(|v| v.id == u.id) {
                Some(v) => *v = u,
                None => updates.push(u),
            },
        }
    }
    for ((channel, sku), put) in rules {
        match put {
            Some(rule) => rows.push(
                RULES_PUT,
                [
                    channel.into(),
                    sku.into(),
                    rule.warehouses
                        .iter()
                        .map(WarehouseCode::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                        .into(),
                    rule.fence.into(),
                    rule.share_percent.into(),
                    rule.buffer.into(),
                    rule.max_published.into(),
                    rule.min_published.into(),
                    now_ms.into(),
                ],
            ),
            None => rows.push(RULES_DELETE, [channel.into(), sku.into()]),
        }
    }
    for ((sku, warehouse), f) in fold_pools(ops) {
        let kind = if f.set.is_some() {
            POOLS_SET
        } else {
            POOLS_ADD
        };
        rows.push(
            kind,
            [
                sku.into(),
                warehouse.into(),
                f.on_hand_value().into(),
                f.reserved.into(),
                f.bumps.into(),
            ],
        );
    }
    for u in updates {
        rows.push(
            OUTBOX_UPDATES,
            [
                u.id.into(),
                u.state.as_str().into(),
                u.attempts.into(),
                (&u.last_error).into(),
                u.next_attempt_at_ms.into(),
                u.at_ms.into(),
            ],
        );
    }
    Ok(assemble(rows))
}

/// Lays the rows out in chunks of one capacity and finds the query text
/// for that shape.
fn assemble(rows: Rows<'_>) -> Encoded<'_> {
    let largest = (0..KINDS.len()).map(|k| rows.len(k)).max().unwrap_or(0);
    let capacity = CAPACITIES
        .into_iter()
        .find(|&c| largest <= c)
        .unwrap_or(CAPACITIES[CAPACITIES.len() - 1]);
    let mut shape = Shape {
        capacity,
        chunks: [0; KINDS.len()],
    };
    let total: usize = (0..KINDS.len())
        .map(|k| {
            let chunks = rows.len(k).div_ceil(capacity);
            shape.chunks[k] = chunks;
            chunks * capacity * (KINDS[k].columns.len() + 1)
        })
        .sum();
    let mut params = Vec::with_capacity(total);
    for (kind, values) in rows.0.into_iter().enumerate() {
        let width = KINDS[kind].columns.len();
        let mut values = values.into_iter();
        for _ in 0..shape.chunks[kind] {
            for i in 0..capacity {
                if values.len() == 0 {
                    params.extend(std::iter::repeat_n(Param::Null, width + 1));
                } else {
                    params.push(Param::Int(i as i64));
                    params.extend(values.by_ref().take(width));
                }
            }
        }
    }
    let (sql, persistent) = query_text(&shape);
    Encoded {
        sql,
        params,
        persistent,
    }
}

/// What a batch's query text depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    /// Rows per chunk.
    capacity: usize,
    /// Chunks of each kind (0: the kind is not in the batch).
    chunks: [usize; KINDS.len()],
}

/// Keeps the last value per key, keys in first-seen order. Rules in a batch
/// are few: a scan is cheaper than a map.
fn last_by_key<K: PartialEq, V>(list: &mut Vec<(K, V)>, key: K, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => *v = value,
        None => list.push((key, value)),
    }
}

/// The query for a batch of `shape`, and whether it is kept: built once per
/// shape for the first [`KEPT_TEXTS`] shapes and kept for the life of the
/// process (a handful in practice), built each time for the others.
fn query_text(shape: &Shape) -> (Cow<'static, str>, bool) {
    static TEXTS: OnceLock<Mutex<HashMap<Shape, &'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(text) = texts.get(shape) {
        return (Cow::Borrowed(text), true);
    }
    let text = build_text(shape);
    if texts.len() >= KEPT_TEXTS {
        return (Cow::Owned(text), false);
    }
    let text: &'static str = Box::leak(text.into_boxed_str());
    texts.insert(shape.clone(), text);
    (Cow::Borrowed(text), true)
}

fn build_text(shape: &Shape) -> String {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for (kind, &chunks) in KINDS.iter().zip(&shape.chunks) {
        if chunks == 0 {
            continue;
        }
        let mut row = String::from("(?");
        for _ in kind.columns {
            row.push_str(", ?");
        }
        row.push(')');
        let mut statement = format!("WITH r(i, {}) AS (VALUES ", kind.columns.join(", "));
        for i in 0..shape.capacity {
            if i > 0 {
                statement.push_str(", ");
            }
            statement.push_str(&row);
        }
        let _ = write!(statement, ") {};", kind.statement);
        for _ in 0..chunks {
            sql.push_str(&statement);
            sql.push('\n');
        }
    }
    sql.push_str("COMMIT;");
    sql
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

    /// The real rows of one kind's chunks: each row's values after its
    /// ordinal, the unused rows left out.
    fn rows_of<'a, 'b>(
        batch: &'a Encoded<'b>,
        skip: usize,
        width: usize,
        chunks: usize,
        capacity: usize,
    ) -> Vec<&'a [Param<'b>]> {
        batch.params[skip..skip + chunks * capacity * (width + 1)]
            .chunks(width + 1)
            .filter(|row| row[0] != Param::Null)
            .map(|row| &row[1..])
            .collect()
    }

    #[test]
    fn a_hot_pool_is_one_row_of_one_statement_per_batch() {
        let ops: Vec<Op> = (1..=32).flat_map(reserve).collect();
        let batch = encode(&ops, 1).unwrap();
        assert_eq!(batch.sql.matches("INSERT INTO pools").count(), 1);
        let pools = rows_of(&batch, 0, 5, 1, 64);
        assert_eq!(
            pools,
            vec![
                &[
                    Param::from("HOT"),
                    Param::from("WH-EAST"),
                    Param::Int(0),
                    Param::Int(528),
                    Param::Int(32)
                ][..]
            ],
            "32 deltas summed, 32 version bumps"
        );
        let reservations = rows_of(&batch, 64 * 6, 14, 1, 64);
        assert_eq!(reservations.len(), 32);
        assert_eq!(
            batch.params.len(),
            64 * 6 + 64 * 15,
            "nothing else is bound"
        );
    }

    #[test]
    fn a_chunks_rows_are_numbered_from_zero_and_its_unused_rows_are_all_null() {
        let ops: Vec<Op> = (1..=3).flat_map(reserve).collect();
        let batch = encode(&ops, 1).unwrap();
        let reservations = &batch.params[4 * 6..];
        assert_eq!(reservations.len(), 4 * 15, "3 orders in a chunk of 4");
        let ordinals: Vec<&Param> = reservations.iter().step_by(15).collect();
        assert_eq!(
            ordinals,
            [&Param::Int(0), &Param::Int(1), &Param::Int(2), &Param::Null]
        );
        assert!(reservations[45..].iter().all(|p| *p == Param::Null));
    }

    #[test]
    fn the_query_depends_only_on_the_shape_of_the_batch() {
        let batch = |orders: i64| encode_owned(&(1..=orders).flat_map(reserve).collect::<Vec<_>>());
        let (one, three) = (batch(1), batch(3));
        assert!(
            std::ptr::eq(one.0, three.0),
            "1 and 3 orders: chunks of 4, one text"
        );
        let (forty, sixty) = (batch(40), batch(60));
        assert!(
            std::ptr::eq(forty.0, sixty.0),
            "40 and 60 orders: chunks of 64"
        );
        assert!(!std::ptr::eq(one.0, forty.0));
        assert!(one.1 && forty.1, "both kept, prepared once");
        assert!(one.0.starts_with("BEGIN IMMEDIATE;") && one.0.ends_with("COMMIT;"));
    }

    #[test]
    fn a_kind_larger_than_the_largest_chunk_takes_as_many_chunks_as_it_needs() {
        let ops: Vec<Op> = (1..=150).flat_map(reserve).collect();
        let batch = encode(&ops, 1).unwrap();
        assert_eq!(batch.sql.matches("INSERT INTO reservations").count(), 3);
        assert_eq!(batch.sql.matches("INSERT INTO pools").count(), 1);
        let reservations = rows_of(&batch, 64 * 6, 14, 3, 64);
        assert_eq!(reservations.len(), 150);
        assert_eq!(batch.sql.matches('?').count(), batch.params.len());
    }

    /// The batch's text as kept, and whether it is.
    fn encode_owned(ops: &[Op]) -> (&'static str, bool) {
        let batch = encode(ops, 1).unwrap();
        match batch.sql {
            Cow::Borrowed(text) => (text, batch.persistent),
            Cow::Owned(_) => panic!("a batch of a common shape is kept"),
        }
    }
}
