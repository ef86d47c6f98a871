//! The client side: one connection to the server (or to the servers of one
//! high-availability group, moving to the next when one answers as a
//! standby), the bearer token on every call, one function per subcommand,
//! and the one mapping from a refused call to the error the user reads.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::input::{self, LineArg};
use super::output::{self, Align, Table};
use super::{Cli, Command, OutboxCommand, OutboxStateArg, RulePutArgs, RulesCommand, StockCommand};
use crate::api::pb;
use crate::api::pb::admin_client::AdminClient;
use crate::api::pb::inventory_client::InventoryClient;

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Debug, Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The Inventory client every call goes through.
pub type Inventory = InventoryClient<InterceptedService<Failover, Auth>>;
/// The Admin client every call goes through.
pub type Admin = AdminClient<InterceptedService<Failover, Auth>>;

/// How long a call keeps going round several servers that all refuse it as
/// standbys (or cannot be reached) before it gives up: a failover after a
/// server is cut off from Postgres takes at most about this long.
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(15);

/// The largest answer a client reads: a page of 10000 SKUs with every
/// channel's explanation is several megabytes, beyond tonic's 4 MiB default.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Rows per BatchSetStock of `stock import` (the server takes 10000).
const IMPORT_CHUNK: usize = 5000;

/// SKUs per GetStock when naming them (the server takes 1000).
const NAMED_SKUS_PER_CALL: usize = 1000;

/// One connection to one or several servers, and the token sent with every
/// call. Every client of the public contract (the subcommands, the channel
/// adapters) connects through [`Conn::open`].
#[derive(Clone)]
pub struct Conn {
    channel: Failover,
    auth: Auth,
}

impl Conn {
    /// Connects to `server`: one address or several, comma-separated
    /// (`http://` or `https://`; a bare `host:port` is `http://`), the
    /// servers of one high-availability group in any order. Over https the
    /// server's certificate is checked against the CAs in `ca_file` when
    /// given, else against the public roots. With several addresses, calls
    /// move to the next on a standby's `UNAVAILABLE` or a failed connection
    /// (see [`Failover`]) for up to [`DEFAULT_FAILOVER_WAIT`].
    pub async fn open(
        server: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Conn> {
        Self::open_with(server, token, ca_file, DEFAULT_FAILOVER_WAIT).await
    }

    /// [`Self::open`] with the time a call may spend going round the
    /// servers during a failover.
    pub async fn open_with(
        server: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
        failover_wait: Duration,
    ) -> anyhow::Result<Conn> {
        Self::open_timed(server, token, ca_file, failover_wait, None).await
    }

    /// [`Self::open_with`] where every call is given up after `timeout`
    /// (for a stream: until it starts), connecting included.
    pub async fn open_timed(
        server: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
        failover_wait: Duration,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Conn> {
        let auth = match token {
            None | Some("") => Auth(None),
            Some(t) => Auth(Some(
                MetadataValue::try_from(format!("Bearer {}", t.trim())).map_err(|_| {
                    anyhow!("--token contains characters that cannot be sent in a header")
                })?,
            )),
        };
        let addresses: Vec<&str> = server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if addresses.is_empty() {
            bail!("--server is empty: give an address such as http://127.0.0.1:50051");
        }
        let endpoints = addresses
            .iter()
            .map(|a| endpoint(a, auth.0.is_some(), ca_file, timeout))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The first server that answers becomes the current one; the others
        // connect when a call moves to them.
        let mut failures = Vec::new();
        let mut current = None;
        for (i, (url, endpoint)) in endpoints.iter().enumerate() {
            match endpoint.connect().await {
                Ok(channel) => {
                    current = Some((i, channel));
                    break;
                }
                Err(e) => failures.push(format!("{url} ({})", causes(&e))),
            }
        }
        let Some((first, connected)) = current else {
            bail!(
                "cannot reach stockpool at {}. Start the server with \
                 `cargo run --release -- serve` (or `stockpool serve`), or check --server \
                 (env STOCKPOOL_SERVER).",
                failures.join(", ")
            );
        };
        let servers = endpoints
            .into_iter()
            .enumerate()
            .map(|(i, (url, endpoint))| Server {
                url,
                channel: if i == first {
                    connected.clone()
                } else {
                    endpoint.connect_lazy()
                },
            })
            .collect();
        Ok(Conn {
            channel: Failover::new(servers, first, failover_wait),
            auth,
        })
    }

    /// The Inventory service, sending the token with every call.
    pub fn inventory(&self) -> Inventory {
        InventoryClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// The Admin service, sending the token with every call.
    pub fn admin(&self) -> Admin {
        AdminClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_ANSWER_BYTES)
    }
}

/// The endpoint of one `--server` address, checked: its scheme, TLS, and a
/// warning when a token would cross the network in plaintext.
fn endpoint(
    server: &str,
    has_token: bool,
    ca_file: Option<&Path>,
    timeout: Option<Duration>,
) -> anyhow::Result<(String, Endpoint)> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| anyhow!("--server {server:?} is not a valid address: {e}"))?
        .connect_timeout(timeout.map_or(Duration::from_secs(5), |t| t.min(Duration::from_secs(5))));
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    match endpoint.uri().scheme_str() {
        Some("https") => {
            let tls = match ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .with_context(|| format!("reading --ca-file {}", path.display()))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| anyhow!("TLS for {url}: {}", causes(&e)))?;
        }
        Some("http") => {
            if ca_file.is_some() {
                bail!("--ca-file is for an https:// server; {url} is plain http");
            }
            let local = endpoint.uri().host().is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(|c| c == '[' || c == ']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if has_token && !local {
                eprintln!(
                    "warning: {url} is plain http: the token crosses the network unencrypted; use https://"
                );
            }
        }
        _ => bail!("--server {server:?}: use http:// or https://"),
    }
    Ok((url, endpoint))
}

