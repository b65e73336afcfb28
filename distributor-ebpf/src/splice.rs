//! The splice datapath on TC (clsact/TCX) hooks.
//!
//! Ingress (a segment arriving at the gateway):
//! - from a backend, on a connection with an arm and no region: the first
//!   response segment decides splice or relay ([`decide`]);
//! - from a backend, inside the region in flight: rewritten into the
//!   client's connection and redirected to the client ([`splice_out`]);
//! - from a client, a pure ACK inside the region: rewritten into the
//!   backend's connection and redirected to the backend
//!   ([`ack_to_backend`]); the one that covers the whole region completes
//!   it ([`complete`]);
//! - an acknowledgement the splice would swallow (the backend's ACK of
//!   S's request riding on spliced response data; the client's ACK of
//!   region bytes riding on its next request to C): a copy of the segment
//!   goes back into this interface's ingress, marked, and there becomes a
//!   pure ACK for S ([`ack_copy_to_s`]) or for the backend
//!   ([`ack_copy_to_backend`]). Without it the sender waits for a
//!   retransmission timeout;
//! - anything else of a known connection goes to its socket with the
//!   numbers the socket expects (spliced bytes removed).
//!
//! Egress (a segment a gateway socket sends): the spliced bytes are added
//! back, so the peer sees one consistent stream.
//!
//! Headers are read in place when the linear data holds them (nearly
//! always), else through `bpf_skb_load_bytes`; every write goes through the
//! store helper (a direct write would make the kernel unclone every skb
//! the program sees), a retargeted segment's headers and options in one
//! store. The IP checksum is computed here; the TCP checksum is updated
//! through `l4_csum_replace`, which knows the skb's checksum state
//! (`CHECKSUM_PARTIAL` packets from local veth peers carry only the
//! pseudo-header sum, and must be updated only for pseudo-header fields).

#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "offsets and lengths of one packet, and helper return codes, fit in 32 bits"
)]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_INGRESS, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup,
    },
    btf_maps::PerCpuArray,
    helpers::generated::{
        bpf_fib_lookup, bpf_loop, bpf_redirect_neigh, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    macros::btf_map,
    programs::TcContext,
};
use distributor_common::{
    flow::{
        ACK_TO_BACKEND_MARK, ACK_TO_S_MARK, Arm, BackendFlow, ClientFlow, FlowKey, SPLICED_MARK,
        counter, event, flags as fl, state,
    },
    reason,
    splice::{
        csum::{self, Delta},
        http_scan::{HeadScanner, SCAN_MAX, Verdict},
        options::{self, Layout, MAX_LEN},
        relay,
        sack::{self, SackBlocks},
        seq::{Clip, Region, seq_gt, seq_max},
        timestamps::TsMap,
        window,
    },
};

use crate::{
    flows::{self, ARMS, FLOWS_C, FLOWS_S},
    packet::{
        ETH_HLEN, Frame, IP_CHECK, IP_DADDR, IP_OFF, IP_SADDR, TCP_ACK, TCP_CHECK, TCP_DPORT,
        TCP_OFF, TCP_OPTS, TCP_SEQ, TCP_SPORT, TCP_WINDOW, TH_ACK, TH_FIN, TH_PSH, TH_RST, TH_SYN,
    },
    stats,
};

/// The fields of an IPv4/TCP segment the datapath reads.
#[derive(Clone, Copy)]
#[repr(C)]
struct Seg {
    /// Network order.
    saddr: u32,
    /// Network order.
    daddr: u32,
    /// Network order.
    sport: u16,
    /// Network order.
    dport: u16,
    /// Host order.
    seq: u32,
    /// Host order.
    ack: u32,
    /// Host order.
    window: u16,
    flags: u8,
    /// Data offset and reserved bits (the byte before the flags).
    doff_byte: u8,
    /// TCP options length (0..=40).
    olen: usize,
    /// Payload bytes (the whole GSO super-packet's).
    payload_len: u32,
    /// The IP checksum, host order.
    ip_check: u16,
    /// The TCP checksum field as it is (network order): rewritten through
    /// the checksum helpers, which know the skb's checksum state.
    tcp_check: u16,
    /// The urgent pointer, network order.
    urg: u16,
}

impl Seg {
    fn payload_off(&self) -> usize {
        TCP_OPTS + self.olen
    }

    fn is_pure_ack(&self) -> bool {
        self.payload_len == 0 && self.flags & (TH_SYN | TH_FIN | TH_RST) == 0
    }
}

/// The segment's headers: read in place when the linear data holds them
/// (nearly always: GRO and TSO keep headers linear), else through
/// `bpf_skb_load_bytes`.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Seg, ()> {
    // Filled in this CPU's slot and copied out: a `Seg` cleared on the
    // stack first would cost a byte loop (the eBPF target calls `memset`
    // for anything over eight stores).
    let slot = SEG.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's slot; one program runs per CPU at a time.
    let slot = unsafe { &mut *slot };
    parse_into(ctx, slot)?;
    Ok(*slot)
}

#[btf_map]
static SEG: PerCpuArray<Seg, 1> = PerCpuArray::new();

/// [`parse`] in a frame of its own: its temporaries stay off the stack of
/// the call chains that follow.
#[inline(never)]
fn parse_into(ctx: &TcContext, seg: &mut Seg) -> Result<(), ()> {
    let (data, end) = (ctx.data(), ctx.data_end());
    let tot_len = if data + TCP_OPTS > end {
        parse_loaded(ctx, seg)?
    } else {
        let f = Frame::new(data);
        if !f.is_plain_ipv4_tcp() {
            return Err(());
        }
        seg.saddr = f.u32(IP_SADDR).to_be();
        seg.daddr = f.u32(IP_DADDR).to_be();
        seg.sport = f.u16(TCP_SPORT).to_be();
        seg.dport = f.u16(TCP_DPORT).to_be();
        seg.seq = f.u32(TCP_SEQ);
        seg.ack = f.u32(TCP_ACK);
        seg.window = f.u16(TCP_WINDOW);
        seg.flags = f.u8(TCP_OFF + 13);
        seg.doff_byte = f.u8(TCP_OFF + 12);
        seg.ip_check = f.u16(IP_CHECK);
        seg.tcp_check = f.u16(TCP_CHECK).to_be();
        seg.urg = f.u16(TCP_OFF + 18).to_be();
        f.u16(IP_OFF + 2)
    };
    let thl = usize::from(seg.doff_byte >> 4) * 4;
    if thl < 20 {
        return Err(());
    }
    // GSO super-packets larger than 64 KiB (BIG TCP) carry tot_len 0.
    let total = if tot_len == 0 {
        ctx.len().saturating_sub(ETH_HLEN as u32)
    } else {
        u32::from(tot_len)
    };
    seg.olen = thl - 20;
    seg.payload_len = total.checked_sub(20 + thl as u32).ok_or(())?;
    Ok(())
}

