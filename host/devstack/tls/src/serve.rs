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

use crate::fault::FaultSwitch;

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
    serve_tls(listener, router, config, shutdown, None).await
}

/// Like [`serve_https`], with `faults` deciding what happens to each request (a middleware in
/// front of `router`) and whether connections are refused (the listener is closed and open
/// connections dropped while the switch says [`Fault::Refuse`](crate::Fault::Refuse), then
/// bound again on the same address).
pub async fn serve_https_with_faults(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: FaultSwitch,
) -> io::Result<()> {
    let router = faults.wrap(router);
    serve_tls(listener, router, config, shutdown, Some(faults)).await
}

async fn serve_tls(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: Option<FaultSwitch>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    serve_loop(listener, shutdown, faults, move |stream, watcher| {
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
    serve_loop(listener, shutdown, None, move |stream, watcher| {
        serve_connection(stream, router.clone(), watcher)
    })
    .await
}

async fn serve_loop<F, Fut>(
    mut listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: Option<FaultSwitch>,
    mut on_connection: F,
) -> io::Result<()>
where
    F: FnMut(tokio::net::TcpStream, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refusing = faults.as_ref().map(FaultSwitch::refusing);
    if let Some(f) = &faults {
        f.set_listening(true);
    }
    loop {
        let refuse = refusing.as_mut().is_some_and(|rx| *rx.borrow_and_update());
        if let (true, Some(f), Some(rx)) = (refuse, &faults, refusing.as_mut()) {
            // Connection refused: close the listener (open connections see the same switch
            // and drop themselves), wait for the switch to change, then listen again.
            let addr = listener.local_addr()?;
            drop(listener);
            f.set_listening(false);
            tokio::select! {
                biased;
                () = &mut shutdown => return drain(graceful).await,
                () = until(rx, false) => {}
            }
            listener = rebind(addr).await?;
            f.set_listening(true);
            continue;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = changed(refusing.as_mut()) => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Nagle only delays small responses such as token endpoint replies.
                    let _ = stream.set_nodelay(true);
                    let connection = on_connection(stream, graceful.watcher());
                    match &faults {
                        None => drop(tokio::spawn(connection)),
                        Some(f) => {
                            let guard = f.connection();
                            let mut rx = f.refusing();
                            tokio::spawn(async move {
                                tokio::select! {
                                    () = connection => {}
                                    () = until(&mut rx, true) => {}
                                }
                                drop(guard);
                            });
                        }
                    }
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
    drain(graceful).await
}

/// Resolves when the refusal switch is `value` (never if the switch is gone).
async fn until(rx: &mut tokio::sync::watch::Receiver<bool>, value: bool) {
    if rx.wait_for(|r| *r == value).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when the refusal switch changes (never without a switch).
async fn changed(rx: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Binds `addr` again after a refusal (retrying briefly while the port is still in use).
async fn rebind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..250 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| io::Error::other("rebind failed")))
}

async fn drain(graceful: GracefulShutdown) -> io::Result<()> {
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
