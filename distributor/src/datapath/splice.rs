//! The control plane's side of the splice datapath: it registers every
//! client and backend connection in the flow maps, arms a region before a
//! request is written to its backend connection, and hears the datapath's
//! decisions and completions on the event ring buffer.

use std::{
    collections::HashMap as StdHashMap,
    io,
    net::{SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, RawFd},
    path::Path,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError, RingBuf};
use distributor_common::{
    flow::{self, Arm, BackendFlow, ClientFlow, Event, FlowKey, event, flags},
    splice::http_scan,
};
use tokio::{io::unix::AsyncFd, net::TcpStream, sync::mpsc};
use tracing::{debug, warn};

use super::{
    closing::{Close, Closer},
    lock,
    sockets::{self, SeqBase},
};

/// How often the event reader looks at the ring without being woken: the
/// latest a SPLICE event reaches its connection when no DONE follows soon
/// (a long response). Nothing time-critical waits on it.
const EVENTS_LOOK: Duration = Duration::from_millis(5);

/// Why a request was not armed (its response is relayed); names as in the
/// request record's `path_reason`.
pub mod not_armed {
    /// Not an IPv4 connection.
    pub const NOT_IPV4: &str = "not-ipv4";
    /// C still has unsent bytes (a relayed response being written).
    pub const CLIENT_BUSY: &str = "client-busy";
    /// The request method is not one we splice (CONNECT).
    pub const METHOD: &str = "method";
    /// A socket could not be inspected or a map was full.
    pub const UNAVAILABLE: &str = "datapath-unavailable";
}

/// The flow maps and the event dispatch, shared by every worker thread.
pub struct Splice {
    flows_c: Mutex<HashMap<MapData, FlowKey, ClientFlow>>,
    flows_s: Mutex<HashMap<MapData, FlowKey, BackendFlow>>,
    arms: Mutex<HashMap<MapData, FlowKey, Arm>>,
    waiters: Mutex<StdHashMap<u64, mpsc::UnboundedSender<Event>>>,
    next_id: AtomicU64,
    /// The event ring, read by the reader task and by connections that
    /// know their event is there ([`Splice::look`]).
    ring: Mutex<RingBuf<MapData>>,
    /// Translated sockets being closed, with their entries.
    closer: Closer,
}

/// The ring's descriptor, polled for readiness (the ring owns it).
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn open<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &str,
) -> Result<HashMap<MapData, K, V>, MapError> {
    HashMap::try_from(super::stats::map_from_pin(&pin_dir.join(name))?)
}

fn key_of(peer: SocketAddr, local: SocketAddr) -> Option<FlowKey> {
    match (peer, local) {
        (SocketAddr::V4(p), SocketAddr::V4(l)) => Some(key_v4(p, l)),
        _ => None,
    }
}

fn key_v4(peer: SocketAddrV4, local: SocketAddrV4) -> FlowKey {
    FlowKey::ingress(
        u32::from(*peer.ip()).to_be(),
        u32::from(*local.ip()).to_be(),
        peer.port().to_be(),
        local.port().to_be(),
    )
}

impl std::fmt::Debug for Splice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splice").finish_non_exhaustive()
    }
}

impl Splice {
    /// Opens the pinned flow maps of the running datapath and starts the
    /// event reader on the current tokio runtime. `drain`: how long a
    /// closing translated socket with bytes queued keeps its flow entry
    /// without an acknowledgement ([`Closer::new`]).
    pub fn start(pin_dir: &Path, events: Map, drain: Duration) -> anyhow::Result<Arc<Self>> {
        let ring = RingBuf::try_from(events)?;
        let ring_fd = ring.as_raw_fd();
        let splice = Arc::new(Self {
            flows_c: Mutex::new(open(pin_dir, flow::FLOWS_C)?),
            flows_s: Mutex::new(open(pin_dir, flow::FLOWS_S)?),
            arms: Mutex::new(open(pin_dir, flow::ARMS)?),
            waiters: Mutex::new(StdHashMap::new()),
            next_id: AtomicU64::new(1),
            ring: Mutex::new(ring),
            closer: Closer::new(drain),
        });
        let me = Arc::clone(&splice);
        // SAFETY: the descriptor belongs to the ring, which the `Splice`
        // owns, open and unchanged; the reader holds an `Arc` of the
        // `Splice` for as long as it polls.
        let fd = unsafe {
            AsyncFd::register_with_interest(RingFd(ring_fd), tokio::io::Interest::READABLE)
        }
        .map_err(|e| anyhow::anyhow!("polling the splice event ring: {e}"))?;
        tokio::spawn(async move { me.read_events(fd).await });
        let me = Arc::clone(&splice);
        tokio::spawn(async move { me.closer.run().await });
        Ok(splice)
    }

