//! The API's HTTP server: the accept loop, TLS, and the bounds that keep a client from
//! holding the API.
//!
//! `axum::serve` has no header or request timeouts and no connection cap: a few thousand
//! sockets that connect and send nothing would keep `wvs adm` out. Here every connection
//! has [`API_HEADER_TIMEOUT_MS`] to send a request's header (also between keep-alive
//! requests) and every request [`API_REQUEST_TIMEOUT_MS`] to be answered; at most
//! [`API_MAX_CONNS`] are open, and when a new one comes at the cap the oldest connection that
//! has no request in progress is closed to make room for it (an idle one costs its client a
//! reconnect; a refused one could be the operator's).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::rustls;
use tower::ServiceExt;

use crate::consts::{API_HEADER_TIMEOUT_MS, API_MAX_CONNS, API_REQUEST_TIMEOUT_MS};

/// The address a request arrived at (a request extension): `/metrics` is open on a loopback
/// address only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub SocketAddr);

/// Set on a connection once a request on it carried the right token: the cap evicts such
/// connections last.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authed(pub Arc<std::sync::atomic::AtomicBool>);

impl Authed {
    /// Mark the connection.
    pub fn set(&self) {
        self.0.store(true, Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's header, from the connection's start or the last answer.
    pub header_timeout: Duration,
    /// Time to answer a request, its body's upload included.
    pub request_timeout: Duration,
    /// Most connections open at once.
    pub max_conns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(API_HEADER_TIMEOUT_MS),
            request_timeout: Duration::from_millis(API_REQUEST_TIMEOUT_MS),
            max_conns: API_MAX_CONNS,
        }
    }
}

/// The server's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections refused at the cap (every open one had a request in progress).
    pub refused: AtomicU64,
    /// Requests answered 408 for taking longer than the request timeout.
    pub timed_out: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub tls_failed: AtomicU64,
}

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the kind needed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and the key do not go together, or rustls refused them.
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS server configuration from a PEM certificate chain and a PEM private key.
pub(crate) fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file_err = |p: &Path, reason: String| TlsError::File {
        path: p.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// One open connection, as the cap sees it.
struct Slot {
    /// Requests in progress on it.
    busy: Arc<AtomicUsize>,
    /// A request on it carried the token.
    authed: Authed,
    /// Told when the connection is to close to make room.
    close: Arc<Notify>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    /// By age: the first is the oldest.
    open: BTreeMap<u64, Slot>,
}

/// A connection's slot, taken.
struct Admitted {
    id: u64,
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
    authed: Authed,
}

impl Slots {
    /// A slot for a new connection, at most `max_conns` open. At the cap a connection
    /// goes: the oldest idle one that never showed the token, else the oldest idle one.
    /// Connections that never showed it may hold every slot but one: the last goes to a
    /// new connection only when all of them are busy, and the next new one may evict it
    /// unless it showed the token. `None`: every one open is busy (refused).
    fn admit(&mut self, max_conns: usize, stats: &ServerStats) -> Option<Admitted> {
        let unauthed = self.open.values().filter(|v| !v.authed.get()).count();
        let full = self.open.len() >= max_conns;
        if full || unauthed + 1 >= max_conns {
            let oldest_idle = |authed: bool| {
                self.open
                    .iter()
                    .find(|(_, v)| v.busy.load(Relaxed) == 0 && v.authed.get() == authed)
                    .map(|(k, _)| *k)
            };
            let victim = oldest_idle(false).or_else(|| full.then(|| oldest_idle(true)).flatten());
            match victim.and_then(|k| self.open.remove(&k)) {
                Some(victim) => {
                    victim.close.notify_one();
                    stats.evicted.fetch_add(1, Relaxed);
                }
                None if !full => {}
                None => {
                    stats.refused.fetch_add(1, Relaxed);
                    return None;
                }
            }
        }
        let id = self.next;
        self.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        let authed = Authed::default();
        self.open.insert(
            id,
            Slot {
                busy: busy.clone(),
                authed: authed.clone(),
                close: close.clone(),
            },
        );
        Some(Admitted {
            id,
            busy,
            close,
            authed,
        })
    }
}

/// Serve `app` on `listener` until the process stops.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<ServerStats>,
) -> std::io::Result<()> {
    let slots = Arc::new(parking_lot::Mutex::new(Slots::default()));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut warned_at: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors (or a connection reset before it was taken):
                // the listener is fine, so wait a moment and go on.
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("the API cannot accept a connection: {e}");
                    warned_at = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let Some(Admitted {
            id,
            busy,
            close,
            authed,
        }) = slots.lock().admit(limits.max_conns, &stats)
        else {
            tracing::debug!(%peer, "API connection refused: every one open is busy");
            continue;
        };
        stats.open.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            limits,
            local,
            busy,
            close,
            authed,
            stats: stats.clone(),
        };
        let slots = slots.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stats = conn.stats.clone();
            match tls {
                None => conn.serve(stream).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
                    match hs.await {
                        Ok(Ok(s)) => conn.serve(s).await,
                        Ok(Err(e)) => {
                            stats.tls_failed.fetch_add(1, Relaxed);
                            tracing::debug!(%peer, "API TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            stats.tls_failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            slots.lock().open.remove(&id);
            stats.open.fetch_sub(1, Relaxed);
        });
    }
}

/// What serving one connection needs.
struct Conn {
    app: Router,
    limits: Limits,
    local: SocketAddr,
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
    authed: Authed,
    stats: Arc<ServerStats>,
}

/// Counts a request in progress for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Conn {
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            app,
            limits,
            local,
            busy,
            close,
            authed,
            stats,
        } = self;
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            let stats = stats.clone();
            busy.fetch_add(1, Relaxed);
            let guard = Busy(busy.clone());
            req.extensions_mut().insert(LocalAddr(local));
            req.extensions_mut().insert(authed.clone());
            async move {
                let _guard = guard;
                let answer = tokio::time::timeout(limits.request_timeout, app.oneshot(req)).await;
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        stats.timed_out.fetch_add(1, Relaxed);
                        timed_out(limits.request_timeout)
                    }
                })
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("API connection ended: {e}");
                }
            }
            _ = close.notified() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
            }
        }
    }
}

fn timed_out(limit: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(super::ErrorBody {
            error: format!(
                "the request was not answered within {} s (a body too slow to arrive?)",
                limit.as_secs()
            ),
        }),
    )
        .into_response()
}
