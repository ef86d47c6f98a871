//! The two listeners: accepting TCP connections up to a limit, TLS when
//! configured (the certificate reloadable while serving), the timeouts that
//! close connections which never finish their handshake, HTTP/2 keepalive
//! pings, and graceful shutdown with a deadline.
//!
//! gRPC is served over HTTP/2 only, the side port over HTTP/1.1. A
//! connection that has not finished its TLS handshake, its HTTP/2 preface or
//! its HTTP/1 request headers within the handshake timeout is closed, so
//! half-open connections cannot pile up and hold file descriptors; an
//! HTTP/2 connection whose peer stops answering pings is closed too. At
//! shutdown a listener stops accepting, lets requests in flight finish, and
//! once the grace period is over closes whatever is still open.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on one listener; more are closed as soon as
    /// they are accepted.
    pub max_connections: usize,
    /// Time a new connection has to finish its TLS handshake and its HTTP/2
    /// preface (gRPC) or request headers (HTTP; also between requests).
    pub handshake_timeout: Duration,
    /// How often an HTTP/2 connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long shutdown waits for requests in flight before it closes the
    /// connections still open.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 only (ALPN `h2`).
    Grpc,
    /// HTTP/1.1 (ALPN `http/1.1`).
    Http,
}

/// What a listener serves each request with.
pub trait Serve:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<Self::Body>,
        Error = Self::Failure,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    type Body: http_body::Body<Data = Self::Data, Error = Self::BodyError> + Send + 'static;
    type Data: bytes::Buf + Send + 'static;
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;
    type Failure: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<S, B> Serve for S
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
    type Data = B::Data;
    type BodyError = B::Error;
    type Failure = S::Error;
}

/// Accepts and serves connections on `listener` with `service` until
/// `stop` is set, then drains as [`Limits::shutdown_grace`] allows. Returns
/// once every connection is closed.
pub async fn serve<S: Serve>(
    name: &'static str,
    listener: TcpListener,
    protocol: Protocol,
    service: S,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(|t| t.acceptor(protocol));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut last_refusal_logged: Option<Instant> = None;
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stopping) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: let some close.
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    if last_refusal_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(listener = name, max = limits.max_connections, "connection limit reached: closing new connections");
                        last_refusal_logged = Some(Instant::now());
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(
                    stream,
                    protocol,
                    service.clone(),
                    acceptor.clone(),
                    limits,
                    graceful.watcher(),
                    stop.clone(),
                    permit,
                ));
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            open,
            grace_s = limits.shutdown_grace.as_secs_f64(),
            "shutdown grace period over: closing the connections still open"
        );
    }
    // What is left never finished its handshake, or outlived the grace.
    connections.shutdown().await;
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One connection, from its handshake to its end.
#[allow(clippy::too_many_arguments)]
async fn connection<S: Serve>(
    stream: TcpStream,
    protocol: Protocol,
    service: S,
    acceptor: Option<TlsAcceptor>,
    limits: Limits,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let handshake = async {
        match acceptor {
            Some(acceptor) => acceptor
                .accept(stream)
                .await
                .map(|s| Stream::Tls(Box::new(s))),
            None => Ok(Stream::Plain(stream)),
        }
    };
    let stream = tokio::select! {
        done = tokio::time::timeout(limits.handshake_timeout, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake not finished in time: connection closed");
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    let ended = match protocol {
        Protocol::Grpc => {
            let preface = Preface::new(stream, limits.handshake_timeout);
            let greeted = preface.arrived.clone();
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.keepalive_interval)
                .keep_alive_timeout(limits.keepalive_timeout);
            let served = watcher.watch(builder.serve_connection(TokioIo::new(preface), service));
            // A connection still short of its preface at shutdown has no
            // call in flight: it is closed at once, not at the grace.
            let silent_at_shutdown = async {
                stopped(&mut stop).await;
                if greeted.load(Ordering::Acquire) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                ended = served => ended,
                _ = silent_at_shutdown => return,
            }
        }
        Protocol::Http => {
            let io = TokioIo::new(stream);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.handshake_timeout);
            watcher.watch(builder.serve_connection(io, service)).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A connection, in the clear or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The HTTP/2 connection preface a client sends first, in bytes.
const PREFACE_LEN: usize = 24;

/// A connection whose first [`PREFACE_LEN`] bytes must arrive before a
/// deadline; a read after it fails, which closes the connection. HTTP/2 has
/// no timeout of its own for a client that never finishes its preface.
struct Preface<S> {
    inner: S,
    /// Preface bytes still to come.
    left: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Set once the whole preface has arrived.
    arrived: Arc<AtomicBool>,
}

impl<S> Preface<S> {
    fn new(inner: S, within: Duration) -> Self {
        Preface {
            inner,
            left: PREFACE_LEN,
            deadline: Box::pin(tokio::time::sleep(within)),
            arrived: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Preface<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.left > 0 && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the HTTP/2 preface did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.left > 0 {
            this.left = this.left.saturating_sub(buf.filled().len() - before);
            if this.left == 0 {
                this.arrived.store(true, Ordering::Release);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Preface<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the server's certificate chain and private key are read from (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The server's certificate, shared by both listeners and replaced whole by
/// [`Tls::reload`]: connections already open keep theirs, new ones get the
/// new one.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; refuses a missing or unreadable file, a key that is
    /// not the certificate's, or a key type rustls cannot sign with.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Tls>> {
        let key = certified_key(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Reads the files again (SIGHUP). On an error the certificate in use
    /// is kept.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    fn acceptor(self: &Arc<Self>, protocol: Protocol) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = match protocol {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http => vec![b"http/1.1".to_vec()],
        };
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Tls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified_key(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let cert = files.cert.display();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate {cert}"))?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file {cert} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS private key {}", files.key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("the TLS private key {}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().with_context(|| {
        format!(
            "the TLS private key {} is not the key of the certificate {cert}",
            files.key.display()
        )
    })?;
    Ok(certified)
}