/// The fields of [`parse_into`] through `bpf_skb_load_bytes` (the linear
/// data is shorter than the headers); returns the IP total length.
#[inline(always)]
fn parse_loaded(ctx: &TcContext, seg: &mut Seg) -> Result<u16, ()> {
    let eth_type: u16 = ctx.load(12).map_err(|_| ())?;
    if eth_type != 0x0800_u16.to_be() {
        return Err(());
    }
    let vihl: u8 = ctx.load(IP_OFF).map_err(|_| ())?;
    let proto: u8 = ctx.load(IP_OFF + 9).map_err(|_| ())?;
    let frag: u16 = ctx.load(IP_OFF + 6).map_err(|_| ())?;
    // No IP options, no fragments: the TCP header is at a fixed offset.
    if vihl != 0x45 || proto != 6 || frag & 0x3fff_u16.to_be() != 0 {
        return Err(());
    }
    let be16 = |off: usize| -> Result<u16, ()> { ctx.load::<u16>(off).map_err(|_| ()) };
    let be32 = |off: usize| -> Result<u32, ()> { ctx.load::<u32>(off).map_err(|_| ()) };
    seg.saddr = be32(IP_SADDR)?;
    seg.daddr = be32(IP_DADDR)?;
    seg.sport = be16(TCP_SPORT)?;
    seg.dport = be16(TCP_DPORT)?;
    seg.seq = u32::from_be(be32(TCP_SEQ)?);
    seg.ack = u32::from_be(be32(TCP_ACK)?);
    seg.window = u16::from_be(be16(TCP_WINDOW)?);
    seg.flags = ctx.load(TCP_OFF + 13).map_err(|_| ())?;
    seg.doff_byte = ctx.load(TCP_OFF + 12).map_err(|_| ())?;
    seg.ip_check = u16::from_be(be16(IP_CHECK)?);
    seg.tcp_check = be16(TCP_CHECK)?;
    seg.urg = be16(TCP_OFF + 18)?;
    Ok(u16::from_be(be16(IP_OFF + 2)?))
}

/// A segment and its context: one argument for the BPF-to-BPF calls
/// (at most five arguments, none on the stack).
pub struct Pkt<'a> {
    ctx: &'a TcContext,
    seg: Seg,
}

/// The TCP options area of a segment, copied out of the packet; with
/// room before it for the headers from the IP checksum on, so that a
/// retargeted segment's headers and options go back in one store
/// ([`Opts::store_retargeted`]).
#[repr(C)]
pub struct Opts {
    /// Packet bytes `[IP_CHECK, TCP_OPTS)`, filled by `store_retargeted`.
    head: [u8; BLOCK_HEAD],
    buf: [u8; MAX_LEN],
    /// Room for a store length masked to [`BLOCK_MASK`] (the verifier
    /// checks the mask's bound, not the smaller true one).
    slack: [u8; BLOCK_MASK + 1 - MAX_LEN],
    len: usize,
    parsed: Layout,
    /// A layout `parse_common` does not know: removed (all NOPs) wherever
    /// options need translating.
    unknown: bool,
    /// Checksum change of the edits so far.
    delta: Delta,
    dirty: bool,
}

impl Opts {
    /// The options `load` put in this CPU's scratch slot for the packet
    /// being handled (a later step of the same packet reuses them).
    #[inline(always)]
    fn loaded() -> Result<&'static mut Self, ()> {
        let o = OPTS.get_ptr_mut(0).ok_or(())?;
        // SAFETY: as in `load`.
        Ok(unsafe { &mut *o })
    }

    /// Loads the options of `seg` into this CPU's scratch slot (the
    /// programs' stack is too small to hold them next to everything else).
    #[inline(always)]
    fn load(ctx: &TcContext, seg: &Seg) -> Result<&'static mut Self, ()> {
        Self::load_len(ctx, seg.olen)
    }

    /// [`Opts::load`] of `len` option bytes.
    #[inline(always)]
    fn load_len(ctx: &TcContext, len: usize) -> Result<&'static mut Self, ()> {
        let o = OPTS.get_ptr_mut(0).ok_or(())?;
        // SAFETY: this CPU's slot; one program runs per CPU at a time and
        // uses one `Opts` per packet.
        let o = unsafe { &mut *o };
        // Not cleared first (a byte loop here): everything reads only the
        // first `len` bytes.
        if len > 0 && len <= MAX_LEN {
            // SAFETY: `buf` is MAX_LEN bytes and `len <= MAX_LEN`.
            let r = unsafe {
                bpf_skb_load_bytes(
                    ctx.skb.skb as *const c_void,
                    TCP_OPTS as u32,
                    o.buf.as_mut_ptr().cast(),
                    len as u32,
                )
            };
            if r != 0 {
                return Err(());
            }
        }
        let layout = options::parse_common(&o.buf, len);
        o.len = len;
        o.unknown = !layout.known;
        o.parsed = layout;
        o.delta = Delta::new();
        o.dirty = false;
        Ok(o)
    }

    #[inline(always)]
    fn edited(&mut self, d: Option<Delta>) {
        if let Some(d) = d {
            self.delta = self.delta.merge(d);
            self.dirty = true;
        }
    }

    /// Removes an area that was not understood.
    #[inline(always)]
    fn clear_unknown(&mut self) {
        if self.unknown {
            let d = options::nop_all(&mut self.buf, self.len);
            self.edited(d);
            self.unknown = false;
        }
    }

    #[inline(always)]
    fn set_ts(&mut self, tsval: u32, tsecr: u32) {
        if let Some(ts) = self.parsed.timestamps() {
            let d = options::set_timestamps(&mut self.buf, ts, tsval, tsecr);
            self.edited(d);
        }
    }

    #[inline(always)]
    fn remove_ts(&mut self) {
        if let Some(ts) = self.parsed.timestamps() {
            let d = options::nop_out(&mut self.buf, ts.at, 10);
            self.edited(d);
        }
    }

    #[inline(always)]
    fn sack_blocks(&self) -> Option<(options::Sack, SackBlocks)> {
        let s = self.parsed.sack()?;
        Some((s, options::read_sack_area(&self.buf, s)))
    }

    #[inline(always)]
    fn write_sack(&mut self, s: options::Sack, blocks: &SackBlocks) {
        let d = options::write_sack(&mut self.buf, s, blocks);
        self.edited(d);
    }

    #[inline(always)]
    fn remove_sack(&mut self) {
        if let Some(s) = self.parsed.sack() {
            let d = options::write_sack(&mut self.buf, s, &SackBlocks::new());
            self.edited(d);
        }
    }

    /// Writes the edited area back; its checksum change goes into `d`.
    #[inline(always)]
    fn store(&self, ctx: &TcContext, d: &mut Delta) -> Result<(), ()> {
        if !self.dirty {
            return Ok(());
        }
        let len = self.len;
        if len == 0 || len > MAX_LEN {
            return Err(());
        }
        // SAFETY: `buf` holds `len <= MAX_LEN` bytes.
        unsafe { store_bytes(ctx, TCP_OPTS, self.buf.as_ptr(), len) }?;
        *d = d.merge(self.delta);
        Ok(())
    }
}

#[btf_map]
static OPTS: PerCpuArray<Opts, 1> = PerCpuArray::new();

/// Writes `len` bytes from `from` into the packet at `off` (no checksum
/// flags: the callers update the checksums).
///
/// # Safety
/// `from` must be valid for reads of `len` bytes.
#[inline(always)]
unsafe fn store_bytes(ctx: &TcContext, off: usize, from: *const u8, len: usize) -> Result<(), ()> {
    // SAFETY: as the caller promises.
    let r = unsafe { bpf_skb_store_bytes(ctx.skb.skb, off as u32, from.cast(), len as u32, 0) };
    if r == 0 { Ok(()) } else { Err(()) }
}

/// Bytes from the IP checksum to the TCP options.
const BLOCK_HEAD: usize = TCP_OPTS - IP_CHECK;
/// A mask at least the options' length (the stored length is
/// `BLOCK_HEAD + (len & BLOCK_MASK)`).
const BLOCK_MASK: usize = 63;

