//! Serving the HTTP API on a socket: at most so many connections at once, each given a
//! deadline to send its request's headers and one for the whole request, and a graceful stop.
//!
//! Why not `axum::serve`: it takes every connection the kernel hands it and waits for each
//! one's headers without end, so a few clients that open sockets and send half a request
//! (no token needed) held every file descriptor, and `/v1/health` and every request after it
//! failed (`accept error: Too many open files`). Here a connection past the cap waits in the
//! kernel's backlog until one ends; one that has not sent its headers in time is closed, and
//! a request not answered in time (a body that never comes) gets 408 and its connection
//! closed. HTTP/1.1 only: HTTP/2's detection read the first bytes with no deadline, and no
//! client of the API needs it. A client trickling a byte at a time within the deadlines can
//! still hold a slot for their length: beyond loopback, the reverse proxy in front (TLS,
//! SECURITY.md) sets its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; the next waits until one ends.
    pub connections: usize,
    /// How long a request's headers may take to arrive (from the connection's start, or from
    /// the previous response on a kept-alive one).
    pub header_read: Duration,
    /// How long a request may take from its headers to its answer, its body's upload
    /// included: past it, 408 and the connection closed.
    pub request: Duration,
    /// How long a stop waits for the requests in flight.
    pub drain: Duration,
}

impl Default for ConnectionLimits {
    /// 512 connections (under the usual soft limit of 1,024 descriptors, the rest stays
    /// for SQLite, the outbox file and the delivery clients), headers within 10 s, a request
    /// within 120 s (a 20 MB import at about 1.5 Mbit/s), 30 s to drain.
    fn default() -> Self {
        ConnectionLimits {
            connections: 512,
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(120),
            drain: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves, then lets the requests in flight
/// finish (up to `limits.drain`). A failed accept is logged and retried, so serving itself
/// never fails.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // Every request under the request deadline; the router is cloned per request, as
    // `oneshot` takes it.
    let deadline = limits.request;
    let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let answer = router.clone().oneshot(request.map(axum::body::Body::new));
        async move {
            match tokio::time::timeout(deadline, answer).await {
                Ok(answered) => answered,
                // `Connection: close`: the rest of a body that never came is not waited for
                // on this connection either.
                Err(_) => Ok((
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    [(axum::http::header::CONNECTION, "close")],
                    "the request did not complete in time",
                )
                    .into_response()),
            }
        }
    });
    let mut stop = std::pin::pin!(stop);
    loop {
        // A slot first: past the cap, connections wait in the kernel's backlog, not here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken: say so,
                    // and try again shortly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection that ends in an error (its headers too late, a reset) is the
            // client's business: nothing to log at the server's level.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {} s: stopping anyway",
            limits.drain.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server of one route on a free port, with `limits`; stops when the sender drops.
    async fn server(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let router = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route(
                "/upload",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// A connection to the server at `addr`, `sent` written on it.
    async fn connect(addr: std::net::SocketAddr, sent: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(sent)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        stream
    }

    /// What the server sends until it closes the connection, or None if it is still open
    /// after 20 s.
    async fn until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
            .await
            .ok()
            .map(|_| String::from_utf8_lossy(&rest).into_owned())
    }

    /// Sends a whole request and reads the answer to its end (the connection closes).
    async fn health(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    /// A connection that sends half its headers is closed once their deadline passes (it
    /// held a descriptor for as long as the client liked).
    #[tokio::test]
    async fn hostile_half_sent_headers_are_cut_off() {
        let limits = ConnectionLimits {
            header_read: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let (addr, _stop) = server(limits).await;
        let mut slow = connect(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        assert!(
            until_closed(&mut slow).await.is_some(),
            "the half-sent request was still open after 20 s"
        );
        assert!(health(&mut connect(addr, b"").await).await.ends_with("ok"));
    }

    /// A connection that sends nothing at all is closed once the headers' deadline passes
    /// (HTTP/2's detection read waited without one), and a request whose body never comes
    /// gets 408 and its connection closed once the request's deadline passes.
    #[tokio::test]
    async fn hostile_silent_connections_and_missing_bodies_are_cut_off() {
        let limits = ConnectionLimits {
            header_read: Duration::from_millis(300),
            request: Duration::from_millis(500),
            ..ConnectionLimits::default()
        };
        let (addr, _stop) = server(limits).await;
        let mut silent = connect(addr, b"").await;
        assert!(
            until_closed(&mut silent).await.is_some(),
            "a silent connection was still open after 20 s"
        );
        let mut stalled = connect(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc",
        )
        .await;
        let Some(answer) = until_closed(&mut stalled).await else {
            panic!("a request without its body was still open after 20 s")
        };
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(health(&mut connect(addr, b"").await).await.ends_with("ok"));
    }

    /// Past the cap a connection waits until one ends, then is served: idle sockets can fill
    /// the slots, not the process's descriptors.
    #[tokio::test]
    async fn hostile_connections_past_the_cap_wait_for_a_slot() {
        let limits = ConnectionLimits {
            connections: 1,
            header_read: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let (addr, _stop) = server(limits).await;
        let idle = connect(addr, b"").await;
        // Let the server take the idle connection into the one slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = connect(addr, b"").await;
        let waiting = tokio::spawn(async move { health(&mut next).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "served past the cap");
        drop(idle);
        let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .unwrap_or_else(|_| panic!("never served after the slot freed"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.ends_with("ok"), "{answer}");
    }
}
