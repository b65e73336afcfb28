//! Request tracking (claims 12 and 26): one record per request, written to
//! the access log and folded into the Prometheus metrics.

pub mod metrics;

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

pub use metrics::Metrics;

/// How the response bytes reached the client.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponsePath {
    /// Copied through the control plane.
    Relay,
    /// Spliced by the eBPF datapath (the control plane never saw the bytes).
    Splice,
    /// Answered by distributor itself (errors: 4xx/5xx it generated).
    Local,
}

/// Everything known about one request and its response.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RequestRecord {
    /// Unix time (ms) the request's first byte arrived.
    pub ts_ms: u64,
    pub client: Option<SocketAddr>,
    /// Client connection id (unique per process).
    pub conn: u64,
    /// 1 for the first request on the connection.
    pub req: u64,
    pub method: String,
    pub path: String,
    /// The rule that matched; `None`: no rule, default pool.
    pub rule: Option<Arc<str>>,
    pub pool: Option<Arc<str>>,
    pub server: Option<Arc<str>>,
    pub backend_conn: Option<u64>,
    /// Whether the backend connection came from the idle pool.
    pub reused: Option<bool>,
    /// Connection attempts that failed before this one.
    pub connect_failures: u32,
    /// Whether the request was sent again on a fresh connection after a
    /// pooled one turned out closed.
    pub retried: bool,
    pub status: u16,
    /// Request bytes received (head + body).
    pub bytes_in: u64,
    /// Response bytes sent to the client (head + body).
    pub bytes_out: u64,
    /// Milliseconds from the first byte to: head and body received, sent to
    /// the backend, first response byte, last byte sent.
    pub t_received_ms: Option<f64>,
    pub t_sent_ms: Option<f64>,
    pub t_first_byte_ms: Option<f64>,
    pub t_done_ms: Option<f64>,
    pub path_taken: Option<ResponsePath>,
    /// Why a response was relayed rather than spliced (a datapath reason
    /// such as `relay-transfer-encoding`, or a control-plane one such as
    /// `datapath-off`).
    pub path_reason: Option<&'static str>,
    /// Why the response ended abnormally, if it did.
    pub error: Option<String>,
}

/// Milliseconds as a float with microsecond precision.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Unix time in milliseconds.
#[must_use]
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The access log: records go through a channel to one writer task, so a
/// slow disk never stalls a connection (records are dropped, and counted,
/// when the channel is full).
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<RequestRecord>>,
}

#[derive(Debug, thiserror::Error)]
#[error("access_log.path {path}: {source}")]
pub struct AccessLogError {
    path: String,
    source: std::io::Error,
}

impl AccessLog {
    /// Starts the writer for `path` (`-` stdout, `off`, or a file).
    pub fn start(path: &str) -> Result<Self, AccessLogError> {
        if path == "off" {
            return Ok(Self { tx: None });
        }
        let mut out: Box<dyn std::io::Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError {
                        path: path.to_owned(),
                        source,
                    })?,
            )
        };
        let (tx, mut rx) = mpsc::channel::<RequestRecord>(65_536);
        // A blocking thread: file and stdout writes block.
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Some(rec) = rx.blocking_recv() {
                    write_line(&mut buf, &rec);
                    // Drain what else is queued, then write once.
                    while let Ok(rec) = rx.try_recv() {
                        write_line(&mut buf, &rec);
                        if buf.len() > 60 * 1024 {
                            break;
                        }
                    }
                    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                        warn!("access log write failed");
                    }
                    buf.clear();
                }
            })
            .map_err(|source| AccessLogError {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { tx: Some(tx) })
    }

    /// Queues a record; never waits.
    pub fn log(&self, rec: RequestRecord, metrics: &Metrics) {
        if let Some(tx) = &self.tx
            && tx.try_send(rec).is_err()
        {
            metrics.access_log_dropped.inc();
        }
    }
}

fn write_line(buf: &mut Vec<u8>, rec: &RequestRecord) {
    if serde_json::to_writer(&mut *buf, rec).is_ok() {
        buf.push(b'\n');
    }
}