/// One server of a [`Failover`].
struct Server {
    url: String,
    channel: Channel,
}

/// The servers of one high-availability group behind one client. A call
/// goes to the server that answered last; when that one refuses it as a
/// standby (`UNAVAILABLE` marked with the `stockpool-role: standby`
/// metadata: nothing was done) or cannot be reached, the same call goes to
/// the next, round the list, and while every server refuses, round again
/// with a growing pause (100 ms to 1 s) until the failover wait is over;
/// then the last answer is returned. Any other answer, `UNAVAILABLE` from
/// the active server included (its store could not commit: the caller
/// decides whether to retry), is returned as it is. With one address,
/// every answer is returned as it is.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<FailoverInner>,
}

struct FailoverInner {
    servers: Vec<Server>,
    /// The server that answered last.
    current: AtomicUsize,
    wait: Duration,
}

impl Failover {
    fn new(servers: Vec<Server>, current: usize, wait: Duration) -> Failover {
        Failover {
            inner: Arc::new(FailoverInner {
                servers,
                current: AtomicUsize::new(current),
                wait,
            }),
        }
    }

    /// The address calls go to now.
    pub fn current(&self) -> &str {
        &self.inner.servers[self.inner.current.load(Ordering::Relaxed)].url
    }
}

/// Whether `response` is a refusal by a server that is not the active one.
fn refused_as_standby<B>(response: &axum::http::Response<B>) -> bool {
    let headers = response.headers();
    headers.get("grpc-status").is_some_and(|s| s == "14")
        && headers
            .get(crate::api::error::ROLE_KEY)
            .is_some_and(|r| r == crate::api::error::STANDBY)
}

impl tower::Service<axum::http::Request<tonic::body::Body>> for Failover {
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each call waits for its server's channel itself.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            if inner.servers.len() == 1 {
                return inner.servers[0].channel.clone().oneshot(request).await;
            }
            // A request is one message (no client streaming in the API):
            // kept whole so that it can be sent again.
            let (parts, body) = request.into_parts();
            let body = match http_body_util::BodyExt::collect(body).await {
                Ok(collected) => collected.to_bytes(),
                Err(status) => return Ok(status.into_http()),
            };
            let n = inner.servers.len();
            let deadline = tokio::time::Instant::now() + inner.wait;
            let mut pause = Duration::from_millis(100);
            loop {
                let start = inner.current.load(Ordering::Relaxed);
                let mut last = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    let mut again = axum::http::Request::new(tonic::body::Body::new(
                        http_body_util::Full::new(body.clone()),
                    ));
                    *again.method_mut() = parts.method.clone();
                    *again.uri_mut() = parts.uri.clone();
                    *again.version_mut() = parts.version;
                    *again.headers_mut() = parts.headers.clone();
                    *again.extensions_mut() = parts.extensions.clone();
                    let answer = inner.servers[i].channel.clone().oneshot(again).await;
                    match answer {
                        Ok(response) if !refused_as_standby(&response) => {
                            inner.current.store(i, Ordering::Relaxed);
                            return Ok(response);
                        }
                        other => last = Some(other),
                    }
                }
                let last = last.expect("at least two servers");
                if tokio::time::Instant::now() + pause > deadline {
                    return last;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        })
    }
}

