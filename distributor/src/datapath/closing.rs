//! Closing a socket whose segments the datapath translates.
//!
//! Once bytes were spliced on a connection, the gateway socket's sequence
//! numbers (C's, or S's acknowledgements) differ from the wire's, and its
//! peer's last segments (the ACK of our FIN, the peer's own FIN) must still
//! be translated when they arrive, one round trip after the close. If the
//! flow entry went with the file descriptor, they would arrive untranslated:
//! an ACK beyond what the socket sent is discarded, so it would sit in
//! LAST-ACK or FIN-WAIT-1, resending a FIN the peer can no longer accept,
//! for minutes (holding the virtual IP's port on C's side).
//!
//! So a translated socket is handed here at close with its entry guard:
//! this keeps a duplicate of its descriptor and the entry until the kernel
//! has finished the close (state CLOSE or `TIME_WAIT`), then closes the
//! descriptor and drops the entry, in that order. A peer that stops
//! answering ends the wait: once the socket has nothing queued, after
//! [`LINGER`] without an acknowledgement; while bytes are still queued (a
//! relayed response that ends with `Connection: close` can leave
//! megabytes behind for a slow reader, every one of them sent translated),
//! after the drain limit, the connection's write timeout (`client_io_ms`).
//!
//! A socket whose region is still in flight is aborted instead (RST): a FIN
//! there would sit at the end of what was spliced so far and be taken by the
//! client as the end of a response that is not complete. The RST leaves at
//! once, while the entry still translates it, which puts it where the client
//! expects it: a disconnect (`connect` to `AF_UNSPEC`, what a zero linger
//! does at the last close). Waiting for the last close instead would race
//! the entry's removal: the caller's descriptor may close after this one.

use std::{
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{
    lock,
    sockets::{self, tcp_state},
};

/// How long a closing socket with nothing queued keeps its flow entry
/// without an acknowledgement: many round trips, and short enough for a
/// stop to wait.
pub const LINGER: Duration = Duration::from_secs(3);
/// How often lingering sockets are looked at.
const POLL: Duration = Duration::from_millis(10);
/// Closes cut short at stop that get a log line each (the count covers
/// all).
const CUT_LOGGED: usize = 16;

/// What a socket's flow entry needs when the control plane is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Nothing was ever translated: close now, drop the entry now.
    Plain,
    /// Bytes were spliced: FIN now, the entry until the close is over.
    Linger,
    /// A region is in flight: RST now, translated; then the entry goes.
    Abort,
}

/// A socket being closed and the guard of its flow entry.
struct Closing {
    /// Dropped first: the last descriptor of the socket (`None`: it could
    /// not be duplicated).
    fd: Option<OwnedFd>,
    /// Dropped second: removes the flow entry.
    _entry: Box<dyn Send>,
    /// The peer's progress (`tcpi_bytes_acked`) when last looked at.
    acked: u64,
    /// When it last moved (or the close began).
    progress_at: Instant,
    /// (local, peer), for the log of a close cut short at stop.
    addrs: Option<(SocketAddr, SocketAddr)>,
}

impl Closing {
    /// Whether the close is over, or its peer stopped answering (see the
    /// module's text; `drain`: the limit while bytes are queued).
    fn finished(&mut self, now: Instant, drain: Duration) -> bool {
        let Some(fd) = &self.fd else {
            return now >= self.progress_at + LINGER;
        };
        let Ok(info) = sockets::info(fd) else {
            return true;
        };
        if matches!(info.state, tcp_state::CLOSE | tcp_state::TIME_WAIT) {
            return true;
        }
        if info.bytes_acked != self.acked {
            self.acked = info.bytes_acked;
            self.progress_at = now;
        }
        let queued = info.unacked > 0 || info.notsent > 0;
        now >= self.progress_at + if queued { drain } else { LINGER }
    }
}

/// Resets the connection now (`tcp_disconnect`: a RST for a synchronised
/// state), leaving the socket closed and its descriptors open.
#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_UNSPEC and the 16-byte sockaddr length fit their C types"
)]
fn disconnect(stream: &TcpStream) -> std::io::Result<()> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid `sockaddr` of the length given, on a descriptor the
    // stream keeps open for the call.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            &raw const unspec,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sockets whose close is in progress (see the module's text).
pub struct Closer {
    list: Mutex<Vec<Closing>>,
    added: tokio::sync::Notify,
    /// How long a socket with bytes queued may go without an
    /// acknowledgement.
    drain: Duration,
}

impl Closer {
    /// `drain`: how long a closing socket with bytes still queued may go
    /// without an acknowledgement before its entry goes.
    pub fn new(drain: Duration) -> Self {
        Self {
            list: Mutex::default(),
            added: tokio::sync::Notify::new(),
            drain,
        }
    }

    /// Closes `stream` as `how` says; `entry` is the guard of its flow
    /// entry. The caller drops `stream` afterwards.
    pub fn close(&self, stream: &TcpStream, entry: Box<dyn Send>, how: Close) {
        if how == Close::Abort {
            if let Err(e) = disconnect(stream) {
                debug!("aborting: {e}");
            }
            // `entry` drops here, after the RST left.
            return;
        }
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
        if how == Close::Plain {
            return;
        }
        // Without a descriptor of its own (EMFILE), the entry still stays
        // for LINGER: the socket cannot be asked when its close is over.
        let fd = stream
            .as_fd()
            .try_clone_to_owned()
            .inspect_err(|e| debug!("closing without watching the socket: {e}"))
            .ok();
        let acked = fd
            .as_ref()
            .and_then(|fd| sockets::info(fd).ok())
            .map_or(0, |i| i.bytes_acked);
        let addrs = stream.local_addr().ok().zip(stream.peer_addr().ok());
        lock(&self.list).push(Closing {
            fd,
            _entry: entry,
            acked,
            progress_at: Instant::now(),
            addrs,
        });
        self.added.notify_one();
    }

    /// Ends the closes that are over (all of them with `force`); `true`
    /// when some are still in progress.
    fn sweep(&self, force: bool) -> bool {
        let now = Instant::now();
        let done: Vec<Closing> = lock(&self.list)
            .extract_if(.., |c| force || c.finished(now, self.drain))
            .collect();
        // Each drops its descriptor, then its entry.
        drop(done);
        !lock(&self.list).is_empty()
    }

    /// Runs for the life of the process.
    pub async fn run(&self) {
        loop {
            if self.sweep(false) {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = self.added.notified() => {}
                }
            } else {
                self.added.notified().await;
            }
        }
    }

    /// At stop: waits until every close in progress is over (at most
    /// [`LINGER`] and a poll, whatever is queued), then ends whatever is
    /// left. Returns how many were still open.
    pub async fn finish(&self) -> usize {
        let deadline = Instant::now() + LINGER + POLL;
        while self.sweep(false) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let cut = std::mem::take(&mut *lock(&self.list));
        for c in cut.iter().take(CUT_LOGGED) {
            let info = c.fd.as_ref().and_then(|fd| sockets::info(fd).ok());
            warn!(
                local = ?c.addrs.map(|a| a.0),
                peer = ?c.addrs.map(|a| a.1),
                state = info.map(|i| tcp_state::name(i.state)),
                unacked = info.map(|i| i.unacked),
                notsent = info.map(|i| i.notsent),
                since_progress_ms = c.progress_at.elapsed().as_millis(),
                "close cut short at stop"
            );
        }
        // Each drops its descriptor, then its entry.
        cut.len()
    }
}
