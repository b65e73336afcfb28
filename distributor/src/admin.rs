//! The admin endpoint: `GET /metrics` (Prometheus text format) and
//! `GET /healthz`. One request per connection; it is for scrapers and
//! people, not for load.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::debug;

use crate::{
    http::{Limits, Parsed, parse_request_head},
    track::Metrics,
    upstream::Upstreams,
};

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, upstreams: Arc<Upstreams>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let upstreams = Arc::clone(&upstreams);
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(Duration::from_secs(10), one(stream, &metrics, &upstreams))
                    .await
            {
                debug!(%peer, "admin request: {e}");
            }
        });
    }
}

async fn one(mut stream: TcpStream, metrics: &Metrics, upstreams: &Arc<Upstreams>) {
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        match parse_request_head(&buf, &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => break head,
            Ok(Parsed::Partial) => {}
            Err(_) => return reply(&mut stream, 400, "text/plain", "bad request\n").await,
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let path = head.target.split('?').next().unwrap_or("");
    match (head.method.as_str(), path) {
        ("GET", "/metrics") => {
            let body = metrics.render(upstreams);
            reply(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await;
        }
        ("GET", "/healthz") => reply(&mut stream, 200, "text/plain", "ok\n").await,
        _ => reply(&mut stream, 404, "text/plain", "try /metrics\n").await,
    }
}

async fn reply(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
