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
    /// The splice datapath, when the datapath mode splices.
    pub splice: Option<Arc<crate::datapath::splice::Splice>>,
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
        splice: Option<Arc<crate::datapath::splice::Splice>>,
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
            rule_names: config
                .rules
                .iter()
                .map(|r| r.name.as_str().into())
                .collect(),
            upstreams,
            metrics,
            access_log,
            splice,
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

/// The proxy's worker threads: each runs a single-threaded event loop with
/// its own listening socket on the virtual IP (`SO_REUSEPORT`), so a
/// connection lives on one thread from accept to close: no work stealing,
/// no cross-thread wake-ups, one timer wheel per thread. What they share
/// (load counters, connection pools, metrics) is behind atomics and short
/// locks.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Workers {
    /// Binds `count` listening sockets on `addr` and starts one worker per
    /// socket. Binding happens here, so an address problem is reported
    /// before anything runs.
    pub fn start(
        addr: std::net::SocketAddr,
        count: usize,
        shared: &Arc<Shared>,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            count
        };
        let listeners = (0..count)
            .map(|_| bind_reuseport(addr))
            .collect::<std::io::Result<Vec<_>>>()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let per_worker = max_connections.div_ceil(count).max(1);
        let mut threads = Vec::with_capacity(count);
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = Arc::clone(shared);
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            warn!("worker {i}: no event loop: {e}");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                warn!("worker {i}: {e}");
                                return;
                            }
                        };
                        tokio::select! {
                            () = serve(listener, shared, per_worker) => {}
                            _ = stopped.wait_for(|s| *s) => {}
                        }
                    });
                    // Dropping the runtime cancels this worker's connection
                    // tasks: their sockets close.
                })?;
            threads.push(thread);
        }
        Ok(Self { threads, stop })
    }

    /// Stops accepting, closes every client connection and waits for the
    /// threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A non-blocking listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`.
fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