/// A segment's new addresses, ports, numbers, window and flags (addresses
/// and ports network order, the rest host order).
struct Retarget {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    window: u16,
    flags: u8,
}

impl Retarget {
    /// `seg` sent to `to` (an ingress key of the other connection: its
    /// `daddr:dport` is the gateway's side, `saddr:sport` the peer), its
    /// numbers, window and flags unchanged.
    const fn to(seg: &Seg, to: &FlowKey) -> Self {
        Self {
            saddr: to.daddr,
            daddr: to.saddr,
            sport: to.dport,
            dport: to.sport,
            seq: seg.seq,
            ack: seg.ack,
            window: seg.window,
            flags: seg.flags,
        }
    }
}

impl Opts {
    /// Writes `seg`'s headers from the IP checksum through the options as
    /// `r` makes them, with the options as edited, in one store; the IP
    /// checksum is computed here (a full sum, always), the TCP checksum
    /// updated by the helpers (pseudo-header and rest apart: they know
    /// the skb's checksum state).
    #[inline(always)]
    fn store_retargeted(&mut self, ctx: &TcContext, seg: &Seg, r: &Retarget) -> Result<(), ()> {
        let ip = Delta::new()
            .replace32(u32::from_be(seg.saddr), u32::from_be(r.saddr))
            .replace32(u32::from_be(seg.daddr), u32::from_be(r.daddr));
        let flags_old = u16::from_be_bytes([seg.doff_byte, seg.flags]);
        let flags_new = u16::from_be_bytes([seg.doff_byte, r.flags]);
        let l4 = Delta::new()
            .replace16(u16::from_be(seg.sport), u16::from_be(r.sport))
            .replace16(u16::from_be(seg.dport), u16::from_be(r.dport))
            .replace32(seg.seq, r.seq)
            .replace32(seg.ack, r.ack)
            .replace16(flags_old, flags_new)
            .replace16(seg.window, r.window)
            .merge(self.delta);
        let h = &mut self.head;
        h[0..2].copy_from_slice(&ip.apply(seg.ip_check).to_be_bytes());
        h[2..6].copy_from_slice(&r.saddr.to_ne_bytes());
        h[6..10].copy_from_slice(&r.daddr.to_ne_bytes());
        h[10..12].copy_from_slice(&r.sport.to_ne_bytes());
        h[12..14].copy_from_slice(&r.dport.to_ne_bytes());
        h[14..18].copy_from_slice(&r.seq.to_be_bytes());
        h[18..22].copy_from_slice(&r.ack.to_be_bytes());
        h[22] = seg.doff_byte;
        h[23] = r.flags;
        h[24..26].copy_from_slice(&r.window.to_be_bytes());
        h[26..28].copy_from_slice(&seg.tcp_check.to_ne_bytes());
        h[28..30].copy_from_slice(&seg.urg.to_ne_bytes());
        // `len <= MAX_LEN`; the mask shows the verifier a bound.
        let len = BLOCK_HEAD + (core::hint::black_box(self.len) & BLOCK_MASK);
        // SAFETY: `head`, `buf` and `slack` are contiguous (repr(C), byte
        // arrays): `BLOCK_HEAD + BLOCK_MASK + 1` bytes from `head`.
        unsafe { store_bytes(ctx, IP_CHECK, self.head.as_ptr(), len) }?;
        if ip != Delta::new() {
            let diff = u64::from(ip.value().swap_bytes());
            ctx.l4_csum_replace(TCP_CHECK, 0, diff, u64::from(BPF_F_PSEUDO_HDR))
                .map_err(|_| ())?;
        }
        Rewrite { l4 }.finish(ctx)
    }
}

/// Collects header rewrites and applies them with their checksum updates.
struct Rewrite {
    /// Change of the TCP checksum from non-pseudo-header fields.
    l4: Delta,
}

impl Rewrite {
    const fn new() -> Self {
        Self { l4: Delta::new() }
    }

    /// A 16-bit field, `old`/`new` in host order.
    #[inline(always)]
    fn u16(&mut self, ctx: &TcContext, off: usize, old: u16, new: u16) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        ctx.store(off, &new.to_be(), 0).map_err(|_| ())?;
        self.l4 = self.l4.replace16(old, new);
        Ok(())
    }

    /// A 32-bit field, host order.
    #[inline(always)]
    fn u32(&mut self, ctx: &TcContext, off: usize, old: u32, new: u32) -> Result<(), ()> {
        if old == new {
            return Ok(());
        }
        ctx.store(off, &new.to_be(), 0).map_err(|_| ())?;
        self.l4 = self.l4.replace32(old, new);
        Ok(())
    }

    /// Applies the collected TCP checksum change (diff mode: size 0).
    #[inline(always)]
    fn finish(self, ctx: &TcContext) -> Result<(), ()> {
        if self.l4 == Delta::new() {
            return Ok(());
        }
        // The delta is a host-order one's complement sum; the kernel sums
        // memory in network order, so the bytes swap.
        let diff = u64::from(self.l4.value().swap_bytes());
        ctx.l4_csum_replace(TCP_CHECK, 0, diff, 0).map_err(|_| ())
    }
}

#[inline(always)]
fn redirect(ctx: &TcContext, ifindex: u32) -> i32 {
    ctx.set_mark(SPLICED_MARK);
    // SAFETY: no neighbour parameters: the kernel resolves the next hop
    // from the FIB for the packet's destination.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// The interface the FIB routes `daddr` out of (addresses network
/// order); 0 if there is no route.
#[inline(always)]
fn route(ctx: &TcContext, saddr: u32, daddr: u32) -> u32 {
    // SAFETY: an all-zero `bpf_fib_lookup` is a valid request once the
    // fields below are set.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = 2; // AF_INET
    params.l4_protocol = 6;
    params.ifindex = ifindex(ctx);
    params.__bindgen_anon_3.ipv4_src = saddr;
    params.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: `params` is a valid, writable lookup structure.
    let r = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb.cast(),
            &raw mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if r == 0 { params.ifindex } else { 0 }
}

fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context the kernel handed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

fn gso_size(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).gso_size }
}

fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).mark }
}

