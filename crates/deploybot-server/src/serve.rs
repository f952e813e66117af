//! The accept loop: HTTP/1.1 connections served by hyper, with graceful
//! shutdown.
//!
//! Written out rather than `axum::serve` for one setting: a connection's read
//! buffer is capped at 8 KiB. Idle keep-alive connections and held long-polls
//! are what a controller has most of (10,000 agents are 10,000 connections),
//! and hyper's buffer otherwise grows to 16 KiB each. Request heads are small
//! (GitHub's are about 1 KiB); bodies stream through the buffer and are
//! limited per route.

use std::future::Future;
use std::io;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;

use axum::Extension;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Layer;

/// hyper's smallest allowed cap.
const READ_BUFFER: usize = 8 * 1024;
/// A client must send a request's head within this, so slow or silent
/// clients cannot hold connections (and their buffers) forever. Long-polls
/// and streams are unaffected: their heads arrive at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before accepting again when accepting fails (e.g. out of
/// file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The answer to a connection over the cap, written straight to the
/// socket: a 503 in the API's error shape.
fn too_many_connections() -> Vec<u8> {
    let body = serde_json::to_string(&deploybot_wire::ErrorBody::new(
        "too_many_connections",
        "the controller has too many open connections; try again shortly",
    ))
    .unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
/// How long writing that answer may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Open connections, counted against the cap.
pub struct Connections {
    cap: usize,
    open: Gauge,
    refused: prometheus_client::metrics::counter::Counter,
}

impl Connections {
    pub fn new(cap: usize, metrics: &crate::metrics::Metrics) -> Self {
        Connections {
            cap,
            open: metrics.connections_open.clone(),
            refused: metrics.connections_refused.clone(),
        }
    }

    /// A slot for one more connection, unless the cap is reached.
    fn admit(&self) -> Option<Slot> {
        let open = self.open.inc();
        if open >= self.cap as i64 {
            self.open.dec();
            self.refused.inc();
            return None;
        }
        Some(Slot(self.open.clone()))
    }
}

/// One open connection; freed when dropped.
struct Slot(Gauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting and waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: crate::routes::Service,
    limits: Connections,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut connections = http1::Builder::new();
    connections
        .max_buf_size(READ_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = limits.admit() else {
            // Answered rather than left to run the process out of file
            // descriptors. (A TLS client would not read a plain answer:
            // it is only closed.)
            if tls.is_none() {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(app.clone()));
        let watcher = graceful.watcher();
        // Two tasks, not one with a branch: a task is as big as its largest
        // state, and a TLS connection's state is far bigger than a plain
        // one's (10,000 idle connections pay for the difference).
        match tls.clone() {
            None => {
                let connection = connections.serve_connection(TokioIo::new(stream), service);
                // A combinator, not `async move { watcher.watch(connection).await }`:
                // an async block keeps its captured connection next to the
                // future it was moved into, 760 bytes more per connection.
                tokio::spawn(watcher.watch(connection).map(move |ended| {
                    drop(slot);
                    log_connection_error(ended);
                }));
            }
            Some(tls) => {
                let connections = connections.clone();
                // The handshake runs in the connection's task, so a slow
                // client holds up no one else; it gets a deadline too. It
                // hands over the connection when done, so what it needed is
                // not kept for the connection's life.
                let handshake = async move {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => Some(
                            watcher
                                .watch(connections.serve_connection(TokioIo::new(stream), service)),
                        ),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %peer, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            None
                        }
                    }
                };
                tokio::spawn(handshake.then(OptionFuture::from).map(move |ended| {
                    drop(slot);
                    if let Some(ended) = ended {
                        log_connection_error(ended);
                    }
                }));
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Tells a connection over the cap to come back later, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let answered = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(&too_many_connections()).await?;
        stream.shutdown().await
    });
    let _ = answered.await;
}

fn log_connection_error(ended: Result<(), hyper::Error>) {
    if let Err(err) = ended {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}