/// An error and its causes, joined by ": ", a cause that repeats the one
/// before it left out (hyper and tonic nest "tcp connect error" twice).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// `<STATUS_CODE>: <message>`, with a hint where the fix is on this side.
fn describe(status: &Status) -> String {
    let mut text = format!("{}: {}", output::code_name(status.code()), status.message());
    match status.code() {
        Code::Unauthenticated => {
            text.push_str(" (check --token or STOCKPOOL_TOKEN)");
        }
        _ if status.message().contains("Timeout expired") => {
            text.push_str(" (the call took longer than --timeout; raise it, or 0 for no limit)");
        }
        Code::Unavailable | Code::Unknown if std::error::Error::source(status).is_some() => {
            text.push_str(" (the connection to the server failed; is it still running?)");
        }
        _ => {}
    }
    text
}

pub(super) fn refused(status: Status) -> anyhow::Error {
    anyhow!(describe(&status))
}

fn to_pb(lines: &[LineArg]) -> Vec<pb::Line> {
    lines
        .iter()
        .map(|l| pb::Line {
            sku: l.sku.clone(),
            quantity: l.quantity,
            warehouse: l.warehouse.clone().unwrap_or_default(),
            ..Default::default()
        })
        .collect()
}

fn reservation(r: Option<pb::Reservation>) -> anyhow::Result<pb::Reservation> {
    r.ok_or_else(|| anyhow!("the server answered without a reservation"))
}