/// TC ingress: a segment arriving at the gateway.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> Result<i32, ()> {
    // The mark is read again below rather than kept: the stack of this
    // frame is part of every call chain's.
    if is_copy(mark(ctx)) && strip_to_ack(ctx) != 0 {
        return Ok(TC_ACT_SHOT);
    }
    let p = Pkt {
        ctx,
        seg: parse(ctx)?,
    };
    let key = FlowKey::ingress(p.seg.saddr, p.seg.daddr, p.seg.sport, p.seg.dport);
    let copy = mark(ctx);
    if is_copy(copy) {
        ctx.set_mark(0);
        return Ok(ack_copy(&p, &key, copy));
    }
    if p.seg.flags & TH_SYN != 0 {
        // A handshake is never translated: flows are registered once
        // established, and a SYN on a known key opens a new connection
        // (a client connecting again from the port of one whose close
        // still holds the entry).
        stats::bump(reason::PASS_HANDSHAKE);
        return Ok(TC_ACT_OK);
    }
    // A key is in at most one of the two maps, so the order of the
    // lookups changes no result, only the cost: a segment without data
    // (in a region, the client's ACKs) is looked for among the clients
    // first, one with data (the backends' responses) among the backends.
    // The common segment of each kind pays one hash lookup, not a miss
    // and a hit.
    let client_first = p.seg.payload_len == 0;
    let mut c = if client_first {
        FLOWS_C.get_ptr_mut(key)
    } else {
        None
    };
    // The work is split so that no call chain is deep: the verifier caps
    // the stack of a whole chain at 512 bytes.
    if c.is_none()
        && let Some(b) = FLOWS_S.get_ptr_mut(key)
    {
        // SAFETY: a map value; the kernel keeps it alive while we run.
        let b = unsafe { &mut *b };
        let next = backend_in(&p, &key, b);
        return Ok(match next >> 32 {
            NEXT_SPLICE => {
                let Some(c) = FLOWS_C.get_ptr_mut(b.client) else {
                    flows::add(counter::NO_PEER, 1);
                    return Ok(TC_ACT_SHOT);
                };
                // SAFETY: a map value, alive while we run.
                let c = unsafe { &mut *c };
                if !splices_from(c, &key) {
                    flows::add(counter::NO_PEER, 1);
                    return Ok(TC_ACT_SHOT);
                }
                #[expect(clippy::cast_possible_truncation, reason = "the low half")]
                splice_out(&p, b, c, next as u32)
            }
            _ => action(next),
        });
    }
    if !client_first {
        c = FLOWS_C.get_ptr_mut(key);
    }
    if let Some(c) = c {
        // SAFETY: as above.
        let c = unsafe { &mut *c };
        if c.flags & fl::SUPERSEDED != 0 {
            // The entry's connection is over (see `egress`).
            stats::bump(reason::PASS_NO_FLOW);
            return Ok(TC_ACT_OK);
        }
        // The backend's entry matters only while a region is in flight:
        // looked up once here, for every step below.
        let b = if c.state == state::SPLICING {
            FLOWS_S.get_ptr_mut(c.backend)
        } else {
            None
        };
        // SAFETY: a map value, alive while we run.
        let next = client_in(&p, c, b.map(|b| unsafe { &mut *b }));
        return Ok(match (next >> 32, b) {
            // SAFETY: as above.
            (NEXT_ACK_TO_BACKEND, Some(b)) => ack_to_backend(&p, c, unsafe { &mut *b }, false),
            (NEXT_ACK_TO_BACKEND, None) => TC_ACT_SHOT,
            _ => action(next),
        });
    }
    // Routed traffic, or a gateway socket the control plane did not
    // register.
    stats::bump(reason::PASS_NO_FLOW);
    Ok(TC_ACT_OK)
}

/// Whether client entry `c` takes a region from the backend connection
/// `backend` (its ingress key): it is splicing that connection's region
/// and still describes a live connection. A backend's region outlives its
/// client when the client resets and connects again from the same port:
/// the key then holds a superseded entry, or the new connection's.
#[inline(always)]
pub fn splices_from(c: &ClientFlow, backend: &FlowKey) -> bool {
    c.state == state::SPLICING && c.flags & fl::SUPERSEDED == 0 && c.backend == *backend
}

/// What an ingress step asks for next, in the high half of its `u64`
/// result: return the action in the low half, splice the segment at the
/// client sequence number in the low half, or send it to the backend.
const NEXT_ACTION: u64 = 0;
const NEXT_SPLICE: u64 = 1;
const NEXT_ACK_TO_BACKEND: u64 = 2;

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "the low half holds a TC action"
)]
const fn action(next: u64) -> i32 {
    next as u32 as i32
}

#[expect(clippy::cast_sign_loss, reason = "TC actions are small")]
const fn next_action(action: i32) -> u64 {
    (NEXT_ACTION << 32) | action as u32 as u64
}

/// TC egress: a segment a gateway socket sends.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> Result<i32, ()> {
    if mark(ctx) == SPLICED_MARK {
        // Redirected by our ingress: already in its final form.
        ctx.set_mark(0);
        return Ok(TC_ACT_OK);
    }
    let p = Pkt {
        ctx,
        seg: parse(ctx)?,
    };
    let key = FlowKey::egress(p.seg.saddr, p.seg.daddr, p.seg.sport, p.seg.dport);
    if p.seg.flags & TH_SYN != 0 {
        // Never translated (as at ingress). A SYN-ACK on a client key: the
        // kernel took a new connection there, so the one the entry
        // describes is over; its shift must not touch the new connection's
        // segments until the new registration replaces the entry.
        if let Some(c) = FLOWS_C.get_ptr_mut(key) {
            // SAFETY: a map value, alive while we run.
            unsafe { (*c).flags |= fl::SUPERSEDED };
        }
        return Ok(TC_ACT_OK);
    }
    if let Some(c) = FLOWS_C.get_ptr_mut(key) {
        // SAFETY: a map value, alive while we run.
        let c = unsafe { &mut *c };
        if c.flags & fl::SUPERSEDED != 0 {
            return Ok(TC_ACT_OK);
        }
        return Ok(client_out(&p, c));
    }
    if let Some(b) = FLOWS_S.get_ptr_mut(key) {
        // SAFETY: as above.
        return Ok(backend_out(&p, &key, unsafe { &mut *b }));
    }
    Ok(TC_ACT_OK)
}

// ---- backend -> gateway -------------------------------------------------

#[inline(never)]
fn backend_in(p: &Pkt, key: &FlowKey, b: &mut BackendFlow) -> u64 {
    try_backend_in(p.ctx, &p.seg, key, b).unwrap_or(next_action(TC_ACT_SHOT))
}

#[inline(always)]
fn try_backend_in(
    ctx: &TcContext,
    seg: &Seg,
    key: &FlowKey,
    b: &mut BackendFlow,
) -> Result<u64, ()> {
    b.ifindex = ifindex(ctx);
    if b.state == state::IDLE
        && seg.payload_len > 0
        && let Some(arm) = ARMS.get_ptr(key)
    {
        // SAFETY: a map value; copied before the entry is removed.
        let arm = unsafe { *arm };
        let _ = ARMS.remove(key);
        let p = Pkt { ctx, seg: *seg };
        // Sets the region up when it splices; the segment is then inside
        // it and spliced below.
        decide(&p, key, b, &arm);
    }
    if b.state == state::SPLICING {
        let region = b.region;
        // A window probe (no data, at the byte before the acknowledged
        // edge) asks the client, whose window is closed, not S: without
        // the client's answer a lost window update stalls the region.
        if seg.payload_len == 0
            && seg.flags & (TH_SYN | TH_FIN | TH_RST) == 0
            && seg.seq == b.acked_end.wrapping_sub(1)
            && let Some(client_seq) = region.to_client_seq(seg.seq)
        {
            return Ok((NEXT_SPLICE << 32) | u64::from(client_seq));
        }
        match region.clip(seg.seq, seg.payload_len) {
            Clip::Inside { client_seq } => {
                return Ok((NEXT_SPLICE << 32) | u64::from(client_seq));
            }
            Clip::Before => return to_socket_s(ctx, seg, b, Some(region)).map(next_action),
            Clip::Straddles { .. } | Clip::After => {
                // Bytes beyond the response the head announced: they can
                // reach neither socket correctly. The backend is broken;
                // the control plane times the request out and closes both.
                b.flags |= fl::BROKEN;
                flows::add(counter::DROPPED, 1);
                return Ok(next_action(TC_ACT_SHOT));
            }
        }
    }
    to_socket_s(ctx, seg, b, None).map(next_action)
}

