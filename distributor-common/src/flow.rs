//! The splice datapath's flow maps: one entry per client connection (socket
//! C), one per pooled backend connection (socket S), one *arm* per request
//! whose response may be spliced, the completion events, and the splice
//! counters.
//!
//! Ownership keeps userspace and the kernel from overwriting each other's
//! fields (a map update writes the whole value):
//! - the control plane inserts a [`ClientFlow`]/[`BackendFlow`] once, when
//!   its socket is established, and deletes it when the socket closes;
//!   in between only the datapath writes it;
//! - the control plane inserts an [`Arm`] before it writes a request to S;
//!   the datapath consumes (deletes) it on the response's first segment;
//! - the datapath reports every decision and every completion as an
//!   [`Event`] on the ring buffer.
//!
//! Byte order: the addresses and ports of [`FlowKey`] are in network order
//! (as on the wire, so `bpftool` shows the packet bytes); every other
//! field is host order.

use crate::splice::{
    seq::{Region, Shift},
    timestamps::TsMap,
};

/// Hash: [`FlowKey`] (client -> virtual IP) -> [`ClientFlow`].
pub const FLOWS_C: &str = "FLOWS_C";
/// Hash: [`FlowKey`] (backend -> gateway) -> [`BackendFlow`].
pub const FLOWS_S: &str = "FLOWS_S";
/// Hash: [`FlowKey`] (backend -> gateway) -> [`Arm`].
pub const ARMS: &str = "ARMS";
/// Ring buffer of [`Event`]s.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU array of `u64` indexed by [`counter`].
pub const SPLICE_STATS: &str = "SPLICE_STATS";

/// Capacity of [`FLOWS_C`] and [`FLOWS_S`] (connections of each kind).
pub const FLOWS_MAX: u32 = 65_536;
/// Capacity of [`ARMS`] (requests waiting for their first response segment).
pub const ARMS_MAX: u32 = 16_384;
/// Size of the [`EVENTS`] ring buffer in bytes (a power of two, page multiple).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// `skb->mark` of a packet the datapath redirected: its egress hook must
/// not translate it a second time.
pub const SPLICED_MARK: u32 = 0x5d15_7e11;

/// `skb->mark` of a copy of a spliced backend segment sent back into the
/// gateway's ingress: it becomes a pure ACK for socket S (the backend
/// acknowledged S's request on the response data S never sees).
pub const ACK_TO_S_MARK: u32 = 0x5d15_7e12;

/// `skb->mark` of a copy of a client segment sent back into the gateway's
/// ingress: it becomes a pure ACK for the backend (the client acknowledged
/// region bytes on a segment for socket C, e.g. its next request).
pub const ACK_TO_BACKEND_MARK: u32 = 0x5d15_7e13;

/// A TCP connection as seen on the gateway's *ingress*: `saddr:sport` is the
/// peer (client or backend), `daddr:dport` the gateway's own address (the
/// virtual IP, or the gateway's backend-side address). Network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Peer address, network order.
    pub saddr: u32,
    /// Gateway address, network order.
    pub daddr: u32,
    /// Peer port, network order.
    pub sport: u16,
    /// Gateway port, network order.
    pub dport: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 12);

impl FlowKey {
    /// The key of an ingress segment from its header fields (network order).
    #[must_use]
    pub const fn ingress(saddr: u32, daddr: u32, sport: u16, dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
        }
    }

    /// The key of an egress segment (the gateway is the source).
    #[must_use]
    pub const fn egress(saddr: u32, daddr: u32, sport: u16, dport: u16) -> Self {
        Self {
            saddr: daddr,
            daddr: saddr,
            sport: dport,
            dport: sport,
        }
    }
}

/// Region states ([`ClientFlow::state`], [`BackendFlow::state`]).
pub mod state {
    /// No response in flight through the datapath.
    pub const IDLE: u32 = 0;
    /// A region is splicing: backend segments go to the client.
    pub const SPLICING: u32 = 1;

    /// A short name for display.
    #[must_use]
    pub const fn name(state: u32) -> &'static str {
        match state {
            IDLE => "idle",
            SPLICING => "splicing",
            _ => "unknown",
        }
    }
}

/// Bits of [`ClientFlow::flags`] and [`BackendFlow::flags`]: what the
/// connection negotiated (from `TCP_INFO`).
pub mod flags {
    /// Timestamps (RFC 7323) are on.
    pub const TIMESTAMPS: u32 = 1;
    /// SACK is permitted.
    pub const SACK: u32 = 2;
    /// Datapath-set: a segment has been seen (the learned fields are valid).
    pub const LEARNED: u32 = 4;
    /// Datapath-set: the peer's timestamp (`ts_recent`) is known.
    pub const TS_RECENT: u32 = 8;
    /// Datapath-set: [`super::BackendFlow::s_acked`] is valid.
    pub const S_ACKED: u32 = 16;
    /// Datapath-set: the backend sent bytes past a region: never reuse.
    pub const BROKEN: u32 = 32;
    /// Datapath-set from the arm ([`super::Arm::wake`]): the region's DONE
    /// event wakes the control plane.
    pub const WAKE_ON_DONE: u32 = 64;
    /// Datapath-set, client entries: the gateway sent a SYN-ACK on this
    /// entry's key, so the kernel took a new connection there (a client
    /// that connected again from the port of one whose close still holds
    /// the entry). The connection the entry describes is over: nothing is
    /// translated with it any more, until the new connection's
    /// registration replaces it.
    pub const SUPERSEDED: u32 = 128;
}