pub(super) async fn run(cli: Cli) -> anyhow::Result<()> {
    // Subcommands the server does not serve yet fail before connecting.
    if let Command::Serve(_) = &cli.command {
        bail!("serve is not a client subcommand: run it from main");
    }
    let servers = cli.server.join(",");
    if let Command::Adapter(super::AdapterCommand::Shopify { config, log_format }) = &cli.command {
        crate::telemetry::init_logging(*log_format);
        let config = crate::adapters::shopify::ShopifyConfig::load(config)?;
        return crate::adapters::shopify::run(
            config,
            &servers,
            cli.token.as_deref(),
            cli.ca_file.as_deref(),
        )
        .await;
    }
    if let Command::Adapter(super::AdapterCommand::Amazon { config, log_format }) = &cli.command {
        crate::telemetry::init_logging(*log_format);
        let config = crate::adapters::amazon::AmazonConfig::load(config)?;
        return crate::adapters::amazon::run(
            config,
            &servers,
            cli.token.as_deref(),
            cli.ca_file.as_deref(),
        )
        .await;
    }
    if let Command::Bench(args) = &cli.command {
        let report =
            super::bench::run(&servers, cli.token.as_deref(), cli.ca_file.as_deref(), args).await?;
        return super::bench::print(&report, cli.output);
    }
    let json = cli.output == super::bench::Format::Json;
    if let Command::Backup { data_dir, file } = &cli.command {
        let started = std::time::Instant::now();
        crate::store::SqliteStore::backup(data_dir, file)
            .await
            .map_err(|e| {
                anyhow!(
                    "backup of {}: {}",
                    data_dir.display(),
                    crate::telemetry::chain(&e)
                )
            })?;
        let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if !json {
            crate::out!(
                "{} written: {bytes} bytes in {} ms; restore by copying it to {}/stockpool.db \
                 before the server starts",
                file.display(),
                started.elapsed().as_millis(),
                data_dir.display()
            );
        } else {
            output::emit_json(&serde_json::json!({"file": file, "bytes": bytes}));
        }
        return Ok(());
    }
    if let Command::Migrate { from, to } = &cli.command {
        let started = std::time::Instant::now();
        let dir = crate::store::migrate::sqlite_dir(from)?;
        let copied = crate::store::migrate::sqlite_to_postgres(dir, to)
            .await
            .map_err(|e| anyhow!("migrate: {}", crate::telemetry::chain(&e)))?;
        for (table, rows) in &copied {
            if json {
                output::emit_json(&serde_json::json!({"table": table, "rows": rows}));
            } else {
                crate::out!("{table:<16} {rows:>10} rows");
            }
        }
        if !json {
            crate::out!(
                "copied into {} in {} ms; start the servers with --database-url",
                crate::store::redact_url(to),
                started.elapsed().as_millis()
            );
        }
        return Ok(());
    }
    if let Command::Completions { shell } = &cli.command {
        super::completions(*shell);
        return Ok(());
    }
    if !cli.timeout.is_finite() || cli.timeout < 0.0 {
        bail!(
            "--timeout must be a number of seconds, 0 or more, got {}",
            cli.timeout
        );
    }
    let timeout = (cli.timeout > 0.0).then(|| Duration::from_secs_f64(cli.timeout));
    let conn = Conn::open_timed(
        &servers,
        cli.token.as_deref(),
        cli.ca_file.as_deref(),
        Duration::from_secs(cli.failover_wait),
        timeout,
    )
    .await?;
    let mut inv = conn.inventory();
    match cli.command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Adapter(_) => unreachable!("adapters are run above"),
        Command::Bench(_) => unreachable!("bench is handled above"),
        Command::Completions { .. } => unreachable!("completions are printed above"),
        Command::Backup { .. } => unreachable!("backup is done above"),
        Command::Migrate { .. } => unreachable!("migrate is done above"),
        Command::Reserve(a) => {
            let mut lines = to_pb(&a.lines);
            for p in &a.prices {
                let line = lines.iter_mut().find(|l| l.sku == p.sku).ok_or_else(|| {
                    anyhow!(
                        "--price {}={}: the order has no --line for {}",
                        p.sku,
                        p.unit_price,
                        p.sku
                    )
                })?;
                line.unit_price = p.unit_price.clone();
            }
            let resp = inv
                .reserve(pb::ReserveRequest {
                    channel: a.order.channel,
                    order_id: a.order.order_id,
                    lines,
                    hold_seconds: a.hold_seconds,
                    currency: a.currency,
                    customer_ref: a.customer_ref,
                    prices_include_tax: a.prices_include_tax,
                })
                .await
                .map_err(refused)?
                .into_inner();
            if json {
                output::emit_json(&resp);
            } else {
                output::print_reservation(&reservation(resp.reservation)?, Some(resp.replayed));
            }
        }
        Command::Confirm(a) => {
            let r = inv
                .confirm(pb::ConfirmRequest {
                    channel: a.channel,
                    order_id: a.order_id,
                })
                .await
                .map_err(refused)?;
            show_reservation(json, r.get_ref());
        }
        Command::Release(a) => {
            let r = inv
                .release(pb::ReleaseRequest {
                    channel: a.order.channel,
                    order_id: a.order.order_id,
                    lines: to_pb(&a.lines),
                    reason: a.reason.unwrap_or_default(),
                })
                .await
                .map_err(refused)?;
            show_reservation(json, r.get_ref());
        }
        Command::Fulfill(a) => {
            let r = inv
                .fulfill(pb::FulfillRequest {
                    channel: a.order.channel,
                    order_id: a.order.order_id,
                    lines: to_pb(&a.lines),
                    shipment_id: a.shipment_id.unwrap_or_default(),
                })
                .await
                .map_err(refused)?;
            show_reservation(json, r.get_ref());
        }
        Command::Restock(a) => {
            let refund_id = a.refund_id.clone();
            let resp = inv
                .restock(pb::RestockRequest {
                    channel: a.order.channel,
                    order_id: a.order.order_id,
                    refund_id: a.refund_id,
                    lines: to_pb(&a.lines),
                })
                .await
                .map_err(refused)?
                .into_inner();
            if json {
                output::emit_json(&resp);
            } else {
                print_restock(&refund_id, &resp);
            }
        }
        Command::Reservation(a) => {
            let r = inv
                .get_reservation(pb::GetReservationRequest {
                    channel: a.channel,
                    order_id: a.order_id,
                })
                .await
                .map_err(refused)?;
            show_reservation(json, r.get_ref());
        }
        Command::Stock(cmd) => stock(&conn, &mut inv, cmd, json).await?,
        Command::Availability(a) => {
            let mut items = Vec::new();
            let mut page_token = String::new();
            loop {
                let resp = inv
                    .get_availability(pb::GetAvailabilityRequest {
                        skus: a.skus.clone(),
                        channel: a.channel.clone().unwrap_or_default(),
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                items.extend(resp.items);
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
            if json {
                items.iter().for_each(output::emit_json);
                return Ok(());
            }
            if items.is_empty() {
                crate::out!("no SKUs yet: put stock in with `stockpool stock import FILE.csv`");
            }
            for line in output::availability_lines(&items, a.explain) {
                crate::out!("{line}");
            }
        }
        Command::Reservations(cmd) => reservations(&mut inv, cmd, json).await?,
        Command::Movements(a) => movements(&mut inv, a, json).await?,
        Command::Rules(cmd) => rules(&mut conn.admin(), cmd, json).await?,
        Command::Outbox(cmd) => outbox(&mut conn.admin(), cmd, json).await?,
        Command::Watch(a) => watch(&mut inv, a, json).await?,
    }
    Ok(())
}

/// Follows a channel until the stream ends, then says why and fails: a
/// watch only ends when the server went away or stopped streaming.
async fn watch(inv: &mut Inventory, a: super::WatchArgs, json: bool) -> anyhow::Result<()> {
    let mut stream = inv
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: a.channel.clone(),
            after_seq: a.after_seq,
        })
        .await
        .map_err(refused)?
        .into_inner();
    if !json {
        crate::out!(
            "{:>10}  {:<24}  {:>10}  {:>10}  {:>10}",
            "SEQ",
            "SKU",
            "PUBLISHED",
            "ATP",
            "OPEN"
        );
    }
    let mut last_seq = a.after_seq;
    let ended = loop {
        match stream.message().await {
            Ok(Some(u)) => {
                last_seq = u.seq;
                if json {
                    output::emit_json(&u);
                } else {
                    crate::out!(
                        "{:>10}  {:<24}  {:>10}  {:>10}  {:>10}",
                        u.seq,
                        u.sku,
                        u.published,
                        u.atp,
                        u.open
                    );
                }
            }
            Ok(None) => break "the server closed the stream".to_string(),
            Err(status) => break describe(&status),
        }
    };
    bail!(
        "watch of {} ended: {ended}; resume with `stockpool watch {} --after-seq {last_seq}`",
        a.channel,
        a.channel
    )
}

