//! How the client shows answers to a person: aligned plain-text tables,
//! UTC timestamps, and gRPC status codes by their proto names.

use crate::api::pb;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: a header row, then rows, columns separated by two
/// spaces, numbers right-aligned.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([h.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn render(&self, cells: &[String], widths: &[usize]) -> String {
        let mut out = String::new();
        for (i, ((_, align), cell)) in self.columns.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match align {
                Align::Left => {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
        }
        out.trim_end().to_string()
    }

    /// The header line, then one line per row.
    pub fn lines(&self) -> Vec<String> {
        let widths = self.widths();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        std::iter::once(self.render(&header, &widths))
            .chain(self.rows.iter().map(|r| self.render(r, &widths)))
            .collect()
    }

    pub fn print(&self) {
        for line in self.lines() {
            crate::out!("{line}");
        }
    }
}

/// A gRPC code as the proto spells it: `FAILED_PRECONDITION`.
pub use crate::api::error::code_name;

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn fmt_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A reservation status by name.
pub fn status_name(status: i32) -> &'static str {
    pb::ReservationStatus::try_from(status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN_STATUS")
}

/// What a reservation holds, one row per SKU and warehouse.
pub fn allocations_table(allocations: &[pb::Allocation]) -> Table {
    use Align::*;
    let priced = allocations.iter().any(|a| !a.unit_price.is_empty());
    let mut columns = vec![
        ("SKU", Left),
        ("WAREHOUSE", Left),
        ("QUANTITY", Right),
        ("OPEN", Right),
        ("FULFILLED", Right),
        ("RELEASED", Right),
        ("RESTOCKED", Right),
    ];
    if priced {
        columns.push(("UNIT PRICE", Right));
    }
    let mut t = Table::new(&columns);
    for a in allocations {
        let mut row = vec![
            a.sku.clone(),
            a.warehouse.clone(),
            a.quantity.to_string(),
            (a.quantity - a.fulfilled - a.released).to_string(),
            a.fulfilled.to_string(),
            a.released.to_string(),
            a.restocked.to_string(),
        ];
        if priced {
            row.push(a.unit_price.clone());
        }
        t.row(row);
    }
    t
}

/// A reservation's header lines (id, order, status, times) and its
/// allocations; `replayed` adds the replay line (Reserve only).
pub fn reservation_lines(r: &pb::Reservation, replayed: Option<bool>, now_ms: i64) -> Vec<String> {
    let mut out = vec![
        format!("reservation  {}", r.id),
        format!("order        {}/{}", r.channel, r.order_id),
        format!("status       {}", status_name(r.status)),
        format!("created      {}", fmt_utc(r.created_at_ms)),
    ];
    if r.expires_at_ms > 0 {
        let left = (r.expires_at_ms - now_ms).div_euclid(1000);
        let when = if left >= 0 {
            format!("in {left} s")
        } else {
            format!("{} s ago", -left)
        };
        out.push(format!(
            "expires      {} ({when})",
            fmt_utc(r.expires_at_ms)
        ));
    }
    if !r.currency.is_empty() {
        let tax = if r.prices_include_tax {
            "prices include tax"
        } else {
            "prices before tax"
        };
        out.push(format!("currency     {} ({tax})", r.currency));
    }
    if !r.customer_ref.is_empty() {
        out.push(format!("customer     {}", r.customer_ref));
    }
    if let Some(replayed) = replayed {
        out.push(format!(
            "replayed     {}",
            if replayed {
                "yes (this order was already reserved with these lines; nothing changed)"
            } else {
                "no"
            }
        ));
    }
    out.push(String::new());
    out.extend(allocations_table(&r.allocations).lines());
    out
}

pub fn print_reservation(r: &pb::Reservation, replayed: Option<bool>) {
    for line in reservation_lines(r, replayed, now_ms()) {
        crate::out!("{line}");
    }
}

/// Stock levels: sku, warehouse, on_hand, reserved, free, version, and a
/// shortfall column when some level has one.
pub fn stock_table(levels: &[pb::StockLevel]) -> Table {
    use Align::*;
    let short = levels.iter().any(|l| l.shortfall > 0);
    let mut cols = vec![
        ("SKU", Left),
        ("WAREHOUSE", Left),
        ("ON_HAND", Right),
        ("RESERVED", Right),
        ("FREE", Right),
        ("VERSION", Right),
    ];
    if short {
        cols.push(("SHORTFALL", Right));
    }
    let mut t = Table::new(&cols);
    for l in levels {
        let mut row = vec![
            l.sku.clone(),
            l.warehouse.clone(),
            l.on_hand.to_string(),
            l.reserved.to_string(),
            l.free.to_string(),
            l.version.to_string(),
        ];
        if short {
            row.push(if l.shortfall > 0 {
                l.shortfall.to_string()
            } else {
                String::new()
            });
        }
        t.row(row);
    }
    t
}