/// A backend segment for socket S: its sequence number without the
/// spliced bytes.
#[inline(always)]
fn to_socket_s(
    ctx: &TcContext,
    seg: &Seg,
    b: &mut BackendFlow,
    region: Option<Region>,
) -> Result<i32, ()> {
    if seg.flags & TH_ACK != 0 {
        b.s_acked = if b.flags & fl::S_ACKED == 0 {
            seg.ack
        } else {
            seq_max(b.s_acked, seg.ack)
        };
        b.flags |= fl::S_ACKED;
    }
    let mut seq = seg.seq;
    if let Some(r) = region {
        seq = r.collapse_backend(seq);
    }
    seq = b.shift.s_ingress_seq(seq);
    if seq != seg.seq {
        let mut rw = Rewrite::new();
        rw.u32(ctx, TCP_SEQ, seg.seq, seq)?;
        rw.finish(ctx)?;
        flows::add(counter::TRANSLATED, 1);
    }
    Ok(TC_ACT_OK)
}

/// Room for the payload bytes the head scan copies out of the segment
/// ([`SCAN_MAX`] + 1): a power of two, at least twice that, so that
/// offsets and lengths masked to half of it stay inside.
const SCAN_BUF: usize = 8192;
/// The first copy: most heads end within it; the rest of the scan window
/// is copied only if the scanner gets that far.
const SCAN_FIRST: u32 = 512;

/// The head scan of the response's first segment: the payload bytes and
/// the scanner, in this CPU's slot (far too big for the stack).
#[repr(C)]
struct Scan {
    /// Payload bytes in `buf` (from the payload's start).
    loaded: u32,
    /// The next byte to feed.
    at: u32,
    scanner: HeadScanner,
    /// Set once the scanner gave a verdict: 1 splice, 2 relay. Plain
    /// integers: copying a `Verdict` copies undefined padding, which the
    /// verifier rejects as an uninitialised register.
    done: u32,
    /// Relay reason, or head length.
    a: u32,
    /// Body length.
    body: u64,
    buf: [u8; SCAN_BUF],
}

#[btf_map]
static SCAN: PerCpuArray<Scan, 1> = PerCpuArray::new();

