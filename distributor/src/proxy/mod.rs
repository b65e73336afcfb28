//! The per-request proxy: accept client connections on the virtual IP, and
//! for every request on each of them (keep-alive, pipelined, HTTP/1.0 and
//! 1.1), parse it, route it by its layer-7 information, hand it to a pooled
//! backend connection and relay the response (claims 1-12, 16-26, 30-33).
//!
//! Requests on one client connection are served strictly in order: a
//! pipelined request waits, already buffered, until the response before it
//! has been sent. This keeps responses in request order without reordering
//! buffers, and it is the invariant the kernel splice builds on (one region
//! in flight per client connection).

mod conn;
mod message;
mod respond;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use crate::{
    config::{Config, TimeoutsConfig},
    http::{ChunkLimits, Limits},
    rules::RuleSet,
    track::{AccessLog, Metrics},
    upstream::Upstreams,
};

/// What every connection task shares; built once at start.
#[derive(Debug)]
pub struct Shared {
    pub limits: Limits,
    pub max_body: u64,
    pub timeouts: Timeouts,
    pub rules: RuleSet,
    /// The rules' names, by index, for request records.
    pub rule_names: Vec<Arc<str>>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
}

/// `[timeouts]` as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client_head: Duration,
    pub client_idle: Duration,
    pub client_io: Duration,
    pub connect: Duration,
    pub response_head: Duration,
    pub response_body_idle: Duration,
    pub backend_idle: Duration,
}

impl From<&TimeoutsConfig> for Timeouts {
    fn from(t: &TimeoutsConfig) -> Self {
        let ms = TimeoutsConfig::ms;
        Self {
            client_head: ms(t.client_head_ms),
            client_idle: ms(t.client_idle_ms),
            client_io: ms(t.client_io_ms),
            connect: ms(t.connect_ms),
            response_head: ms(t.response_head_ms),
            response_body_idle: ms(t.response_body_idle_ms),
            backend_idle: ms(t.backend_idle_ms),
        }
    }
}

impl Shared {
    /// Builds the shared state of a validated configuration.
    pub fn new(
        config: &Config,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Result<Self, crate::rules::RuleError> {
        let l = &config.limits;
        Ok(Self {
            limits: Limits {
                max_request_line: l.max_request_line,
                max_head_bytes: l.max_head_bytes,
                max_headers: l.max_headers,
            },
            max_body: l.max_body_bytes,
            timeouts: Timeouts::from(&config.timeouts),
            rules: RuleSet::compile(&config.rules)?,
            rule_names: config.rules.iter().map(|r| r.name.as_str().into()).collect(),
            upstreams,
            metrics,
            access_log,
        })
    }

    fn chunk_limits(&self) -> ChunkLimits {
        ChunkLimits {
            max_payload_bytes: self.max_body,
            ..ChunkLimits::default()
        }
    }
}

static NEXT_CLIENT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts client connections until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // Waiting for a slot before accepting leaves excess clients in the
        // kernel's accept queue instead of opening sockets we cannot serve.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = NEXT_CLIENT_CONN.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            shared.metrics.client_connections.inc();
            conn::serve(&shared, stream, peer, id).await;
            shared.metrics.client_connections.dec();
            debug!(conn = id, %peer, "client connection closed");
            drop(slot);
        });
    }
}

/// Closes idle backend connections past their timeout, once a second.
pub async fn expire_idle(upstreams: Arc<Upstreams>, timeout: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for s in upstreams.servers() {
            s.conns.expire(timeout);
        }
    }
}