/// Availability rows, each followed (with `explain`) by its formula steps,
/// indented.
pub fn availability_lines(items: &[pb::ChannelAvailability], explain: bool) -> Vec<String> {
    use Align::*;
    let mut t = Table::new(&[
        ("SKU", Left),
        ("CHANNEL", Left),
        ("ATP", Right),
        ("PUBLISHED", Right),
    ]);
    // No header (it is not printed), so it does not widen the columns.
    let mut steps = Table::new(&[("", Left), ("", Right), ("", Left)]);
    for item in items {
        t.row(vec![
            item.sku.clone(),
            item.channel.clone(),
            item.atp.to_string(),
            item.published.to_string(),
        ]);
        for s in &item.explain {
            steps.row(vec![s.step.clone(), s.value.to_string(), s.detail.clone()]);
        }
    }
    let main = t.lines();
    if !explain {
        return main;
    }
    // Every step table shares one set of widths, so the blocks line up.
    let step_lines = steps.lines();
    let mut out = vec![main[0].clone()];
    let mut next = 1;
    for (item, line) in items.iter().zip(&main[1..]) {
        out.push(line.clone());
        for s in &step_lines[next..next + item.explain.len()] {
            out.push(format!("    {s}"));
        }
        next += item.explain.len();
        out.push(String::new());
    }
    out.pop();
    out
}

/// What a simulated rule change would move, before -> after.
/// One reservation as a row of `reservations list`.
pub fn reservation_row(r: &pb::Reservation) -> Vec<String> {
    vec![
        r.channel.clone(),
        r.order_id.clone(),
        status_name(r.status).to_string(),
        fmt_utc(r.created_at_ms),
        r.allocations
            .iter()
            .map(|a| format!("{}={}@{}", a.sku, a.quantity, a.warehouse))
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

/// The ledger table of `movements`.
pub fn movements_table() -> Table {
    Table::new(&[
        ("ID", Align::Right),
        ("AT", Align::Left),
        ("WAREHOUSE", Align::Left),
        ("KIND", Align::Left),
        ("ON_HAND", Align::Right),
        ("RESERVED", Align::Right),
        ("ON_HAND_AFTER", Align::Right),
        ("RESERVED_AFTER", Align::Right),
        ("REFERENCE", Align::Left),
        ("REASON", Align::Left),
    ])
}

/// One ledger line as a row of [`movements_table`].
pub fn movement_row(m: &pb::Movement) -> Vec<String> {
    vec![
        m.id.to_string(),
        fmt_utc(m.at_ms),
        m.warehouse.clone(),
        m.kind.clone(),
        format!("{:+}", m.on_hand_delta),
        format!("{:+}", m.reserved_delta),
        m.on_hand_after.to_string(),
        m.reserved_after.to_string(),
        m.reference.clone(),
        m.reason.clone(),
    ]
}

pub fn simulation_table(changes: &[pb::SimulatedChange]) -> Table {
    use Align::*;
    let mut t = Table::new(&[
        ("SKU", Left),
        ("CHANNEL", Left),
        ("ATP", Right),
        ("PUBLISHED", Right),
    ]);
    for c in changes {
        t.row(vec![
            c.sku.clone(),
            c.channel.clone(),
            format!("{} -> {}", c.atp_before, c.atp_after),
            format!("{} -> {}", c.published_before, c.published_after),
        ]);
    }
    t
}

/// Outbox entries, oldest first; the last error in full at the end of the row.
pub fn outbox_table(entries: &[pb::OutboxEntry]) -> Table {
    use Align::*;
    let mut t = Table::new(&[
        ("ID", Right),
        ("ORDER", Left),
        ("EVENT", Left),
        ("STATE", Left),
        ("ATTEMPTS", Right),
        ("CREATED", Left),
        ("LAST ERROR", Left),
    ]);
    for e in entries {
        let state = match pb::OutboxState::try_from(e.state) {
            Ok(pb::OutboxState::Pending) => "pending",
            Ok(pb::OutboxState::Pushed) => "pushed",
            Ok(pb::OutboxState::Dead) => "DEAD",
            _ => "?",
        };
        t.row(vec![
            e.id.to_string(),
            format!("{}/{}", e.channel, e.order_id),
            e.event.clone(),
            state.to_string(),
            e.attempts.to_string(),
            fmt_utc(e.created_at_ms),
            e.last_error.clone(),
        ]);
    }
    t
}

/// Rules: unset fields show `-` (inherited).
pub fn rules_table(rules: &[pb::Rule]) -> Table {
    use Align::*;
    let mut t = Table::new(&[
        ("CHANNEL", Left),
        ("SKU", Left),
        ("WAREHOUSES", Left),
        ("FENCE", Right),
        ("SHARE%", Right),
        ("BUFFER", Right),
        ("MAX", Right),
        ("MIN", Right),
    ]);
    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }
    for r in rules {
        t.row(vec![
            r.channel.clone(),
            if r.sku.is_empty() {
                "(default)".to_string()
            } else {
                r.sku.clone()
            },
            if r.warehouses.is_empty() {
                "-".to_string()
            } else {
                r.warehouses.join(",")
            },
            opt(r.fence),
            opt(r.share_percent),
            opt(r.buffer),
            opt(r.max_published),
            opt(r.min_published),
        ]);
    }
    t
}

/// Printed under a rules table.
pub const RULES_FOOTNOTE: &str = "-: not set. A SKU rule inherits the field from the channel's default rule;\n\
a default falls back to every warehouse in declared order, fence 0, share 100%, buffer 0, no max, no min.";

/// Prints one line of a client's answer. A closed stdout (`| head`) ends
/// the process quietly with status 0 instead of a panic: the reader has all
/// it wanted.
pub fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    closed_pipe_ends(written);
}