    /// At stop, once no connection task is left: waits for the closes in
    /// progress (at most [`super::closing::LINGER`]). Returns how many had
    /// to be cut short.
    pub async fn finish_closing(&self) -> usize {
        self.closer.finish().await
    }

    /// Hands the ring's events to their waiters: when the datapath wakes
    /// the reader (RELAY, a DONE armed with `wake`), and every
    /// [`EVENTS_LOOK`] for the events it writes without waking it (SPLICE,
    /// other DONEs: see the datapath's `report`). A connection that knows
    /// its event is there reads the ring itself ([`Splice::look`]).
    async fn read_events(&self, fd: AsyncFd<RingFd>) {
        let mut look = tokio::time::interval(EVENTS_LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                guard = fd.readable() => {
                    let mut guard = match guard {
                        Ok(g) => g,
                        Err(e) => {
                            warn!("splice event ring: {e}");
                            return;
                        }
                    };
                    self.look();
                    guard.clear_ready();
                }
                _ = look.tick() => self.look(),
            }
        }
    }

    /// Reads the ring now, on the caller's thread: for a DONE written
    /// without a wake-up, when the caller knows it is there (the client's
    /// next request arrived: the ACK that completed the region came
    /// first). The caller's own event is then in its channel, and no other
    /// thread had to wake up for it.
    pub fn look(&self) {
        let mut ring = lock(&self.ring);
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the datapath writes whole `Event`s (plain integers);
            // read unaligned from the ring's bytes.
            let ev = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
            let tx = lock(&self.waiters).get(&ev.id).cloned();
            if let Some(tx) = tx {
                let _ = tx.send(ev);
            } else {
                debug!(id = ev.id, kind = ev.kind, "splice event for no waiter");
            }
        }
    }

    /// Registers a client connection (socket C). The entry goes when the
    /// returned guard drops.
    pub fn add_client(self: &Arc<Self>, stream: &TcpStream, conn_id: u64) -> io::Result<ClientReg> {
        let key = key_of(stream.peer_addr()?, stream.local_addr()?)
            .ok_or_else(|| io::Error::other(not_armed::NOT_IPV4))?;
        let info = sockets::info(stream)?;
        let value = ClientFlow {
            conn_id,
            flags: flag_bits(&info),
            client_wscale: info.snd_wscale,
            c_wscale: info.rcv_wscale,
            ts_last_sent: sockets::ts_clock(stream)?,
            ..ClientFlow::default()
        };
        lock(&self.flows_c)
            .insert(key, value, 0)
            .map_err(io::Error::other)?;
        Ok(ClientReg {
            splice: Arc::clone(self),
            key,
            conn_id,
            base: OnceLock::new(),
        })
    }

    /// Registers a backend connection (socket S).
    pub fn add_backend(self: &Arc<Self>, stream: &TcpStream) -> io::Result<BackendReg> {
        let key = key_of(stream.peer_addr()?, stream.local_addr()?)
            .ok_or_else(|| io::Error::other(not_armed::NOT_IPV4))?;
        let info = sockets::info(stream)?;
        let seqs = sockets::seqs(stream)?;
        let base = OnceLock::new();
        learn_base(stream, &info, seqs, &base);
        let value = BackendFlow {
            // Nothing is in flight yet: S's bytes are all acknowledged.
            flags: flag_bits(&info) | flags::LEARNED | flags::S_ACKED,
            s_wscale: info.rcv_wscale,
            snd_nxt: seqs.write_seq,
            s_acked: seqs.write_seq,
            ts_last_sent: sockets::ts_clock(stream)?,
            // Set before a region starts (see the field); no cap until then.
            client_window: u16::MAX,
            ..BackendFlow::default()
        };
        lock(&self.flows_s)
            .insert(key, value, 0)
            .map_err(io::Error::other)?;
        Ok(BackendReg {
            splice: Arc::clone(self),
            key,
            base,
        })
    }

    /// Arms a region for the response to a request about to be written on
    /// `backend` for the client on `client`. On `Err`, the response is
    /// relayed for the reason given.
    pub fn arm(
        self: &Arc<Self>,
        client: &TcpStream,
        client_reg: &ClientReg,
        backend: &TcpStream,
        backend_reg: &BackendReg,
        method: &str,
        wake: bool,
    ) -> Result<Armed, &'static str> {
        let request = match method {
            "HEAD" => http_scan::REQUEST_HEAD,
            "CONNECT" => return Err(not_armed::METHOD),
            _ => http_scan::REQUEST_OTHER,
        };
        let c_info = sockets::info(client).map_err(|_| not_armed::UNAVAILABLE)?;
        if c_info.notsent != 0 {
            return Err(not_armed::CLIENT_BUSY);
        }
        let s_info = sockets::info(backend).map_err(|_| not_armed::UNAVAILABLE)?;
        let c = seqs_now(client, &c_info, &client_reg.base, true)
            .map_err(|_| not_armed::UNAVAILABLE)?;
        let s = seqs_now(backend, &s_info, &backend_reg.base, false)
            .map_err(|_| not_armed::UNAVAILABLE)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let arm = Arm {
            id,
            conn_id: client_reg.conn_id,
            client: client_reg.key,
            c0: c.write_seq,
            s0: s.rcv_nxt,
            c_ack: c.rcv_nxt,
            c_window: u16::try_from(c_info.rcv_wnd >> c_info.rcv_wscale).unwrap_or(u16::MAX),
            request: u8::try_from(request).unwrap_or(0),
            wake: u8::from(wake),
            client_mss: c_info.snd_mss,
            // What C has in flight is at most `unacked` full segments.
            client_window: c_info
                .snd_wnd
                .saturating_sub(c_info.unacked.saturating_mul(c_info.snd_mss)),
            c_acked: u32::try_from(c_info.bytes_acked).unwrap_or(u32::MAX),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.waiters).insert(id, tx);
        if lock(&self.arms).insert(backend_reg.key, arm, 0).is_err() {
            lock(&self.waiters).remove(&id);
            return Err(not_armed::UNAVAILABLE);
        }
        Ok(Armed {
            splice: Arc::clone(self),
            backend: backend_reg.key,
            id,
            events: rx,
            wake,
            consumed: false,
        })
    }
}