/// `bpf_loop` callback: one step of the head scan over the copied bytes:
/// a run of ignored bytes ([`HeadScanner::skip_run`]) where eight are
/// there, then one byte. (Two steps a call would save half the calls,
/// indirect ones and dear under retpolines, but exceed the verifier's
/// budget.)
extern "C" fn scan_step(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` points at the pointer to this CPU's scan slot on
    // `try_decide`'s stack, which outlives the loop.
    let s = unsafe { &mut **ctx.cast::<*mut Scan>() };
    let mut at = s.at as usize;
    let loaded = s.loaded as usize;
    if at >= SCAN_BUF / 2 {
        return 1;
    }
    if at + 8 <= loaded
        && let Ok(w) = <&[u8; 8]>::try_from(&s.buf[at..at + 8])
    {
        at += s.scanner.skip_run(w);
    }
    if at >= loaded || at >= SCAN_BUF / 2 {
        s.at = at as u32;
        return 1;
    }
    let b = s.buf[at];
    s.at = at as u32 + 1;
    match s.scanner.feed(b) {
        Some(Verdict::Splice { head_len, body_len }) => {
            s.done = 1;
            s.a = head_len;
            s.body = body_len;
            1
        }
        Some(Verdict::Relay(reason)) => {
            s.done = 2;
            s.a = reason;
            s.body = 0;
            1
        }
        None => 0,
    }
}

/// Copies payload bytes `[from, to)` (`to` at most [`SCAN_MAX`] + 1) into
/// the scan buffer and feeds them to the scanner.
#[inline(always)]
fn scan_bytes(ctx: &TcContext, seg: &Seg, scan: &mut Scan, from: u32, to: u32) -> Result<(), ()> {
    let len_1 = to.wrapping_sub(from).wrapping_sub(1);
    if from as usize > SCAN_MAX || len_1 as usize > SCAN_MAX {
        return Err(());
    }
    // The masks change nothing (both values are below half the buffer)
    // but show the verifier the bounds on the very registers passed:
    // `from < SCAN_BUF / 2` and `1 <= len <= SCAN_BUF / 2`. `black_box`
    // keeps the compiler from folding them away (it knows the values).
    let half = (SCAN_BUF / 2 - 1) as u32;
    let from = core::hint::black_box(from) & half;
    let len = (core::hint::black_box(len_1) & half) + 1;
    let dst = scan.buf[from as usize..].as_mut_ptr();
    // SAFETY: `len` bytes from `from`, both at most half of `buf`.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            seg.payload_off() as u32 + from,
            dst.cast(),
            len,
        )
    };
    if r != 0 {
        return Err(());
    }
    scan.loaded = to;
    let mut slot: *mut Scan = scan;
    // SAFETY: the callback reads the slot pointer through its context.
    unsafe {
        bpf_loop(
            SCAN_MAX as u32 + 1,
            scan_step as *mut c_void,
            (&raw mut slot).cast(),
            0,
        );
    }
    Ok(())
}

/// The first response segment on an armed backend connection: splice or
/// relay. Returns the action when the segment was spliced, `None` when it
/// goes on to S.
#[inline(never)]
fn decide(p: &Pkt, key: &FlowKey, b: &mut BackendFlow, arm: &Arm) {
    // An error before the region is set up leaves the connection idle:
    // the segment goes to S and the response is relayed.
    let _ = try_decide(p.ctx, &p.seg, key, b, arm);
}

#[inline(always)]
fn try_decide(
    ctx: &TcContext,
    seg: &Seg,
    key: &FlowKey,
    b: &mut BackendFlow,
    arm: &Arm,
) -> Result<(), ()> {
    let relay = |reason: u32| {
        flows::relayed(reason);
        flows::report(arm.id, event::RELAY, reason, 0, true);
        Ok(())
    };
    let Some(c) = FLOWS_C.get_ptr_mut(arm.client) else {
        return relay(relay::RELAY_NO_CLIENT);
    };
    // SAFETY: a map value, alive while we run.
    let c = unsafe { &mut *c };
    // The key may name another connection by now: the client reset this
    // one and connected again from the same port.
    if c.conn_id != arm.conn_id || c.flags & fl::SUPERSEDED != 0 {
        return relay(relay::RELAY_NO_CLIENT);
    }
    let s0 = b.shift.s_egress_ack(arm.s0);
    if seg.seq != s0 {
        return relay(relay::RELAY_OUT_OF_ORDER);
    }
    // The client must accept every segment the backend sends as it is.
    let seg_size = match gso_size(ctx) {
        0 => seg.payload_len,
        g => g,
    };
    let ts_both = b.flags & fl::TIMESTAMPS != 0 && c.flags & fl::TIMESTAMPS != 0;
    if seg_size > arm.client_mss
        || (b.flags & fl::TIMESTAMPS != 0) != (c.flags & fl::TIMESTAMPS != 0)
    {
        return relay(relay::RELAY_MISMATCH);
    }
    let Ok(opts) = Opts::load(ctx, seg) else {
        return relay(relay::RELAY_BAD_OPTIONS);
    };
    if opts.unknown || (ts_both && opts.parsed.timestamps().is_none()) {
        return relay(relay::RELAY_BAD_OPTIONS);
    }

    let avail = if seg.payload_len > SCAN_MAX as u32 {
        SCAN_MAX as u32 + 1
    } else {
        seg.payload_len
    };
    let scan = SCAN.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's slot, used by this program run only.
    let scan = unsafe { &mut *scan };
    scan.loaded = 0;
    scan.at = 0;
    scan.scanner = HeadScanner::new(u32::from(arm.request), seg.payload_len);
    scan.done = 0;
    scan.a = 0;
    scan.body = 0;
    let first = if avail > SCAN_FIRST {
        SCAN_FIRST
    } else {
        avail
    };
    if scan_bytes(ctx, seg, scan, 0, first).is_err() {
        return relay(relay::RELAY_HEAD_INCOMPLETE);
    }
    if scan.done == 0 && avail > first && scan_bytes(ctx, seg, scan, first, avail).is_err() {
        return relay(relay::RELAY_HEAD_INCOMPLETE);
    }
    let verdict = match scan.done {
        1 => Verdict::Splice {
            head_len: scan.a,
            body_len: scan.body,
        },
        2 => Verdict::Relay(scan.a),
        _ => scan.scanner.finish(avail as usize),
    };
    let len = match verdict {
        Verdict::Relay(reason) => return relay(reason),
        v @ Verdict::Splice { .. } => match v.region_len() {
            Some(len) => len,
            None => return relay(relay::RELAY_TOO_LONG),
        },
    };
    let c0 = c.shift.c_egress_seq(arm.c0);
    let Some(region) = Region::new(s0, c0, len) else {
        return relay(relay::RELAY_TOO_LONG);
    };

    // Splice: C's acknowledgement and window as the control plane read
    // them, unless C has sent something newer since.
    if c.flags & fl::LEARNED == 0 {
        c.c_ack = arm.c_ack;
        c.c_window = arm.c_window;
    } else {
        c.c_ack = seq_max(c.c_ack, arm.c_ack);
    }
    c.c_acked = arm.c_acked;
    if let Some(ts) = opts.parsed.timestamps() {
        c.ts_map = TsMap::continuing(c.ts_last_sent, ts.tsval);
    }
    // The client's connection may have sent nothing since it was
    // registered: find its interface from the FIB.
    if c.ifindex == 0 {
        c.ifindex = route(ctx, arm.client.daddr, arm.client.saddr);
    }
    if arm.wake != 0 {
        c.flags |= fl::WAKE_ON_DONE;
    } else {
        c.flags &= !fl::WAKE_ON_DONE;
    }
    c.region = region;
    c.sent_end = c0;
    c.backend = *key;
    c.state = state::SPLICING;
    b.region = region;
    b.client = arm.client;
    b.arm_id = arm.id;
    b.acked_end = s0;
    b.state = state::SPLICING;
    flows::add(counter::REGIONS, 1);
    // The status code rides in `reason`: the control plane records it.
    flows::report(arm.id, event::SPLICE, scan.scanner.status(), len, false);
    Ok(())
}

/// Rewrites a backend segment inside the region into the client's
/// connection and sends it to the client.
#[inline(never)]
fn splice_out(p: &Pkt, b: &mut BackendFlow, c: &mut ClientFlow, client_seq: u32) -> i32 {
    try_splice_out(p.ctx, &p.seg, b, c, client_seq).unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn try_splice_out(
    ctx: &TcContext,
    seg: &Seg,
    b: &mut BackendFlow,
    c: &mut ClientFlow,
    client_seq: u32,
) -> Result<i32, ()> {
    if seg.flags & TH_ACK != 0 && (b.flags & fl::S_ACKED == 0 || seq_gt(seg.ack, b.s_acked)) {
        // The backend acknowledges S's bytes (its request) on data S will
        // never see: S gets a pure ACK made from a copy.
        b.s_acked = seg.ack;
        b.flags |= fl::S_ACKED;
        copy_to_ingress(ctx, ACK_TO_S_MARK);
    }
    let opts = Opts::load(ctx, seg)?;
    opts.clear_unknown();
    if let Some(ts) = opts.parsed.timestamps() {
        if c.flags & fl::TIMESTAMPS == 0 {
            opts.remove_ts();
        } else {
            let tsval = flows::ts_to_send(c, c.ts_map.to_receiver(ts.tsval));
            opts.set_ts(tsval, c.ts_recent);
        }
    }
    // The backend's SACK blocks describe S's request bytes: meaningless to
    // the client.
    opts.remove_sack();

    opts.store_retargeted(
        ctx,
        seg,
        &Retarget {
            seq: client_seq,
            ack: c.c_ack,
            window: c.c_window,
            // The backend's FIN belongs to S, not to the client's
            // connection: the client gets the bytes; the backend
            // retransmits the FIN alone, and that reaches S.
            flags: seg.flags & !TH_FIN,
            ..Retarget::to(seg, &b.client)
        },
    )?;

    c.sent_end = seq_max(c.sent_end, client_seq.wrapping_add(seg.payload_len));
    c.bytes_spliced += u64::from(seg.payload_len);
    b.bytes_spliced += u64::from(seg.payload_len);
    flows::add(counter::SEGMENTS, 1);
    flows::add(counter::BYTES, u64::from(seg.payload_len));
    Ok(redirect(ctx, c.ifindex))
}

// ---- client -> gateway --------------------------------------------------

#[inline(never)]
fn client_in(p: &Pkt, c: &mut ClientFlow, b: Option<&mut BackendFlow>) -> u64 {
    try_client_in(p.ctx, &p.seg, c, b).unwrap_or(next_action(TC_ACT_SHOT))
}

/// `b`: the backend's entry, looked up only while a region is in flight.
#[inline(always)]
fn try_client_in(
    ctx: &TcContext,
    seg: &Seg,
    c: &mut ClientFlow,
    b: Option<&mut BackendFlow>,
) -> Result<u64, ()> {
    c.ifindex = ifindex(ctx);
    let opts = Opts::load(ctx, seg)?;
    if let Some(ts) = opts.parsed.timestamps() {
        c.ts_recent = ts.tsval;
        c.flags |= fl::TS_RECENT;
    }
    if c.state == state::SPLICING {
        let region = c.region;
        // The ACK field means something only with the ACK flag, and a RST
        // acknowledges nothing (a reset without ACK carries 0 there).
        let acks = seg.flags & TH_ACK != 0 && seg.flags & TH_RST == 0;
        let to_backend = if acks {
            region.to_backend_ack(seg.ack)
        } else {
            None
        };
        if seg.is_pure_ack() && to_backend.is_some() {
            if b.is_some() {
                return Ok(NEXT_ACK_TO_BACKEND << 32);
            }
            flows::add(counter::NO_PEER, 1);
        }
        if let Some(ack) = to_backend
            && seg.flags & (TH_SYN | TH_RST) == 0
            && seg.flags & TH_ACK != 0
            && let Some(b) = b.as_ref()
            && seq_gt(ack, b.acked_end)
        {
            // Region bytes acknowledged on a segment for C (the next
            // request, a FIN): the backend gets a pure ACK made from a
            // copy, taken before this segment is rewritten for C.
            copy_to_ingress(ctx, ACK_TO_BACKEND_MARK);
        }
        let done = acks && region.is_acked(seg.ack);
        let ack = c.shift.c_ingress_ack(region.collapse_client(seg.ack));
        opts.clear_unknown();
        if let Some((s, blocks)) = opts.sack_blocks() {
            let out = sack::to_socket_c(region, c.shift, blocks.as_slice());
            opts.write_sack(s, &out);
        }
        let mut rw = Rewrite::new();
        rw.u32(ctx, TCP_ACK, seg.ack, ack)?;
        opts.store(ctx, &mut rw.l4)?;
        rw.finish(ctx)?;
        flows::add(counter::TRANSLATED, 1);
        if done {
            // The client acknowledged the whole region with a segment for
            // C (its next request); the copy above tells the backend.
            if let Some(b) = b {
                complete(c, b);
            }
        }
        return Ok(next_action(TC_ACT_OK));
    }
    if c.shift.spliced != 0 {
        let ack = c.shift.c_ingress_ack(seg.ack);
        opts.clear_unknown();
        if let Some((s, blocks)) = opts.sack_blocks() {
            let out = sack::to_socket_c(Region::default(), c.shift, blocks.as_slice());
            opts.write_sack(s, &out);
        }
        let mut rw = Rewrite::new();
        rw.u32(ctx, TCP_ACK, seg.ack, ack)?;
        opts.store(ctx, &mut rw.l4)?;
        rw.finish(ctx)?;
        flows::add(counter::TRANSLATED, 1);
    }
    Ok(next_action(TC_ACT_OK))
}

/// A client ACK of region bytes: rewritten into the backend's connection
/// and sent to the backend.
#[inline(never)]
fn ack_to_backend(p: &Pkt, c: &mut ClientFlow, b: &mut BackendFlow, load: bool) -> i32 {
    let region = c.region;
    // Unless `load`, `client_in` loaded this segment's options and left
    // them unedited.
    let opts = if load {
        Opts::load(p.ctx, &p.seg)
    } else {
        Opts::loaded()
    };
    let Ok(opts) = opts else {
        return TC_ACT_SHOT;
    };
    try_ack_to_backend(p.ctx, &p.seg, c, b, opts, region).unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn try_ack_to_backend(
    ctx: &TcContext,
    seg: &Seg,
    c: &mut ClientFlow,
    b: &mut BackendFlow,
    opts: &mut Opts,
    region: Region,
) -> Result<i32, ()> {
    let Some(ack) = region.to_backend_ack(seg.ack) else {
        return Err(());
    };
    b.acked_end = seq_max(b.acked_end, ack);
    opts.clear_unknown();
    if let Some(ts) = opts.parsed.timestamps() {
        if b.flags & fl::TIMESTAMPS == 0 {
            opts.remove_ts();
        } else {
            opts.set_ts(b.ts_last_sent, c.ts_map.to_source(ts.tsecr));
        }
    }
    if let Some((s, blocks)) = opts.sack_blocks() {
        let out = sack::to_backend(region, blocks.as_slice());
        opts.write_sack(s, &out);
    }
    let win = window::capped(
        seg.window,
        c.client_wscale,
        window::slow_start_cap(
            window::acked(c.bytes_spliced, c.sent_end, seg.ack) + u64::from(c.c_acked),
        ),
        b.s_wscale,
    );
    b.client_window = win;
    opts.store_retargeted(
        ctx,
        seg,
        &Retarget {
            seq: b.snd_nxt,
            ack,
            window: win,
            ..Retarget::to(seg, &c.backend)
        },
    )?;
    flows::add(counter::ACKS, 1);
    if region.is_acked(seg.ack) {
        complete(c, b);
    }
    Ok(redirect(ctx, b.ifindex))
}

/// The client acknowledged the whole region: both sockets' shifts grow by
/// its length, and the control plane hears that S is free.
#[inline(always)]
fn complete(c: &mut ClientFlow, b: &mut BackendFlow) {
    if c.state != state::SPLICING || b.state != state::SPLICING {
        return;
    }
    let len = c.region.len;
    c.shift = c.shift.add(len);
    b.shift = b.shift.add(len);
    c.state = state::IDLE;
    b.state = state::IDLE;
    c.regions_done += 1;
    flows::add(counter::DONE, 1);
    let broken = b.flags & fl::BROKEN;
    flows::report(
        b.arm_id,
        event::DONE,
        broken,
        len,
        c.flags & fl::WAKE_ON_DONE != 0,
    );
}

// ---- gateway sockets -> peers --------------------------------------------

/// Socket C -> client: C's sequence numbers plus the spliced bytes, and a
/// `TSval` never below one the client has seen.
#[inline(never)]
fn client_out(p: &Pkt, c: &mut ClientFlow) -> i32 {
    try_client_out(p.ctx, &p.seg, c).unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn try_client_out(ctx: &TcContext, seg: &Seg, c: &mut ClientFlow) -> Result<i32, ()> {
    c.c_ack = seg.ack;
    c.c_window = seg.window;
    c.flags |= fl::LEARNED;
    let mut seq = c.shift.c_egress_seq(seg.seq);
    if c.state == state::SPLICING {
        seq = c.region.expand_client(seq, c.sent_end);
    }
    let opts = Opts::load(ctx, seg)?;
    if let Some(ts) = opts.parsed.timestamps() {
        let tsval = flows::ts_to_send(c, ts.tsval);
        if tsval != ts.tsval {
            opts.set_ts(tsval, ts.tsecr);
        }
    }
    let mut rw = Rewrite::new();
    rw.u32(ctx, TCP_SEQ, seg.seq, seq)?;
    opts.store(ctx, &mut rw.l4)?;
    rw.finish(ctx)?;
    Ok(TC_ACT_OK)
}

/// Socket S -> backend: S's acknowledgement plus the spliced bytes (and,
/// while a region is in flight, as far as the client has acknowledged).
/// From the arm to the region's end, the window is the client's (S's own
/// would let the backend send what the client cannot take). An arm is
/// looked for only on segments with data (S's request): S's pure ACKs of
/// a relayed response, the common idle-state segment, find none and pay
/// no lookup.
#[inline(never)]
fn backend_out(p: &Pkt, key: &FlowKey, b: &mut BackendFlow) -> i32 {
    let mut cap = b.state == state::SPLICING;
    if !cap
        && p.seg.payload_len > 0
        && let Some(window) = armed_window(key, b.s_wscale)
    {
        b.client_window = window;
        cap = true;
    }
    try_backend_out(p.ctx, &p.seg, b, cap).unwrap_or(TC_ACT_SHOT)
}

/// The window S's segments offer the backend while the response to the
/// request they carry is armed, in S's scale (`window::armed_offer`: the
/// client's window, a slow start of the client's path). `None` when
/// nothing is armed.
#[inline(always)]
fn armed_window(key: &FlowKey, s_wscale: u8) -> Option<u16> {
    let arm = ARMS.get_ptr(key)?;
    // SAFETY: a map value, alive while we run.
    let arm = unsafe { &*arm };
    let c = FLOWS_C.get_ptr(arm.client)?;
    // Between regions every byte spliced has been acknowledged (a region
    // ends when the client acknowledges all of it).
    // SAFETY: as above.
    let acked = unsafe { (*c).bytes_spliced } + u64::from(arm.c_acked);
    let bytes = window::armed_offer(arm.client_window, acked);
    Some(window::encode_open(bytes, s_wscale))
}

#[inline(always)]
fn try_backend_out(ctx: &TcContext, seg: &Seg, b: &mut BackendFlow, cap: bool) -> Result<i32, ()> {
    let mut end = seg.seq.wrapping_add(seg.payload_len);
    if seg.flags & (TH_SYN | TH_FIN) != 0 {
        end = end.wrapping_add(1);
    }
    b.snd_nxt = if b.flags & fl::LEARNED == 0 {
        end
    } else {
        seq_max(b.snd_nxt, end)
    };
    b.flags |= fl::LEARNED;
    let splicing = b.state == state::SPLICING;
    let mut ack = b.shift.s_egress_ack(seg.ack);
    if splicing {
        ack = b.region.expand_backend(ack, b.acked_end);
    }
    let opts = Opts::load(ctx, seg)?;
    if let Some(ts) = opts.parsed.timestamps() {
        b.ts_last_sent = ts.tsval;
    }
    if b.shift.spliced != 0 || splicing {
        opts.clear_unknown();
        if let Some((s, blocks)) = opts.sack_blocks() {
            let region = if splicing {
                b.region
            } else {
                Region::default()
            };
            let out = sack::from_socket_s(region, b.shift, blocks.as_slice());
            opts.write_sack(s, &out);
        }
    }
    let mut rw = Rewrite::new();
    rw.u32(ctx, TCP_ACK, seg.ack, ack)?;
    if cap && b.client_window < seg.window {
        rw.u16(ctx, TCP_WINDOW, seg.window, b.client_window)?;
    }
    opts.store(ctx, &mut rw.l4)?;
    rw.finish(ctx)?;
    Ok(TC_ACT_OK)
}

// ---- acknowledgements the splice would swallow ---------------------------

/// Sends a copy of the segment, as it is now, back into this interface's
/// ingress marked `mark`; the original is unchanged. Best effort: without
/// the copy the peer recovers by retransmission.
#[inline(always)]
fn copy_to_ingress(ctx: &TcContext, copy_mark: u32) {
    let own = mark(ctx);
    ctx.set_mark(copy_mark);
    let _ = ctx.clone_redirect(ifindex(ctx), u64::from(BPF_F_INGRESS));
    ctx.set_mark(own);
}

const fn is_copy(mark: u32) -> bool {
    mark == ACK_TO_S_MARK || mark == ACK_TO_BACKEND_MARK
}

/// A marked copy (see [`copy_to_ingress`]) arriving at ingress, already
/// cut to a pure ACK ([`strip_to_ack`]): given to S or sent to the
/// backend.
#[inline(always)]
fn ack_copy(p: &Pkt, key: &FlowKey, copy: u32) -> i32 {
    if copy == ACK_TO_S_MARK {
        return match FLOWS_S.get_ptr(*key) {
            // SAFETY: a map value, alive while we run.
            Some(b) => ack_copy_to_s(p, unsafe { &*b }),
            None => TC_ACT_SHOT,
        };
    }
    // The client acknowledged region bytes on a segment for C. The region
    // may have completed meanwhile: its numbers stay in the flows until
    // the next one.
    let Some(c) = FLOWS_C.get_ptr_mut(*key) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: as above.
    let c = unsafe { &mut *c };
    if c.region.to_backend_ack(p.seg.ack).is_none() {
        return TC_ACT_SHOT;
    }
    let Some(b) = FLOWS_S.get_ptr_mut(c.backend) else {
        return TC_ACT_SHOT;
    };
    flows::add(counter::PIGGYBACKED_ACKS, 1);
    // SAFETY: as above.
    ack_to_backend(p, c, unsafe { &mut *b }, true)
}

/// The pure ACK for S at S's `rcv_nxt`: the region's start while it
/// splices, its end once it has completed (both without spliced bytes).
#[inline(never)]
fn ack_copy_to_s(p: &Pkt, b: &BackendFlow) -> i32 {
    let at = if b.state == state::SPLICING {
        b.region.s0
    } else {
        b.region.s_end()
    };
    let mut rw = Rewrite::new();
    if rw
        .u32(p.ctx, TCP_SEQ, p.seg.seq, b.shift.s_ingress_seq(at))
        .and_then(|()| rw.finish(p.ctx))
        .is_err()
    {
        return TC_ACT_SHOT;
    }
    flows::add(counter::ACKS_TO_S, 1);
    TC_ACT_OK
}

/// Cuts a copied data segment down to its headers: IP length, flags (ACK
/// only: FIN and PSH belonged to the payload) and checksums follow. 0 on
/// success; the checksum is [`full_checksum`]'s.
#[inline(never)]
fn strip_to_ack(ctx: &TcContext) -> i64 {
    match try_strip_to_ack(ctx) {
        Ok(()) => 0,
        Err(()) => -1,
    }
}

#[inline(always)]
fn try_strip_to_ack(ctx: &TcContext) -> Result<(), ()> {
    let seg = parse(ctx)?;
    if seg.flags & TH_ACK == 0 || seg.flags & (TH_SYN | TH_RST) != 0 {
        return Err(());
    }
    let tcp_len = 20 + seg.olen as u32;
    let old_tcp_len = tcp_len + seg.payload_len;
    // A BIG TCP super-packet (IP length 0) is not cut.
    if old_tcp_len + 20 > 0xFFFF {
        return Err(());
    }
    // SAFETY: the context the kernel handed to the program.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (TCP_OPTS + seg.olen) as u32, 0) } != 0 {
        return Err(());
    }
    let old_tot = ((20 + old_tcp_len) as u16).to_be();
    let new_tot = ((20 + tcp_len) as u16).to_be();
    ctx.store(IP_OFF + 2, &new_tot, 0).map_err(|_| ())?;
    ctx.l3_csum_replace(IP_CHECK, u64::from(old_tot), u64::from(new_tot), 2)
        .map_err(|_| ())?;
    // The TCP length in the pseudo-header: all a `CHECKSUM_PARTIAL` sum
    // covers (the device adds the header itself on the way out).
    ctx.l4_csum_replace(
        TCP_CHECK,
        u64::from((old_tcp_len as u16).to_be()),
        u64::from((tcp_len as u16).to_be()),
        u64::from(BPF_F_PSEUDO_HDR) | 2,
    )
    .map_err(|_| ())?;
    let word = u16::from_be_bytes([seg.doff_byte, seg.flags]);
    let mut rw = Rewrite::new();
    rw.u16(ctx, TCP_OFF + 12, word, word & !u16::from(TH_FIN | TH_PSH))?;
    rw.finish(ctx)?;
    try_full_checksum(ctx, &parse(ctx)?)
}

/// A full checksum no longer holds once the payload is gone: it is
/// computed afresh over the headers. Whether the field holds a full sum at
/// all shows when it is replaced through `l4_csum_replace` in its
/// non-pseudo-header mode, which leaves a `CHECKSUM_PARTIAL` field (a
/// pseudo-header sum, already right) alone.
#[inline(always)]
fn try_full_checksum(ctx: &TcContext, seg: &Seg) -> Result<(), ()> {
    let header: [u8; 20] = ctx.load(TCP_OFF).map_err(|_| ())?;
    // Opaque to the compiler: with `parse` inlined in this function it
    // folds the options-length bounds check into one on the header length,
    // which the verifier cannot connect to the length passed to the load.
    let opts = Opts::load_len(ctx, core::hint::black_box(seg.olen))?;
    let want = csum::header_only_tcp(
        seg.saddr.to_ne_bytes(),
        seg.daddr.to_ne_bytes(),
        &header,
        &opts.buf,
        seg.olen as u16,
    )
    .to_be();
    let before: u16 = ctx.load(TCP_CHECK).map_err(|_| ())?;
    if before == want {
        return Ok(());
    }
    // `~(~before + ~old + new)` with `old = ~before`, `new = ~want`: `want`.
    ctx.l4_csum_replace(TCP_CHECK, u64::from(!before), u64::from(!want), 2)
        .map_err(|_| ())?;
    let after: u16 = ctx.load(TCP_CHECK).map_err(|_| ())?;
    if after == before {
        return Ok(());
    }
    // Written again through the store helper, so that a
    // `CHECKSUM_COMPLETE` skb's sum follows the field.
    ctx.store(TCP_CHECK, &before, 0).map_err(|_| ())?;
    ctx.store(TCP_CHECK, &want, u64::from(BPF_F_RECOMPUTE_CSUM))
        .map_err(|_| ())
}
