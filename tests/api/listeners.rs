//! The listeners under half-open and hostile connections, TLS, and
//! shutdown: a connection that never finishes its handshake is closed, one
//! past the limit is refused, a peer that stops answering pings is dropped,
//! shutdown completes whatever clients hold open, and TLS serves both ports
//! with a certificate that can be replaced while serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stockpool::api::pb;
use stockpool::cli::Conn;
use stockpool::listen::TlsFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

/// Longest a test waits for something that must happen; reaching it means
/// the server never did it (this is no timing assertion).
const NEVER: Duration = Duration::from_secs(20);

/// The client's HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn grpc_addr(app: &TestApp) -> std::net::SocketAddr {
    let port = app.grpc_url.rsplit(':').next().unwrap().parse().unwrap();
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(NEVER, read_all)
        .await
        .expect("the server closed the connection");
    got
}

/// A connection that sent `bytes` and then nothing.
async fn half_open(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_handshake_is_closed_after_the_handshake_timeout() {
    let app = spawn_app_with(|c| {
        c.listen.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let grpc = grpc_addr(&app);
    for (addr, bytes, what) in [
        (grpc, &b""[..], "a TCP connection that sends nothing (gRPC)"),
        (grpc, &PREFACE[..10], "half an HTTP/2 preface"),
        (
            app.http_addr,
            &b""[..],
            "a TCP connection that sends nothing (HTTP)",
        ),
        (
            app.http_addr,
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\n"[..],
            "HTTP headers never finished",
        ),
    ] {
        let mut s = half_open(addr, bytes).await;
        let got = until_closed(&mut s).await;
        assert!(
            !String::from_utf8_lossy(&got).contains("stockpool_"),
            "{what}: answered {got:?}"
        );
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    let app = spawn_app_with(|c| {
        c.listen.keepalive_interval = Duration::from_millis(200);
        c.listen.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    // A complete preface and an empty SETTINGS frame, then silence: the
    // server's pings go unanswered.
    let mut s = half_open(grpc_addr(&app), PREFACE).await;
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let got = until_closed(&mut s).await;
    assert!(
        frames(&got).contains(&6),
        "the server pinged before giving up: frame types {:?}",
        frames(&got)
    );
}

/// The types of the HTTP/2 frames in `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_a_freed_place_serves_again() {
    let mut app = spawn_app_with(|c| {
        c.listen.max_connections = 3;
    })
    .await;
    let addr = grpc_addr(&app);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_open(addr, b"").await);
    }
    // Give the server the moment it needs to count them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = half_open(addr, PREFACE).await;
    until_closed(&mut fourth).await;

    drop(held.pop());
    let mut served = false;
    for _ in 0..100 {
        if app
            .inventory
            .get_stock(pb::GetStockRequest::default())
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed place serves a client again");
}

#[tokio::test]
async fn shutdown_completes_while_clients_hold_half_open_connections_and_streams() {
    let mut app = spawn_app_with(|c| {
        c.listen.handshake_timeout = Duration::from_secs(3600);
        c.listen.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let grpc = grpc_addr(&app);
    let mut held = vec![
        half_open(grpc, b"").await,
        half_open(grpc, &PREFACE[..10]).await,
        half_open(app.http_addr, b"GET /healthz HTTP/1.1\r\nHost:").await,
        half_open(app.http_addr, b"").await,
    ];
    let mut stream = app
        .inventory
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "shopify".into(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(NEVER, app.stop())
        .await
        .expect("shutdown completed while connections were held open");
    for s in &mut held {
        until_closed(s).await;
    }
    let ended = tokio::time::timeout(NEVER, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ended");
}

#[tokio::test]
async fn connections_that_never_sent_a_request_do_not_hold_shutdown_up_to_the_grace() {
    let mut app = spawn_app_with(|c| {
        c.listen.handshake_timeout = Duration::from_secs(3600);
        c.listen.shutdown_grace = Duration::from_secs(3600);
    })
    .await;
    let grpc = grpc_addr(&app);
    let mut held = vec![
        half_open(grpc, b"").await,
        half_open(grpc, &PREFACE[..10]).await,
        half_open(app.http_addr, b"").await,
    ];
    tokio::time::timeout(NEVER, app.stop())
        .await
        .expect("shutdown did not wait the grace for connections with no call in flight");
    for s in &mut held {
        until_closed(s).await;
    }
}

/// A test CA and the files of a certificate it signed for localhost and
/// 127.0.0.1.
struct Certs {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let certs = Certs { dir, ca };
        certs.issue("ca.pem");
        certs
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("cert.pem"),
            key: self.dir.path().join("key.pem"),
        }
    }

    /// A new CA (its certificate written to `ca_name`) and a server
    /// certificate it signed, written over the server's files.
    fn issue(&self, ca_name: &str) -> PathBuf {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "stockpool test CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let files = self.files();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        let ca = self.dir.path().join(ca_name);
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        ca
    }
}

async fn stock_over(url: &str, ca: Option<&Path>) -> anyhow::Result<usize> {
    let conn = Conn::open(url, None, ca).await?;
    let levels = conn
        .inventory()
        .get_stock(pb::GetStockRequest::default())
        .await?
        .into_inner()
        .levels;
    Ok(levels.len())
}

/// `GET path` over TLS on the HTTP port, trusting `ca`: the status line.
async fn https_get(addr: std::net::SocketAddr, path: &str, ca: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn both_listeners_serve_tls_and_a_reloaded_certificate_applies_to_new_connections() {
    let certs = Certs::new();
    let files = certs.files();
    let mut app = spawn_app_with(move |c| c.tls = Some(files)).await;
    let url = app.grpc_url.clone();
    assert!(url.starts_with("https://localhost:"), "{url}");

    assert_eq!(stock_over(&url, Some(&certs.ca)).await.unwrap(), 0);
    let untrusted = stock_over(&url, None).await;
    assert!(untrusted.is_err(), "a certificate no public CA signed");
    let plain = stock_over(&url.replace("https://", "http://"), None).await;
    assert!(plain.is_err(), "plaintext is not served on a TLS port");
    assert_eq!(
        https_get(app.http_addr, "/healthz", &certs.ca)
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );

    // New files (another CA), then a reload, as SIGHUP does.
    let second_ca = certs.issue("second-ca.pem");
    let tls = app.tls.clone().expect("the server has TLS");
    tls.reload().expect("the new files load");
    assert_eq!(stock_over(&url, Some(&second_ca)).await.unwrap(), 0);
    assert!(stock_over(&url, Some(&certs.ca)).await.is_err());
    assert!(https_get(app.http_addr, "/healthz", &second_ca)
        .await
        .is_ok());

    // A broken file is refused and the certificate in use stays.
    std::fs::write(certs.files().key, "not a key").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(stock_over(&url, Some(&second_ca)).await.unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_and_key_that_do_not_belong_together_are_refused_at_start() {
    let certs = Certs::new();
    let other = Certs::new();
    let files = TlsFiles {
        cert: certs.files().cert,
        key: other.files().key,
    };
    let err = stockpool::listen::Tls::load(files).unwrap_err();
    assert!(
        format!("{err:#}").contains("is not the key of the certificate"),
        "{err:#}"
    );
    let missing = stockpool::listen::Tls::load(TlsFiles {
        cert: certs.dir.path().join("nope.pem"),
        key: certs.files().key,
    })
    .unwrap_err();
    assert!(format!("{missing:#}").contains("nope.pem"), "{missing:#}");
}

#[tokio::test]
async fn the_cli_refuses_a_ca_file_for_a_plain_http_server() {
    let err = Conn::open("http://127.0.0.1:1", None, Some(Path::new("ca.pem")))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("--ca-file is for an https:// server"),
        "{err}"
    );
}

/// The `stockpool serve` process itself: SIGHUP reloads the certificate and
/// SIGTERM ends the process while a client holds a half-open connection.
#[tokio::test]
async fn the_server_process_reloads_its_certificate_on_sighup_and_exits_on_sigterm_despite_half_open_connections(
) {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("stockpool.toml");
    let files = certs.files();
    std::fs::write(
        &config,
        format!(
            "[server]\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             tls_cert = {:?}\ntls_key = {:?}\nshutdown_grace_s = 1\nhandshake_timeout_s = 3600\n",
            data.path().join("db"),
            files.cert,
            files.key,
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockpool"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let serving = tokio::time::timeout(NEVER, async {
        let mut line = String::new();
        loop {
            line.clear();
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
                .await
                .unwrap();
            assert!(!line.is_empty(), "the server exited before serving");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "stockpool serving" {
                return v["fields"].clone();
            }
        }
    })
    .await
    .expect("the server started");
    let grpc: std::net::SocketAddr = serving["grpc_addr"].as_str().unwrap().parse().unwrap();
    let url = format!("https://localhost:{}", grpc.port());
    assert_eq!(stock_over(&url, Some(&certs.ca)).await.unwrap(), 0);

    let pid = child.id().unwrap().to_string();
    let second_ca = certs.issue("second-ca.pem");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-HUP");
    let mut reloaded = false;
    for _ in 0..200 {
        if stock_over(&url, Some(&second_ca)).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded, "SIGHUP put the new certificate in use");

    let _held = half_open(grpc, b"\x16\x03\x01").await;
    signal("-TERM");
    let status = tokio::time::timeout(NEVER, child.wait())
        .await
        .expect("the process exited while a half-open connection was held")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