/// One client connection (socket C). Key: [`FlowKey`] client -> VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientFlow {
    /// The control plane's connection id.
    pub conn_id: u64,
    /// Bytes spliced into this connection, all regions.
    pub bytes_spliced: u64,
    /// Regions completed.
    pub regions_done: u64,
    /// The backend connection of the region in flight.
    pub backend: FlowKey,
    /// The region in flight (valid while `state` is SPLICING), wire values.
    pub region: Region,
    /// One of [`state`].
    pub state: u32,
    /// Bytes of completed regions C never saw.
    pub shift: Shift,
    /// The highest client-space sequence end spliced in this region.
    pub sent_end: u32,
    /// C's acknowledgement number (of the client's bytes) as last sent.
    pub c_ack: u32,
    /// The highest `TSval` sent to the client (C's own or spliced).
    pub ts_last_sent: u32,
    /// The client's latest `TSval` (echoed in spliced segments).
    pub ts_recent: u32,
    /// The region's backend clock mapped into the client's `TSval` stream.
    pub ts_map: TsMap,
    /// Interface toward the client (learned on ingress).
    pub ifindex: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// C's window field as last sent (C's receive window, its own scale).
    pub c_window: u16,
    /// The client's window scale (how to read the client's window field).
    pub client_wscale: u8,
    /// C's own window scale (how the client reads C's window field).
    pub c_wscale: u8,
    /// C's own bytes the client had acknowledged when the region in flight
    /// was armed (saturating): with `bytes_spliced`, what the client's path
    /// has carried, the base of the slow start offered to the backend.
    pub c_acked: u32,
}
const _: () = assert!(size_of::<ClientFlow>() == 96);

impl ClientFlow {
    /// Offset of the aligned 64-bit word `ts_last_sent` starts and
    /// `ts_recent` ends: the datapath raises `ts_last_sent` with a 64-bit
    /// compare-and-exchange of the word.
    pub const TS_WORD: usize = core::mem::offset_of!(Self, ts_last_sent);
}
const _: () = assert!(
    ClientFlow::TS_WORD.is_multiple_of(8)
        && core::mem::offset_of!(ClientFlow, ts_recent) == ClientFlow::TS_WORD + 4
);

/// One backend connection (socket S). Key: [`FlowKey`] backend -> gateway.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendFlow {
    /// The arm id of the region in flight (events carry it).
    pub arm_id: u64,
    /// Bytes spliced out of this connection, all regions.
    pub bytes_spliced: u64,
    /// The client connection of the region in flight.
    pub client: FlowKey,
    /// A copy of the region in flight (valid while `state` is SPLICING).
    pub region: Region,
    /// One of [`state`].
    pub state: u32,
    /// Bytes of completed regions S never saw.
    pub shift: Shift,
    /// The backend-space edge the backend has been told is acknowledged
    /// (through translated client ACKs) in the region in flight.
    pub acked_end: u32,
    /// S's sequence end as last sent (wire; for translated client ACKs).
    pub snd_nxt: u32,
    /// S's `TSval` as last sent.
    pub ts_last_sent: u32,
    /// Interface toward the backend (learned on ingress).
    pub ifindex: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// S's own window scale (how the backend reads S's window field).
    pub s_wscale: u8,
    /// Explicit padding.
    pub pad: u8,
    /// The window field (S's scale) last offered to the backend on the
    /// client's behalf: set when S's request goes out under an arm, and by
    /// every translated client ACK. While a region is in flight, S's own
    /// segments offer no more (S's receive window is not the client's).
    pub client_window: u16,
    /// The highest acknowledgement of S's bytes the backend sent that S
    /// has been given (valid with [`flags::S_ACKED`]).
    pub s_acked: u32,
}
const _: () = assert!(size_of::<BackendFlow>() == 80);