/// A reservation as text, or as one JSON object.
fn show_reservation(json: bool, r: &pb::Reservation) {
    if json {
        output::emit_json(r);
    } else {
        output::print_reservation(r, None);
    }
}

/// A stock level as a table, or as one JSON object.
fn show_level(json: bool, level: &pb::StockLevel) {
    if json {
        output::emit_json(level);
    } else {
        output::stock_table(std::slice::from_ref(level)).print();
    }
}

fn print_restock(refund_id: &str, resp: &pb::RestockResponse) {
    crate::out!("refund       {refund_id}");
    crate::out!(
        "replayed     {}",
        if resp.replayed {
            "yes: this refund was already applied; nothing changed"
        } else {
            "no"
        }
    );
    crate::out!();
    if resp.restocked.is_empty() {
        crate::out!("nothing restocked: no shipped unit of these lines is left to put back");
        return;
    }
    let mut t = Table::new(&[
        ("SKU", Align::Left),
        ("WAREHOUSE", Align::Left),
        ("RESTOCKED", Align::Right),
    ]);
    for a in &resp.restocked {
        t.row(vec![
            a.sku.clone(),
            a.warehouse.clone(),
            a.quantity.to_string(),
        ]);
    }
    t.print();
}

async fn stock(
    conn: &Conn,
    inv: &mut Inventory,
    cmd: StockCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        StockCommand::Get { skus } => {
            let levels = all_levels(inv, skus).await?;
            if json {
                levels.iter().for_each(output::emit_json);
                return Ok(());
            }
            if levels.is_empty() {
                crate::out!("no stock yet: put some in with `stockpool stock import FILE.csv`");
                return Ok(());
            }
            output::stock_table(&levels).print();
        }
        StockCommand::Set {
            sku,
            warehouse,
            on_hand,
            reason,
            expected_version,
            movement_id,
        } => {
            let expected_version = expected_version
                .map(i64::try_from)
                .transpose()
                .context("--expected-version is too large")?;
            let level = inv
                .set_stock(pb::SetStockRequest {
                    sku,
                    warehouse,
                    on_hand,
                    reason,
                    expected_version,
                    movement_id: movement_id.unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            show_level(json, &level);
        }
        StockCommand::Adjust {
            sku,
            warehouse,
            delta,
            reason,
            movement_id,
        } => {
            let level = inv
                .adjust_stock(pb::AdjustStockRequest {
                    sku,
                    warehouse,
                    delta,
                    reason,
                    // Always one: a call sent again (to the next server in a
                    // failover) is then applied once.
                    movement_id: movement_id
                        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple())),
                })
                .await
                .map_err(refused)?
                .into_inner();
            show_level(json, &level);
        }
        StockCommand::Import { file, reason } => {
            import(conn, inv, &file, reason, json).await?;
        }
    }
    Ok(())
}

/// What became of one imported row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Applied,
    Unchanged,
    Replayed,
    Failed,
}

/// Most problems listed when a file is refused.
const MAX_PROBLEMS_SHOWN: usize = 20;

fn refuse_file(file: &Path, problems: &[String]) -> anyhow::Error {
    let mut text = format!(
        "{} refused, nothing was sent ({} problem{}):",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_PROBLEMS_SHOWN) {
        text.push_str("\n  ");
        text.push_str(p);
    }
    if problems.len() > MAX_PROBLEMS_SHOWN {
        text.push_str(&format!(
            "\n  ... and {} more",
            problems.len() - MAX_PROBLEMS_SHOWN
        ));
    }
    anyhow!(text)
}