/// A socket's sequence numbers now, with `info` just read: from its byte
/// counters once its [`SeqBase`] is known (`write_seq` only when
/// `need_write`), else through repair mode, learning the base on the way.
fn seqs_now(
    stream: &TcpStream,
    info: &sockets::Info,
    base: &OnceLock<SeqBase>,
    need_write: bool,
) -> io::Result<sockets::Seqs> {
    if let Some(b) = base.get() {
        match info.seqs(*b) {
            (Some(write_seq), rcv_nxt) => return Ok(sockets::Seqs { write_seq, rcv_nxt }),
            (None, rcv_nxt) if !need_write => {
                return Ok(sockets::Seqs {
                    write_seq: 0,
                    rcv_nxt,
                });
            }
            // Bytes in flight: `write_seq` is not in the counters.
            (None, _) => {}
        }
    }
    let seqs = sockets::seqs(stream)?;
    learn_base(stream, info, seqs, base);
    Ok(seqs)
}

/// Sets `base` from `seqs` and the `TCP_INFO` read just before them, when
/// they belong together: nothing in flight or unsent (so `write_seq` is
/// `snd_una`), and the counters unchanged in a second read after them (no
/// segment arrived in between).
fn learn_base(
    stream: &TcpStream,
    before: &sockets::Info,
    seqs: sockets::Seqs,
    base: &OnceLock<SeqBase>,
) {
    if base.get().is_some() || before.unacked != 0 || before.notsent != 0 {
        return;
    }
    let Ok(after) = sockets::info(stream) else {
        return;
    };
    if (
        after.bytes_acked,
        after.bytes_received,
        after.unacked,
        after.notsent,
    ) == (before.bytes_acked, before.bytes_received, 0, 0)
    {
        let _ = base.set(before.base(seqs));
    }
}

fn flag_bits(info: &sockets::Info) -> u32 {
    let mut f = 0;
    if info.timestamps {
        f |= flags::TIMESTAMPS;
    }
    if info.sack {
        f |= flags::SACK;
    }
    f
}

/// A client connection's flow entry; removed on drop.
pub struct ClientReg {
    splice: Arc<Splice>,
    key: FlowKey,
    /// The connection's id, also in its entry: whose entry the key holds.
    conn_id: u64,
    /// C's sequence numbers at its first byte counters, once learnt.
    base: OnceLock<SeqBase>,
}