/// [`emit`] for raw bytes (no line end added).
pub fn emit_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    closed_pipe_ends(out.write_all(bytes).and_then(|()| out.flush()));
}

fn closed_pipe_ends(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// One JSON object on one line.
pub fn emit_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => emit(format_args!("{text}")),
        Err(e) => {
            eprintln!("error: cannot render JSON: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` that ends quietly on a closed pipe ([`emit`]).
#[macro_export]
macro_rules! out {
    () => { $crate::cli::output::emit(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::output::emit(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_table_pads_text_left_and_numbers_right_and_trims_line_ends() {
        let mut t = Table::new(&[
            ("SKU", Align::Left),
            ("FREE", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["TEE-BLK-M".into(), "5".into(), String::new()]);
        t.row(vec!["MUG".into(), "120".into(), "low".into()]);
        assert_eq!(
            t.lines(),
            vec![
                "SKU        FREE  NOTE",
                "TEE-BLK-M     5",
                "MUG         120  low",
            ]
        );
    }

    #[test]
    fn utc_timestamps_are_rendered_as_calendar_dates() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(fmt_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(-1_000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn status_codes_print_by_their_proto_names() {
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn a_shortfall_column_appears_only_when_some_level_has_one() {
        let level = |shortfall| pb::StockLevel {
            sku: "TEE".into(),
            warehouse: "WH-EAST".into(),
            on_hand: 3,
            reserved: 3 + shortfall,
            free: 0,
            version: 2,
            shortfall,
        };
        assert!(!stock_table(&[level(0)]).lines()[0].contains("SHORTFALL"));
        let lines = stock_table(&[level(0), level(4)]).lines();
        assert!(lines[0].ends_with("SHORTFALL"), "{lines:?}");
        assert!(lines[2].ends_with('4'), "{lines:?}");
    }

    #[test]
    fn explained_availability_puts_each_rows_steps_under_it() {
        let step = |s: &str, v: i64, d: &str| pb::ExplainStep {
            step: s.into(),
            value: v,
            detail: d.into(),
        };
        let items = vec![
            pb::ChannelAvailability {
                sku: "TEE".into(),
                channel: "amazon".into(),
                atp: 70,
                published: 37,
                explain: vec![step("atp", 70, ""), step("published", 37, "")],
            },
            pb::ChannelAvailability {
                sku: "TEE".into(),
                channel: "b2b".into(),
                atp: 120,
                published: 120,
                explain: vec![step("published", 120, "")],
            },
        ];
        assert_eq!(
            availability_lines(&items, true),
            vec![
                "SKU  CHANNEL  ATP  PUBLISHED",
                "TEE  amazon    70         37",
                "    atp         70",
                "    published   37",
                "",
                "TEE  b2b      120        120",
                "    published  120",
            ]
        );
        assert_eq!(availability_lines(&items, false).len(), 3);
    }

    #[test]
    fn a_held_reservation_shows_when_its_hold_ends_and_whether_it_was_replayed() {
        let r = pb::Reservation {
            id: "r-1".into(),
            channel: "shopify".into(),
            order_id: "#1001".into(),
            status: pb::ReservationStatus::Held as i32,
            allocations: vec![pb::Allocation {
                sku: "TEE".into(),
                warehouse: "WH-EAST".into(),
                quantity: 3,
                fulfilled: 1,
                released: 0,
                restocked: 0,
                ..Default::default()
            }],
            created_at_ms: 0,
            expires_at_ms: 900_000,
            ..Default::default()
        };
        let lines = reservation_lines(&r, Some(false), 300_000);
        assert_eq!(lines[2], "status       HELD");
        assert_eq!(lines[4], "expires      1970-01-01 00:15:00 UTC (in 600 s)");
        assert_eq!(lines[5], "replayed     no");
        assert_eq!(
            lines[8],
            "TEE  WH-EAST           3     2          1         0          0"
        );
    }
}
