//! Serving an axum router over TLS (or plain TCP) with one task per connection.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished the TLS handshake by then is dropped, so idle or slow
/// sockets cannot pin tasks forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client must send a complete request head within this time (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections get this long to finish after shutdown is requested; then they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over HTTPS (HTTP/1.1) on `listener` until `shutdown` completes.
///
/// Each accepted connection gets its own task: the TLS handshake (bounded by
/// [`HANDSHAKE_TIMEOUT`]), then HTTP/1.1 with a header-read timeout. When `shutdown` resolves the
/// listener is closed, open connections are asked to finish and given a bounded time to do so.
/// Returns `Ok(())` after shutdown; per-connection failures are logged, never returned.
pub async fn serve_https(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    serve_loop(listener, shutdown, move |stream, watcher| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, router, watcher).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    })
    .await
}

/// Serves `router` over plain HTTP/1.1 on `listener` until `shutdown` completes (same
/// connection handling as [`serve_https`], without TLS).
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_loop(listener, shutdown, move |stream, watcher| serve_connection(stream, router.clone(), watcher))
        .await
}

async fn serve_loop<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut on_connection: F,
) -> io::Result<()>
where
    F: FnMut(tokio::net::TcpStream, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Nagle only delays small responses such as token endpoint replies.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(on_connection(stream, graceful.watcher()));
                }
                Err(error) => {
                    // Usually fd exhaustion: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after the drain timeout; dropping them");
    }
    Ok(())
}

async fn serve_connection<I>(io: I, router: Router, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| router.clone().oneshot(request));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