impl ClientReg {
    /// This connection's flow entry as the datapath left it (progress:
    /// `bytes_spliced`; the region in flight and how far it was sent);
    /// `None` once the key holds another connection's (see `Drop`).
    pub fn flow(&self) -> Option<ClientFlow> {
        self.own_entry(&lock(&self.splice.flows_c))
    }

    /// The entry under this connection's key, if it is this connection's.
    fn own_entry(&self, flows: &HashMap<MapData, FlowKey, ClientFlow>) -> Option<ClientFlow> {
        flows
            .get(&self.key, 0)
            .ok()
            .filter(|f| f.conn_id == self.conn_id)
    }

    /// Closes C (the caller then drops `stream`): a RST when a region is in
    /// flight, else a FIN, with the entry kept as long as the close needs
    /// it ([`super::closing`]).
    pub fn close(self, stream: &TcpStream) {
        let how = self
            .flow()
            .map_or(Close::Plain, |f| close_for(f.state, f.bytes_spliced));
        let splice = Arc::clone(&self.splice);
        splice.closer.close(stream, Box::new(self), how);
    }
}

/// How a socket whose flow entry says `state` and `bytes_spliced` closes.
fn close_for(state: u32, bytes_spliced: u64) -> Close {
    if state == flow::state::SPLICING {
        Close::Abort
    } else if bytes_spliced != 0 {
        Close::Linger
    } else {
        Close::Plain
    }
}

impl Drop for ClientReg {
    fn drop(&mut self) {
        // The key may hold a newer connection's entry by now: once this
        // socket is in TIME_WAIT, the client may connect again from the
        // same port (the time-wait socket accepts its SYN), and the new
        // connection registers before a lingering close (`closing`, which
        // polls) drops this guard. Only our own entry goes; registration
        // inserts under the same lock, so nothing comes in between.
        let mut flows = lock(&self.splice.flows_c);
        if self.own_entry(&flows).is_some() {
            let _ = flows.remove(&self.key);
        }
    }
}

/// A backend connection's flow entry; removed on drop.
pub struct BackendReg {
    splice: Arc<Splice>,
    key: FlowKey,
    /// S's sequence numbers at its first byte counters, once learnt.
    base: OnceLock<SeqBase>,
}

impl BackendReg {
    /// Closes S (the caller then drops `stream`), as [`ClientReg::close`].
    pub fn close(self, stream: &TcpStream) {
        let flow = lock(&self.splice.flows_s).get(&self.key, 0).ok();
        let how = flow.map_or(Close::Plain, |f| close_for(f.state, f.bytes_spliced));
        let splice = Arc::clone(&self.splice);
        splice.closer.close(stream, Box::new(self), how);
    }
}

impl Drop for BackendReg {
    fn drop(&mut self) {
        let _ = lock(&self.splice.flows_s).remove(&self.key);
    }
}

impl std::fmt::Debug for BackendReg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendReg")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// An armed request: its events arrive here. Dropping it removes the arm
/// if the datapath has not consumed it (no response segment came).
pub struct Armed {
    splice: Arc<Splice>,
    backend: FlowKey,
    id: u64,
    events: mpsc::UnboundedReceiver<Event>,
    /// The DONE event wakes the reader (else: [`Armed::look`]).
    pub wake: bool,
    /// A decision arrived: the datapath removed the arm before it wrote
    /// the event, so there is nothing left to remove.
    consumed: bool,
}

impl Armed {
    /// Reads the event ring now ([`Splice::look`]).
    pub fn look(&self) {
        self.splice.look();
    }

    /// The next event of this request.
    pub async fn next(&mut self) -> Option<Event> {
        let ev = self.events.recv().await;
        self.note(ev.as_ref());
        ev
    }

    fn note(&mut self, ev: Option<&Event>) {
        if ev.is_some_and(|e| matches!(e.kind, event::SPLICE | event::RELAY)) {
            self.consumed = true;
        }
    }

    /// Removes the arm if the datapath has not consumed it yet; `true`
    /// when it was still there (no response segment came).
    pub fn disarm(&mut self) -> bool {
        lock(&self.splice.arms).remove(&self.backend).is_ok()
    }

    /// An event already delivered, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        let ev = self.events.try_recv().ok();
        self.note(ev.as_ref());
        ev
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // One system call saved per response when the decision came.
        if !self.consumed {
            let _ = lock(&self.splice.arms).remove(&self.backend);
        }
        lock(&self.splice.waiters).remove(&self.id);
    }
}