async fn import(
    conn: &Conn,
    inv: &mut Inventory,
    file: &Path,
    reason: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| anyhow!("{} is not UTF-8 text: {e}", file.display()))?;
    let rows = input::parse_stock_csv(text).map_err(|problems| {
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        refuse_file(file, &problems)
    })?;
    if rows.is_empty() {
        bail!(
            "{} has no rows: expected lines of sku,warehouse,on_hand",
            file.display()
        );
    }

    // Unknown warehouses are the likeliest mistake: refuse them before any write.
    let declared: Vec<String> = conn
        .admin()
        .list_warehouses(pb::ListWarehousesRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .warehouses
        .into_iter()
        .map(|w| w.code)
        .collect();
    let unknown: Vec<String> = rows
        .iter()
        .filter(|r| !declared.contains(&r.warehouse))
        .map(|r| {
            format!(
                "line {}: warehouse {} is not declared on the server (declared: {})",
                r.line,
                r.warehouse,
                if declared.is_empty() {
                    "none; add [[warehouses]] to the config file".to_string()
                } else {
                    declared.join(", ")
                }
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(refuse_file(file, &unknown));
    }

    // Levels before, to tell a fresh count from a replay (a replay leaves
    // the version as it was).
    let skus: BTreeSet<String> = rows.iter().map(|r| r.sku.clone()).collect();
    let before: HashMap<(String, String), (i64, u64)> = all_levels(inv, skus.into_iter().collect())
        .await?
        .into_iter()
        .map(|l| ((l.sku, l.warehouse), (l.on_hand, l.version)))
        .collect();

    let hash = input::content_hash(&bytes);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = reason.unwrap_or_else(|| format!("import {name}").chars().take(200).collect());
    let mut table = Table::new(&[
        ("LINE", Align::Right),
        ("SKU", Align::Left),
        ("WAREHOUSE", Align::Left),
        ("ON_HAND", Align::Right),
        ("RESULT", Align::Left),
    ]);
    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    let mut progress = Progress::new(rows.len());
    for chunk in rows.chunks(IMPORT_CHUNK) {
        let items = chunk
            .iter()
            .map(|row| pb::SetStockRequest {
                sku: row.sku.clone(),
                warehouse: row.warehouse.clone(),
                on_hand: row.on_hand,
                reason: reason.clone(),
                expected_version: None,
                movement_id: input::import_movement_id(&hash, row.line),
            })
            .collect();
        let results = inv
            .batch_set_stock(pb::BatchSetStockRequest { items })
            .await
            .map_err(|status| {
                progress.finish();
                anyhow!(
                    "{} (lines {} to {} were not applied; importing this same file again skips \
                     the rows already applied)",
                    describe(&status),
                    chunk[0].line,
                    chunk[chunk.len() - 1].line
                )
            })?
            .into_inner()
            .results;
        if results.len() != chunk.len() {
            bail!(
                "the server answered {} results for {} rows",
                results.len(),
                chunk.len()
            );
        }
        for (row, result) in chunk.iter().zip(results) {
            let (outcome, shown) = match result.level {
                Some(level) if result.error_code.is_empty() => {
                    let key = (row.sku.clone(), row.warehouse.clone());
                    match before.get(&key) {
                        _ if result.replayed => {
                            (Outcome::Replayed, "replayed (already imported)".to_string())
                        }
                        Some(&(_, version)) if version == level.version => {
                            (Outcome::Replayed, "replayed (already imported)".to_string())
                        }
                        Some(&(on_hand, _)) if on_hand == row.on_hand => {
                            (Outcome::Unchanged, "unchanged (count matched)".to_string())
                        }
                        Some(&(on_hand, _)) => {
                            (Outcome::Applied, format!("applied (was {on_hand})"))
                        }
                        None => (Outcome::Applied, "applied".to_string()),
                    }
                }
                _ => {
                    progress.clear();
                    eprintln!(
                        "line {}: error: {}: {}",
                        row.line, result.error_code, result.error_message
                    );
                    (Outcome::Failed, format!("failed: {}", result.error_code))
                }
            };
            *counts.entry(outcome).or_default() += 1;
            if json {
                output::emit_json(&serde_json::json!({
                    "line": row.line,
                    "sku": row.sku,
                    "warehouse": row.warehouse,
                    "on_hand": row.on_hand,
                    "result": format!("{outcome:?}").to_lowercase(),
                    "detail": shown,
                }));
                continue;
            }
            table.row(vec![
                row.line.to_string(),
                row.sku.clone(),
                row.warehouse.clone(),
                row.on_hand.to_string(),
                shown,
            ]);
        }
        progress.advance(chunk.len());
    }
    progress.finish();
    let n = |o| counts.get(&o).copied().unwrap_or(0);
    if !json {
        table.print();
        crate::out!();
        crate::out!(
            "{}: {} rows: {} applied, {} unchanged, {} replayed, {} failed",
            file.display(),
            rows.len(),
            n(Outcome::Applied),
            n(Outcome::Unchanged),
            n(Outcome::Replayed),
            n(Outcome::Failed)
        );
    }
    if n(Outcome::Failed) > 0 {
        bail!(
            "{} of {} rows failed (see above); importing this same file again skips the rows \
             already applied",
            n(Outcome::Failed),
            rows.len()
        );
    }
    Ok(())
}

async fn outbox(admin: &mut Admin, cmd: OutboxCommand, json: bool) -> anyhow::Result<()> {
    let entries = match cmd {
        OutboxCommand::List {
            state,
            after_id,
            limit,
        } => {
            let state = match state {
                None => pb::OutboxState::Unspecified,
                Some(OutboxStateArg::Pending) => pb::OutboxState::Pending,
                Some(OutboxStateArg::Pushed) => pb::OutboxState::Pushed,
                Some(OutboxStateArg::Dead) => pb::OutboxState::Dead,
            };
            admin
                .list_outbox(pb::ListOutboxRequest {
                    state: state as i32,
                    after_id,
                    limit,
                })
                .await
                .map_err(refused)?
                .into_inner()
                .entries
        }
        OutboxCommand::Retry { ids } => {
            let entries = admin
                .retry_outbox(pb::RetryOutboxRequest { ids })
                .await
                .map_err(refused)?
                .into_inner()
                .entries;
            if !json {
                crate::out!("{} entries put back in line for Odoo", entries.len());
            }
            entries
        }
    };
    if json {
        entries.iter().for_each(output::emit_json);
    } else if entries.is_empty() {
        crate::out!("no outbox entries");
    } else {
        output::outbox_table(&entries).print();
    }
    Ok(())
}

async fn rules(admin: &mut Admin, cmd: RulesCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        RulesCommand::List { channel } => {
            let rules = admin
                .list_rules(pb::ListRulesRequest {
                    channel: channel.unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner()
                .rules;
            if json {
                rules.iter().for_each(output::emit_json);
                return Ok(());
            }
            if rules.is_empty() {
                crate::out!(
                    "no rules stored: every channel may use every warehouse, no fence, share 100%, buffer 0"
                );
                return Ok(());
            }
            output::rules_table(&rules).print();
            crate::out!();
            crate::out!("{}", output::RULES_FOOTNOTE);
        }
        RulesCommand::Put(a) => {
            let changed_by = who(a.changed_by.clone());
            let comment = a.comment.clone().unwrap_or_default();
            let stored = admin
                .put_rule(pb::PutRuleRequest {
                    rule: Some(rule_of(a)),
                    changed_by,
                    comment,
                })
                .await
                .map_err(refused)?
                .into_inner();
            if json {
                output::emit_json(&stored);
                return Ok(());
            }
            crate::out!("stored:");
            output::rules_table(&[stored]).print();
        }
        RulesCommand::Delete {
            channel,
            sku,
            changed_by,
            comment,
        } => {
            admin
                .delete_rule(pb::DeleteRuleRequest {
                    channel: channel.clone(),
                    sku: sku.clone().unwrap_or_default(),
                    changed_by: who(changed_by),
                    comment: comment.unwrap_or_default(),
                })
                .await
                .map_err(refused)?;
            if json {
                output::emit_json(&serde_json::json!({
                    "deleted": { "channel": channel, "sku": sku.unwrap_or_default() }
                }));
                return Ok(());
            }
            match sku {
                Some(sku) => crate::out!("deleted the {channel} rule for {sku}"),
                None => crate::out!("deleted the {channel} default rule"),
            }
        }
        RulesCommand::History { channel, sku, all } => {
            let changes = admin
                .rule_history(pb::RuleHistoryRequest {
                    channel,
                    sku: sku.unwrap_or_default(),
                    all_skus: all,
                })
                .await
                .map_err(refused)?
                .into_inner()
                .changes;
            if json {
                changes.iter().for_each(output::emit_json);
                return Ok(());
            }
            if changes.is_empty() {
                crate::out!("no changes recorded");
            }
            for c in &changes {
                crate::out!(
                    "{}  by {}  {}",
                    output::fmt_utc(c.at_ms),
                    c.changed_by,
                    c.comment
                );
                let rows: Vec<pb::Rule> = c.before.iter().chain(c.after.iter()).cloned().collect();
                let mut lines = output::rules_table(&rows).lines().into_iter();
                if let Some(header) = lines.next() {
                    crate::out!("         {header}");
                }
                if c.before.is_some() {
                    crate::out!("  before {}", lines.next().unwrap_or_default());
                } else {
                    crate::out!("  before (no rule)");
                }
                if c.after.is_some() {
                    crate::out!("  after  {}", lines.next().unwrap_or_default());
                } else {
                    crate::out!("  after  (deleted)");
                }
            }
        }
        RulesCommand::Simulate { rule, skus } => {
            let changes = admin
                .simulate_rules(pb::SimulateRulesRequest {
                    proposed: vec![rule_of(rule)],
                    skus,
                })
                .await
                .map_err(refused)?
                .into_inner()
                .changes;
            if json {
                changes.iter().for_each(output::emit_json);
            } else if changes.is_empty() {
                crate::out!("nothing would change");
            } else {
                output::simulation_table(&changes).print();
            }
        }
    }
    Ok(())
}

/// Who a rule change is recorded as: the flag, else the login name.
fn who(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "cli".to_string())
}

fn rule_of(a: RulePutArgs) -> pb::Rule {
    pb::Rule {
        channel: a.channel,
        sku: a.sku.unwrap_or_default(),
        warehouses: a
            .warehouses
            .into_iter()
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect(),
        fence: a.fence,
        share_percent: a.share_percent,
        buffer: a.buffer,
        max_published: a.max_published,
        min_published: a.min_published,
    }
}

/// Every level of `skus` (all SKUs when empty), paging through GetStock.
async fn all_levels(inv: &mut Inventory, skus: Vec<String>) -> anyhow::Result<Vec<pb::StockLevel>> {
    let mut levels = Vec::new();
    if !skus.is_empty() {
        for chunk in skus.chunks(NAMED_SKUS_PER_CALL) {
            let resp = inv
                .get_stock(pb::GetStockRequest {
                    skus: chunk.to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            levels.extend(resp.levels);
        }
        return Ok(levels);
    }
    let mut page_token = String::new();
    loop {
        let resp = inv
            .get_stock(pb::GetStockRequest {
                page_token,
                ..Default::default()
            })
            .await
            .map_err(refused)?
            .into_inner();
        levels.extend(resp.levels);
        if resp.next_page_token.is_empty() {
            return Ok(levels);
        }
        page_token = resp.next_page_token;
    }
}

async fn reservations(
    inv: &mut Inventory,
    cmd: super::ReservationsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let super::ReservationsCommand::List {
        channel,
        statuses,
        sku,
        created_after_ms,
    } = cmd;
    let statuses: Vec<i32> = statuses.iter().map(|s| s.to_pb() as i32).collect();
    let mut page_token = String::new();
    let mut table = Table::new(&[
        ("CHANNEL", Align::Left),
        ("ORDER", Align::Left),
        ("STATUS", Align::Left),
        ("CREATED", Align::Left),
        ("LINES", Align::Left),
    ]);
    loop {
        let resp = inv
            .list_reservations(pb::ListReservationsRequest {
                channel: channel.clone().unwrap_or_default(),
                statuses: statuses.clone(),
                sku: sku.clone().unwrap_or_default(),
                created_after_ms,
                page_size: 0,
                page_token,
            })
            .await
            .map_err(refused)?
            .into_inner();
        for r in &resp.reservations {
            if json {
                output::emit_json(r);
            } else {
                table.row(output::reservation_row(r));
            }
        }
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    if json {
    } else if table.is_empty() {
        crate::out!("no reservations match");
    } else {
        table.print();
    }
    Ok(())
}

async fn movements(inv: &mut Inventory, a: super::MovementsArgs, json: bool) -> anyhow::Result<()> {
    let mut after_id = a.after_id;
    let mut table = output::movements_table();
    loop {
        let resp = inv
            .list_movements(pb::ListMovementsRequest {
                sku: a.sku.clone(),
                warehouse: a.warehouse.clone().unwrap_or_default(),
                after_id,
                limit: MOVEMENTS_PER_CALL,
            })
            .await
            .map_err(refused)?
            .into_inner();
        for m in &resp.movements {
            if json {
                output::emit_json(m);
            } else {
                table.row(output::movement_row(m));
            }
        }
        match resp.movements.last() {
            Some(last) if resp.movements.len() == MOVEMENTS_PER_CALL as usize => after_id = last.id,
            _ => break,
        }
    }
    if json {
    } else if table.is_empty() {
        crate::out!("no movements recorded");
    } else {
        table.print();
    }
    Ok(())
}

/// Ledger lines per ListMovements (the server's most).
const MOVEMENTS_PER_CALL: i32 = 1000;

/// A progress bar on stderr while a long import runs, only when stderr is
/// a terminal: a script's output stays clean.
struct Progress {
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            total,
            done: 0,
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if self.shown {
            let width = 30;
            let filled = (self.done * width).checked_div(self.total).unwrap_or(width);
            eprint!(
                "\r[{}{}] {}/{} rows",
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total
            );
        }
    }

    /// Clears the bar's line so an error message starts at column 0.
    fn clear(&self) {
        if self.shown && self.done > 0 {
            eprint!("\r\x1b[2K");
        }
    }

    fn finish(&mut self) {
        if self.shown && self.done > 0 {
            eprintln!();
        }
        self.shown = false;
    }
}
