//! Keep-alive connections to one server: reuse an idle one if there is one,
//! else open one, within limits (claims 10 and 24).
//!
//! An idle connection the backend closed is caught at checkout (a
//! non-blocking read sees EOF); the race where it closes just as we send is
//! handled by the caller, which retries once on a fresh connection when no
//! byte of the response arrived.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::config::BackendConnectionsConfig;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: timed out after {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("{addr}: all {max} connections busy for {after:?}")]
    Exhausted {
        addr: SocketAddr,
        max: usize,
        after: Duration,
    },
}

/// A connection to a backend, checked out of its pool.
#[derive(Debug)]
pub struct BackendConn {
    pub stream: TcpStream,
    /// Unique per process, for request records.
    pub id: u64,
    /// Whether it came from the idle list (and so may have been closed by
    /// the backend in the meantime).
    pub reused: bool,
    /// Requests this connection carried before the current one.
    pub served: u64,
    /// Its flow entry in the splice datapath, once it carried a request
    /// whose response could be spliced.
    pub splice: Option<crate::datapath::splice::BackendReg>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        // A connection the datapath translated closes through it.
        if let Some(reg) = self.splice.take() {
            reg.close(&self.stream);
        }
    }
}

struct Idle {
    conn: BackendConn,
    since: Instant,
}

/// The connections of one server.
pub struct ConnPool {
    addr: SocketAddr,
    idle: Mutex<Vec<Idle>>,
    /// One permit per open connection, busy or idle.
    permits: Arc<Semaphore>,
    max_open: usize,
    max_idle: usize,
    opened: AtomicU64,
    reused: AtomicU64,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("addr", &self.addr)
            .field("idle", &self.idle_count())
            .field("open", &self.open_count())
            .finish_non_exhaustive()
    }
}

impl ConnPool {
    pub fn new(addr: SocketAddr, limits: &BackendConnectionsConfig) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(limits.max_per_server)),
            max_open: limits.max_per_server,
            max_idle: limits.max_idle_per_server,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding this lock cannot leave the list
        // inconsistent (push/pop only), so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection that still looks open, else a new one. `fresh`
    /// skips the idle list (the retry after an idle-close race).
    pub async fn checkout(
        &self,
        fresh: bool,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<BackendConn, ConnectError> {
        if !fresh {
            while let Some(idle) = self.lock().pop() {
                if idle.since.elapsed() < idle_timeout && still_open(&idle.conn.stream) {
                    let mut conn = idle.conn;
                    conn.reused = true;
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                // Closed by the backend, or stale: dropping it closes it and
                // frees its permit.
            }
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout(connect_timeout, Arc::clone(&self.permits).acquire_owned()).await
        else {
            return Err(ConnectError::Exhausted {
                addr: self.addr,
                max: self.max_open,
                after: connect_timeout,
            });
        };
        let stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(ConnectError::Io {
                        addr: self.addr,
                        source,
                    });
                }
                Err(_) => {
                    return Err(ConnectError::Timeout {
                        addr: self.addr,
                        after: connect_timeout,
                    });
                }
            };
        // Requests are small and written whole: no Nagle delay.
        let _ = stream.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(BackendConn {
            stream,
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            reused: false,
            served: 0,
            splice: None,
            _permit: permit,
        })
    }

    /// Returns a connection whose last response was read completely and
    /// that the backend keeps open.
    pub fn checkin(&self, mut conn: BackendConn) {
        conn.served += 1;
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections older than `timeout`.
    pub fn expire(&self, timeout: Duration) {
        self.lock().retain(|i| i.since.elapsed() < timeout);
    }

    #[must_use]
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    #[must_use]
    pub fn open_count(&self) -> usize {
        self.max_open - self.permits.available_permits()
    }

    /// Connections opened since start.
    #[must_use]
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Checkouts served by an idle connection since start.
    #[must_use]
    pub fn reused_total(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

/// Whether an idle connection is still open: a non-blocking read must find
/// nothing to read. EOF means the backend closed it; data means it sent
/// something unasked, so it cannot be trusted with a new request either.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
