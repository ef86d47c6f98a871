//! The command line: `stockpool serve` and the client subcommands that talk
//! to a running server over gRPC, each a thin call of one RPC whose answer
//! is printed as plain-text tables.
//!
//! - [`input`]: pure parsing of `--line SKU=QTY[@WAREHOUSE]` and stock files.
//! - [`output`]: tables and formatting.
//! - `client`: the connection ([`Conn`]: TLS, the bearer token), and one
//!   function per subcommand.
//! - [`bench`]: the load generator (`stockpool bench`).

pub mod bench;
pub(crate) mod client;
pub mod input;
pub mod output;

use std::path::PathBuf;

use crate::config::ServeArgs;
pub use client::Conn;
use input::LineArg;

/// stockpool: multi-channel inventory allocation.
#[derive(Debug, clap::Parser)]
#[command(name = "stockpool", version, about)]
pub struct Cli {
    /// Server to talk to (client subcommands). Several (comma-separated or
    /// repeated): the servers of one high-availability group; a call moves
    /// to the next when one answers as a standby or cannot be reached.
    #[arg(
        long,
        global = true,
        env = "STOCKPOOL_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: Vec<String>,
    /// With several --server addresses: how long, in seconds, a call keeps
    /// going round them while every one refuses it as a standby or cannot
    /// be reached (a failover in progress).
    #[arg(
        long,
        global = true,
        env = "STOCKPOOL_FAILOVER_WAIT",
        value_name = "SECONDS",
        default_value_t = 15
    )]
    pub failover_wait: u64,
    /// How client subcommands print: text tables, or JSON (one object per
    /// line for lists and streams, the proto field names).
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "text",
        env = "STOCKPOOL_OUTPUT"
    )]
    pub output: bench::Format,
    /// Seconds a call may take before it is given up (connecting included;
    /// for `watch`, until the stream starts). 0: no limit.
    #[arg(
        long,
        global = true,
        env = "STOCKPOOL_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    pub timeout: f64,
    /// Bearer token sent with every call (client subcommands).
    #[arg(long, global = true, env = "STOCKPOOL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate authorities to trust for an https://
    /// --server, instead of the public ones (a private CA, a self-signed
    /// certificate).
    #[arg(long, global = true, env = "STOCKPOOL_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Reserve stock for a channel's order (Reserve).
    ///
    /// Without --hold the reservation is CONFIRMED at once; with it, HELD
    /// until confirmed or until the hold runs out. Sending the same order
    /// again with the same lines returns the first answer (a replay).
    Reserve(ReserveArgs),
    /// Confirm a HELD reservation (Confirm).
    Confirm(OrderArgs),
    /// Give back an order's units: all open units, or the given lines (Release).
    Release(ReleaseArgs),
    /// Ship an order's units: all open units, or the given lines (Fulfill).
    Fulfill(FulfillArgs),
    /// Put returned units of a shipped order back on hand (Restock).
    ///
    /// Idempotent on --refund: the same refund sent twice restocks once, and
    /// an order line never gets back more than was shipped.
    Restock(RestockArgs),
    /// Show one reservation (GetReservation).
    Reservation(OrderArgs),
    /// Read and move stock.
    #[command(subcommand)]
    Stock(StockCommand),
    /// What each channel may sell: ATP and published figure (GetAvailability).
    Availability(AvailabilityArgs),
    /// List reservations (ListReservations), newest first.
    #[command(subcommand)]
    Reservations(ReservationsCommand),
    /// The ledger of a SKU: every movement of its pools, oldest first (ListMovements).
    Movements(MovementsArgs),
    /// Channel allocation rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Follow a channel's published levels as they change (WatchChannelStock).
    Watch(WatchArgs),
    /// The Odoo outbox: pushes of reservations to Odoo.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Drive a running server with load and report throughput and latency.
    ///
    /// Stocks its own SKUs (BENCH-...), then runs the hot, catalog or
    /// lifecycle workload, closed loop (--clients) or open loop (--rate),
    /// and prints throughput, latency percentiles, the server's commit
    /// batch sizes and the commit-to-watcher lag of a probe.
    Bench(bench::BenchArgs),
    /// Copy the SQLite store consistently, also while a server runs on it.
    ///
    /// Restore by copying FILE to DIR/stockpool.db before starting the
    /// server. On Postgres use pg_dump (see the README).
    Backup {
        /// The server's data directory (holding stockpool.db).
        #[arg(long, env = "STOCKPOOL_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Where to write the copy; must not exist yet.
        file: PathBuf,
    },
    /// Copy a SQLite store into an empty Postgres database: pools, ledger,
    /// reservations, movement ids, catalog, rules and their history,
    /// channel events and the Odoo outbox. Stop the server first.
    Migrate {
        /// sqlite://DIR: the data directory of the SQLite store.
        #[arg(long, value_name = "sqlite://DIR")]
        from: String,
        /// postgres://user@host/db: an empty database (its schema is created).
        #[arg(long, value_name = "postgres://...")]
        to: String,
    },
    /// Print a shell completion script: `stockpool completions bash > ...`.
    Completions {
        /// bash, zsh or fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Run a channel adapter: a long-running client that connects a sales
    /// channel to this server (--server, --token).
    #[command(subcommand)]
    Adapter(AdapterCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdapterCommand {
    /// Shopify: order webhooks in, levels out by Admin GraphQL (README "Shopify").
    Shopify {
        /// The adapter's TOML file (see examples/shopify-adapter.toml).
        #[arg(long, env = "STOCKPOOL_SHOPIFY_CONFIG")]
        config: PathBuf,
        /// Logs to stderr as text or JSON; RUST_LOG filters (default info).
        #[arg(long, value_enum, default_value = "text", env = "STOCKPOOL_LOG_FORMAT")]
        log_format: crate::config::LogFormat,
    },
    /// Amazon: orders polled from SP-API, levels out by Listings Items
    /// patches or JSON_LISTINGS_FEED (README "Amazon").
    Amazon {
        /// The adapter's TOML file (see examples/amazon-adapter.toml).
        #[arg(long, env = "STOCKPOOL_AMAZON_CONFIG")]
        config: PathBuf,
        /// Logs to stderr as text or JSON; RUST_LOG filters (default info).
        #[arg(long, value_enum, default_value = "text", env = "STOCKPOOL_LOG_FORMAT")]
        log_format: crate::config::LogFormat,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OutboxCommand {
    /// Outbox entries with their state, attempts and last error (ListOutbox).
    List {
        /// Only entries in this state.
        #[arg(long, value_enum)]
        state: Option<OutboxStateArg>,
        /// Entries after this id (paging).
        #[arg(long, value_name = "ID", default_value_t = 0)]
        after_id: i64,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Push dead entries again now, with a fresh attempt budget (RetryOutbox).
    Retry {
        /// Entry ids, as ListOutbox shows them.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutboxStateArg {
    Pending,
    Pushed,
    Dead,
}

/// Identifies one reservation.
#[derive(Debug, Clone, clap::Args)]
pub struct OrderArgs {
    /// Channel code: shopify, amazon, b2b, or one declared in the config.
    #[arg(long)]
    pub channel: String,
    /// The channel's order id, e.g. "#1001".
    #[arg(long = "order", value_name = "ID")]
    pub order_id: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub order: OrderArgs,
    /// An order line; repeat for each SKU.
    #[arg(long = "line", value_name = "SKU=QTY", required = true, value_parser = input::parse_reserve_line)]
    pub lines: Vec<LineArg>,
    /// Hold for this many seconds instead of confirming at once.
    #[arg(long = "hold", value_name = "SECONDS", default_value_t = 0)]
    pub hold_seconds: u32,
    /// The price per unit the channel charged for a line's SKU; repeatable.
    #[arg(long = "price", value_name = "SKU=PRICE", value_parser = input::parse_price)]
    pub prices: Vec<input::PriceArg>,
    /// ISO 4217 code of the prices (required with --price), e.g. EUR.
    #[arg(long = "currency", value_name = "CODE", default_value = "")]
    pub currency: String,
    /// The channel's id of the customer (a B2B account number).
    #[arg(long = "customer", value_name = "REF", default_value = "")]
    pub customer_ref: String,
    /// The prices include tax.
    #[arg(long = "prices-include-tax")]
    pub prices_include_tax: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub order: OrderArgs,
    /// Release only this much of a SKU (at that warehouse with @); repeatable.
    /// None: every open unit.
    #[arg(long = "line", value_name = "SKU=QTY[@WAREHOUSE]", value_parser = input::parse_line)]
    pub lines: Vec<LineArg>,
    /// Why, recorded in the ledger (e.g. "customer cancelled").
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FulfillArgs {
    #[command(flatten)]
    pub order: OrderArgs,
    /// Ship only this much of a SKU (from that warehouse with @); repeatable.
    /// None: every open unit.
    #[arg(long = "line", value_name = "SKU=QTY[@WAREHOUSE]", value_parser = input::parse_line)]
    pub lines: Vec<LineArg>,
    /// Shipment id: the same shipment sent again changes nothing.
    #[arg(long = "shipment", value_name = "ID")]
    pub shipment_id: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestockArgs {
    #[command(flatten)]
    pub order: OrderArgs,
    /// The refund's id (Shopify's or Stripe's): the same refund sent again
    /// changes nothing.
    #[arg(long = "refund", value_name = "ID")]
    pub refund_id: String,
    /// Returned units of a SKU (to that warehouse with @); repeatable.
    /// None: everything shipped and not yet restocked.
    #[arg(long = "line", value_name = "SKU=QTY[@WAREHOUSE]", value_parser = input::parse_line)]
    pub lines: Vec<LineArg>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StockCommand {
    /// Stock levels per SKU and warehouse (GetStock); no SKU: every SKU.
    Get {
        /// SKUs to show.
        #[arg(value_name = "SKU")]
        skus: Vec<String>,
    },
    /// Record a physical count: on_hand becomes ON_HAND (SetStock).
    Set {
        /// The SKU, e.g. TEE-BLK-M (created by its first movement).
        sku: String,
        /// A declared warehouse, e.g. WH-EAST.
        warehouse: String,
        /// Units counted on hand (0 or more).
        on_hand: i64,
        /// Recorded in the ledger.
        #[arg(long, default_value = "count")]
        reason: String,
        /// Refuse (ABORTED) unless the level is still at this version, as
        /// `stock get` showed it.
        #[arg(long, value_name = "N")]
        expected_version: Option<u64>,
        /// Makes a retry harmless: a movement id already applied changes nothing.
        #[arg(long, value_name = "ID")]
        movement_id: Option<String>,
    },
    /// Change on_hand by DELTA, e.g. 24 for a receipt, -2 for damage (AdjustStock).
    Adjust {
        /// The SKU, e.g. TEE-BLK-M (created by its first movement).
        sku: String,
        /// A declared warehouse, e.g. WH-EAST.
        warehouse: String,
        /// Units to add (receipt) or, negative, to take away (damage, loss).
        #[arg(allow_negative_numbers = true)]
        delta: i64,
        /// Recorded in the ledger: receipt, damage, ...
        #[arg(long, default_value = "adjust")]
        reason: String,
        /// Makes a retry harmless: a movement id already applied changes
        /// nothing. Without it, one is generated for this call (so a call
        /// sent again to the next --server is applied once).
        #[arg(long, value_name = "ID")]
        movement_id: Option<String>,
    },
    /// Set counts from a CSV file of sku,warehouse,on_hand (BatchSetStock, in chunks).
    ///
    /// The whole file is checked first and refused, naming each bad line,
    /// before anything is sent. Each row's movement id is derived from the
    /// file's content and the line number, so importing the same file again
    /// changes nothing.
    Import {
        /// Lines of sku,warehouse,on_hand; an optional header line of the same
        /// words; blank lines and lines starting with # are skipped.
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
        /// Recorded in the ledger [default: "import <file name>"].
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct AvailabilityArgs {
    /// SKUs to show; none: every SKU.
    #[arg(value_name = "SKU")]
    pub skus: Vec<String>,
    /// Only this channel; default: every channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Show the steps of the formula (free, protected, atp, share, buffer, ...)
    /// under each row, each naming the rule that set it.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReservationsCommand {
    /// Reservations matching the filters, newest first, every page.
    List {
        /// Only this channel's.
        #[arg(long)]
        channel: Option<String>,
        /// Only in this status; repeatable.
        #[arg(long = "status", value_enum)]
        statuses: Vec<StatusArg>,
        /// Only those holding this SKU.
        #[arg(long)]
        sku: Option<String>,
        /// Only those created after this time (ms since the Unix epoch).
        #[arg(long = "created-after", value_name = "MS", default_value_t = 0)]
        created_after_ms: i64,
    },
}

/// A reservation status, as `reservations list --status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Held,
    Confirmed,
    Fulfilled,
    Released,
    Expired,
}

impl StatusArg {
    pub fn to_pb(self) -> crate::api::pb::ReservationStatus {
        use crate::api::pb::ReservationStatus as S;
        match self {
            StatusArg::Held => S::Held,
            StatusArg::Confirmed => S::Confirmed,
            StatusArg::Fulfilled => S::Fulfilled,
            StatusArg::Released => S::Released,
            StatusArg::Expired => S::Expired,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct MovementsArgs {
    /// The SKU whose ledger to read.
    pub sku: String,
    /// Only this warehouse's pool.
    pub warehouse: Option<String>,
    /// Only lines after this ledger id.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub after_id: u64,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RulesCommand {
    /// Stored rules, channel by channel, default first (ListRules).
    List {
        /// Only this channel's rules.
        #[arg(long)]
        channel: Option<String>,
    },
    /// Store a rule, replacing the whole rule for this channel and SKU (PutRule).
    ///
    /// A field you leave out is not kept from the old rule: it is unset, so it
    /// inherits (a SKU rule from the channel default, a default from the
    /// built-in values). Give every field you want.
    Put(RulePutArgs),
    /// Delete a channel's default rule, or its rule for one SKU (DeleteRule).
    Delete {
        /// The channel whose rule goes.
        #[arg(long)]
        channel: String,
        /// The SKU rule to delete; none: the channel default.
        #[arg(long)]
        sku: Option<String>,
        /// Who deletes it (recorded in the history); default: $USER.
        #[arg(long = "by")]
        changed_by: Option<String>,
        /// Why (recorded in the history).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Who changed a rule, when, from what to what, and why (RuleHistory).
    History {
        #[arg(long)]
        channel: String,
        /// A SKU rule's history; none: the channel default's.
        #[arg(long)]
        sku: Option<String>,
        /// Every rule of the channel, defaults and SKU rules.
        #[arg(long, conflicts_with = "sku")]
        all: bool,
    },
    /// What a proposed rule would change, without applying it (SimulateRules).
    Simulate {
        #[command(flatten)]
        rule: RulePutArgs,
        /// Only these SKUs; default: every SKU.
        #[arg(long = "only", value_name = "SKU")]
        skus: Vec<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RulePutArgs {
    /// The channel the rule is for.
    #[arg(long)]
    pub channel: String,
    /// A rule for this SKU only; none: the channel's default rule.
    #[arg(long)]
    pub sku: Option<String>,
    /// Warehouses that may ship this channel's orders, in priority order.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub warehouses: Vec<String>,
    /// Units ring-fenced for this channel: other channels never take them.
    #[arg(long, value_name = "N")]
    pub fence: Option<i64>,
    /// Part of its ATP the channel is shown, 1..=100.
    #[arg(long = "share", value_name = "PERCENT")]
    pub share_percent: Option<u32>,
    /// Units held back from what the channel is shown.
    #[arg(long, value_name = "N")]
    pub buffer: Option<i64>,
    /// Never show the channel more than N (0: no cap).
    #[arg(long = "max", value_name = "N")]
    pub max_published: Option<i64>,
    /// Show 0 when the figure would fall below N.
    #[arg(long = "min", value_name = "N")]
    pub min_published: Option<i64>,
    /// Who makes the change [default: $USER, else "cli"].
    #[arg(long = "by", value_name = "WHO")]
    pub changed_by: Option<String>,
    /// Why, kept with the change.
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The channel to follow.
    pub channel: String,
    /// Resume after this sequence number; 0: every SKU's level first.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after_seq: u64,
}

/// Runs a client subcommand against `cli.server`. A refused call comes back
/// as an error reading `<STATUS_CODE>: <message>`.
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    client::run(cli).await
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command, "stockpool", &mut buf);
    output::emit_bytes(&buf);
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stockpool").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reserve_takes_repeated_lines_and_a_hold() {
        let cli = parse(&[
            "reserve",
            "--channel",
            "shopify",
            "--order",
            "#1001",
            "--line",
            "TEE=2",
            "--line",
            "MUG=1",
            "--hold",
            "900",
        ])
        .unwrap();
        let Command::Reserve(args) = cli.command else {
            panic!("not reserve")
        };
        assert_eq!(args.order.order_id, "#1001");
        assert_eq!(args.lines.len(), 2);
        assert_eq!(args.lines[1].sku, "MUG");
        assert_eq!(args.hold_seconds, 900);
        assert!(args.prices.is_empty() && args.currency.is_empty());
    }

    #[test]
    fn reserve_takes_prices_a_currency_and_a_customer() {
        let cli = parse(&[
            "reserve",
            "--channel",
            "b2b",
            "--order",
            "PO-1",
            "--line",
            "TEE=2",
            "--price",
            "TEE=19.90",
            "--currency",
            "EUR",
            "--customer",
            "ACME-001",
            "--prices-include-tax",
        ])
        .unwrap();
        let Command::Reserve(args) = cli.command else {
            panic!("not reserve")
        };
        assert_eq!(args.prices[0].unit_price, "19.90");
        assert_eq!(
            (args.currency.as_str(), args.customer_ref.as_str()),
            ("EUR", "ACME-001")
        );
        assert!(args.prices_include_tax);
    }

    #[test]
    fn reserve_without_a_line_is_refused() {
        assert!(parse(&["reserve", "--channel", "shopify", "--order", "1"]).is_err());
    }

    #[test]
    fn a_bad_line_is_refused_while_parsing_the_command_line() {
        let e = parse(&[
            "reserve",
            "--channel",
            "shopify",
            "--order",
            "1",
            "--line",
            "TEE=0",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("quantity must be at least 1, got 0"), "{e}");
    }

    #[test]
    fn stock_adjust_accepts_a_negative_delta() {
        let cli = parse(&[
            "stock", "adjust", "TEE", "WH-EAST", "-5", "--reason", "damage",
        ])
        .unwrap();
        let Command::Stock(StockCommand::Adjust { delta, reason, .. }) = cli.command else {
            panic!("not stock adjust")
        };
        assert_eq!(delta, -5);
        assert_eq!(reason, "damage");
    }

    #[test]
    fn rules_put_splits_warehouses_on_commas() {
        let cli = parse(&[
            "rules",
            "put",
            "--channel",
            "b2b",
            "--warehouses",
            "WH-CENTRAL,WH-EAST",
            "--fence",
            "50",
        ])
        .unwrap();
        let Command::Rules(RulesCommand::Put(args)) = cli.command else {
            panic!("not rules put")
        };
        assert_eq!(args.warehouses, vec!["WH-CENTRAL", "WH-EAST"]);
        assert_eq!(args.fence, Some(50));
        assert_eq!(args.share_percent, None);
    }

    #[test]
    fn outbox_list_filters_by_state_and_retry_needs_an_id() {
        let cli = parse(&["outbox", "list", "--state", "dead"]).unwrap();
        let Command::Outbox(OutboxCommand::List { state, limit, .. }) = cli.command else {
            panic!("not outbox list")
        };
        assert_eq!((state, limit), (Some(OutboxStateArg::Dead), 100));
        let cli = parse(&["outbox", "retry", "4", "7"]).unwrap();
        let Command::Outbox(OutboxCommand::Retry { ids }) = cli.command else {
            panic!("not outbox retry")
        };
        assert_eq!(ids, vec![4, 7]);
        assert!(parse(&["outbox", "retry"]).is_err());
        assert!(parse(&["outbox", "list", "--state", "lost"]).is_err());
    }

    #[test]
    fn output_and_timeout_are_global_with_a_ten_second_default() {
        let cli = parse(&["stock", "get", "-o", "json"]).unwrap();
        assert_eq!((cli.output, cli.timeout), (bench::Format::Json, 10.0));
        let cli = parse(&["--timeout", "2.5", "watch", "shopify"]).unwrap();
        assert_eq!(cli.timeout, 2.5);
        assert!(parse(&["completions", "fish"]).is_ok());
        assert!(parse(&["completions", "tcsh"]).is_err());
    }

    #[test]
    fn a_completion_script_names_the_subcommands() {
        use clap::CommandFactory;
        let mut buf = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "stockpool",
            &mut buf,
        );
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("reservations") && text.contains("movements"));
    }

    #[test]
    fn server_and_token_may_follow_the_subcommand() {
        let cli = parse(&[
            "stock",
            "get",
            "--server",
            "http://10.0.0.5:50051",
            "--token",
            "secret",
        ])
        .unwrap();
        assert_eq!(cli.server, ["http://10.0.0.5:50051"]);
        assert_eq!(cli.token.as_deref(), Some("secret"));
    }

    #[test]
    fn several_servers_may_be_given_comma_separated_or_repeated() {
        let cli = parse(&[
            "--server",
            "http://a:50051,http://b:50051",
            "--server",
            "c:50051",
            "stock",
            "get",
        ])
        .unwrap();
        assert_eq!(cli.server, ["http://a:50051", "http://b:50051", "c:50051"]);
        assert_eq!(cli.failover_wait, 15);
        let cli = parse(&["stock", "get"]).unwrap();
        assert_eq!(cli.server, ["http://127.0.0.1:50051"]);
    }
}