/// A request whose response the datapath may splice. Key: the
/// [`FlowKey`] of its backend connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arm {
    /// Id echoed in the [`Event`]s of this response.
    pub id: u64,
    /// The control plane's id of the client connection
    /// ([`ClientFlow::conn_id`]): the entry under `client` must still be
    /// that connection's (a client may connect again from the same port).
    pub conn_id: u64,
    /// The client connection the response goes to.
    pub client: FlowKey,
    /// C's `snd_nxt` as the socket sees it (no shift), host order.
    pub c0: u32,
    /// S's `rcv_nxt` as the socket sees it (no shift), host order.
    pub s0: u32,
    /// C's `rcv_nxt` (the acknowledgement spliced segments carry).
    pub c_ack: u32,
    /// C's current window field value (its receive window >> its scale).
    pub c_window: u16,
    /// Request kind, one of `splice::http_scan::REQUEST_*`.
    pub request: u8,
    /// 1: the response's DONE event wakes the control plane's event
    /// reader; 0: it waits to be read (the control plane learns of it
    /// through the client's next request, or looks every few
    /// milliseconds). A wake-up is an interrupt, dear under a hypervisor.
    pub wake: u8,
    /// The largest payload the client accepts (C's send MSS): a response
    /// is spliced only if the backend's segments fit.
    pub client_mss: u32,
    /// The bytes the client's window leaves for the response (C's send
    /// window less what C has in flight): S's request offers the backend no
    /// more (see [`crate::splice::window::armed_offer`]).
    pub client_window: u32,
    /// C's own bytes the client has acknowledged (`tcpi_bytes_acked`,
    /// saturating): [`ClientFlow::c_acked`] once the region starts.
    pub c_acked: u32,
}
const _: () = assert!(size_of::<Arm>() == 56);

/// Event kinds ([`Event::kind`]).
pub mod event {
    /// The first segment decided: splice `len` bytes.
    pub const SPLICE: u32 = 1;
    /// The first segment decided: relay (the response goes to S); why in
    /// [`super::Event::reason`] (a `splice::relay` reason).
    pub const RELAY: u32 = 2;
    /// The client acknowledged the whole region: S is free.
    pub const DONE: u32 = 3;
}

/// A ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// [`Arm::id`].
    pub id: u64,
    /// One of [`event`].
    pub kind: u32,
    /// A `splice::relay` reason for RELAY; the response's status code for
    /// SPLICE; 0 for DONE.
    pub reason: u32,
    /// The region length (SPLICE, DONE).
    pub len: u32,
    /// Explicit padding.
    pub pad: u32,
}
const _: () = assert!(size_of::<Event>() == 24);

/// Indexes of [`SPLICE_STATS`].
pub mod counter {
    /// Backend segments spliced to a client.
    pub const SEGMENTS: u32 = 0;
    /// Payload bytes spliced.
    pub const BYTES: u32 = 1;
    /// Client ACKs translated and sent to a backend.
    pub const ACKS: u32 = 2;
    /// Responses the first segment decided to splice.
    pub const REGIONS: u32 = 3;
    /// Regions the client fully acknowledged.
    pub const DONE: u32 = 4;
    /// Responses handed to the relay (reasons: `splice::relay`).
    pub const RELAYED: u32 = 5;
    /// Segments to a socket whose numbers were translated (shift/collapse).
    pub const TRANSLATED: u32 = 6;
    /// Region segments dropped (straddling the region's edge).
    pub const DROPPED: u32 = 7;
    /// Events lost (ring buffer full).
    pub const EVENTS_LOST: u32 = 8;
    /// Decisions and completions whose peer flow was missing.
    pub const NO_PEER: u32 = 9;
    /// Pure ACKs made for S from spliced backend segments whose
    /// acknowledgement S had not seen.
    pub const ACKS_TO_S: u32 = 10;
    /// Pure ACKs made for a backend from client segments to C that
    /// acknowledged region bytes (piggybacked ACKs).
    pub const PIGGYBACKED_ACKS: u32 = 11;
    /// Of [`SEGMENTS`], those the XDP fast path spliced (`xdp` mode).
    pub const XDP_SEGMENTS: u32 = 12;
    /// Number of counters.
    pub const COUNT: u32 = 13;
    /// Index of the first relay-reason counter: relay reason `r` (a
    /// `splice::relay` constant) counts at `RELAY_BASE + r`.
    pub const RELAY_BASE: u32 = COUNT;
    /// Length of the counter array.
    pub const LEN: u32 = COUNT + crate::splice::relay::COUNT;

    /// A short name for display.
    #[must_use]
    pub const fn name(c: u32) -> &'static str {
        match c {
            SEGMENTS => "spliced-segments",
            BYTES => "spliced-bytes",
            ACKS => "acks-to-backend",
            REGIONS => "regions-spliced",
            DONE => "regions-done",
            RELAYED => "responses-relayed",
            TRANSLATED => "socket-segments-translated",
            DROPPED => "region-segments-dropped",
            EVENTS_LOST => "events-lost",
            NO_PEER => "no-peer-flow",
            ACKS_TO_S => "acks-to-socket-s",
            PIGGYBACKED_ACKS => "piggybacked-acks-to-backend",
            XDP_SEGMENTS => "spliced-segments-xdp",
            _ => "unknown",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding (sizes
    // asserted above); every bit pattern is a valid value.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClientFlow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendFlow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Arm {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_key_is_the_ingress_key_reversed() {
        let k = FlowKey::ingress(1, 2, 3, 4);
        assert_eq!(FlowKey::egress(2, 1, 4, 3), k);
    }

    #[test]
    fn names_are_distinct() {
        let names: Vec<_> = (0..counter::COUNT).map(counter::name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(counter::name(counter::COUNT), "unknown");
        assert_eq!(state::name(state::SPLICING), "splicing");
    }
}
