//! turmoil's simulated TCP behind the interfaces the production network code takes: a hyper
//! connector for the clients (`ApiClient`, `LlmClient`) and an axum listener for the servers
//! (the API, the mock provider).
//!
//! Owns only the adaptation between turmoil's `TcpStream`/`TcpListener` and hyper's and
//! axum's traits, and `LocalExecutor`, which keeps hyper's connection tasks on the host's
//! `LocalSet`. It never adds behaviour of its own (no retries, no timeouts, no buffering):
//! whatever the network does reaches the production code unchanged.

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Opens connections over turmoil's network, resolving host names through its DNS.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilConnector;

/// A connection opened by `TurmoilConnector`, as hyper reads and writes it.
pub struct TurmoilStream(TokioIo<turmoil::net::TcpStream>);

impl tower_service::Service<Uri> for TurmoilConnector {
    type Response = TurmoilStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TurmoilStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other(format!("{uri}: no host")))?.to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(TurmoilStream(TokioIo::new(stream)))
        })
    }
}

impl Connection for TurmoilStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TurmoilStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TurmoilStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// turmoil's listener, as `axum::serve` takes it.
pub struct TurmoilListener(pub turmoil::net::TcpListener);

impl TurmoilListener {
    /// Binds `port` on every address of the current simulated host.
    pub async fn bind(port: u16) -> std::io::Result<TurmoilListener> {
        Ok(TurmoilListener(turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?))
    }
}

impl axum::serve::Listener for TurmoilListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Spawns hyper's connection tasks on the current `LocalSet` instead of the runtime.
///
/// Why: when turmoil crashes a host it drops the host's runtime, and tokio drops the
/// runtime's own tasks shard by shard, sharded by task id, a counter global to the process. A
/// connection dropped sends its FIN over the simulated network, so with runtime tasks the
/// order of those messages (and of the latency draws behind them) would depend on how many
/// tasks the process spawned before; a `LocalSet` drops its tasks in the order they were
/// spawned, so the same seed gives the same world.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// Serves `router` on `listener`, each connection on its own task of the current
/// `LocalSet` (see `LocalExecutor` for why not `axum::serve`). Returns only if accepting fails.
pub async fn serve_local(listener: TurmoilListener, router: axum::Router) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.0.accept().await?;
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::task::spawn_local(async move {
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API connection ended");
            }
        });
    }
}
