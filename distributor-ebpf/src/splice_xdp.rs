//! The splice fast path on XDP (the `xdp` datapath mode).
//!
//! A backend segment inside a splicing region, in the layout data segments
//! have (no options, or `NOP NOP TS`), is rewritten into the client's
//! connection and redirected to the client's interface before the kernel
//! builds an skb for it: addresses and ports, seq (backend -> client space),
//! ack and window (C's), `TSval` through the region's clock map (never
//! below what the client has seen), `TSecr` the client's latest.
//!
//! Everything else passes (`XDP_PASS`) to the TC programs, which this mode
//! attaches too and which do the rest exactly as in `tc` mode: the
//! first-segment decision, ACKs the splice would swallow, client ACKs to
//! the backend, segments for the gateway's own sockets, and egress. A
//! segment passes when any of those is involved: its ACK is news to S, it
//! carries SACK or an unknown option, FIN/SYN/RST, it lies outside the
//! region, or the client's next hop is not resolved yet.
//!
//! Checksums are full sums updated by RFC 1624 arithmetic, as frames from a
//! NIC carry them. A veth peer that offloads checksumming hands XDP frames
//! whose TCP checksum is only the pseudo-header sum (`CHECKSUM_PARTIAL`
//! lives in the skb, which XDP never sees), and those cannot be redirected
//! as they are: on veth this mode needs tx checksumming off on the peers.

#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "offsets and lengths of one frame, and helper return codes, fit in 32 bits"
)]

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    btf_maps::PerCpuArray,
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    macros::btf_map,
    programs::XdpContext,
};
use distributor_common::{
    flow::{FlowKey, counter, flags as fl, state},
    splice::{
        csum::Delta,
        seq::{Clip, seq_gt, seq_max},
    },
};

use crate::{
    flows::{self, FLOWS_C, FLOWS_S},
    packet::{
        Frame, IP_CHECK, IP_DADDR, IP_OFF, IP_SADDR, TCP_ACK, TCP_CHECK, TCP_DPORT, TCP_OFF,
        TCP_OPTS, TCP_SEQ, TCP_SPORT, TCP_WINDOW, TH_ACK, TH_FIN, TH_RST, TH_SYN,
    },
};

/// `NOP NOP TS(10)`: the options of a Linux data segment with timestamps.
const TS_LEN: usize = 12;

#[btf_map]
static FIB: PerCpuArray<bpf_fib_lookup, 1> = PerCpuArray::new();

/// XDP: splices what it can, passes the rest to TC.
#[inline(always)]
pub fn fast_path(ctx: &XdpContext) -> u32 {
    try_fast_path(ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_fast_path(ctx: &XdpContext) -> Result<u32, ()> {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TCP_OPTS > end {
        return Err(());
    }
    let f = Frame::new(data);
    if !f.is_plain_ipv4_tcp() {
        return Err(());
    }
    let flags = f.u8(TCP_OFF + 13);
    if flags & (TH_SYN | TH_RST | TH_FIN) != 0 || flags & TH_ACK == 0 {
        return Err(());
    }
    let olen = match f.u8(TCP_OFF + 12) >> 4 {
        5 => 0,
        8 => TS_LEN,
        _ => return Err(()),
    };
    let payload_len = u32::from(f.u16(IP_OFF + 2))
        .checked_sub(40 + olen as u32)
        .ok_or(())?;
    if payload_len == 0 {
        return Err(());
    }
    // Raw (network order) address and port fields, as the flow keys hold.
    let key = FlowKey::ingress(
        f.u32(IP_SADDR).to_be(),
        f.u32(IP_DADDR).to_be(),
        f.u16(TCP_SPORT).to_be(),
        f.u16(TCP_DPORT).to_be(),
    );
    let b = FLOWS_S.get_ptr_mut(key).ok_or(())?;
    // SAFETY: a map value; the kernel keeps it alive while we run.
    let b = unsafe { &mut *b };
    if b.state != state::SPLICING {
        return Err(());
    }
    let seq = f.u32(TCP_SEQ);
    let ack = f.u32(TCP_ACK);
    // An ACK S has not seen needs a copy for S: TC makes it.
    if b.flags & fl::S_ACKED == 0 || seq_gt(ack, b.s_acked) {
        return Err(());
    }
    let Clip::Inside { client_seq } = b.region.clip(seq, payload_len) else {
        return Err(());
    };
    let c = FLOWS_C.get_ptr_mut(b.client).ok_or(())?;
    // SAFETY: as above.
    let c = unsafe { &mut *c };
    // Anything else is TC's to drop.
    if !crate::splice::splices_from(c, &key) {
        return Err(());
    }
    let ts = c.flags & fl::TIMESTAMPS != 0;
    if ts != (olen == TS_LEN) {
        return Err(());
    }
    if olen == TS_LEN {
        if data + TCP_OPTS + TS_LEN > end {
            return Err(());
        }
        if f.u32(TCP_OPTS) != 0x0101_080a {
            return Err(());
        }
    }

    // The client's next hop; unresolved, TC's `bpf_redirect_neigh` copes.
    let to = b.client;
    // The request in this CPU's slot, every input field the lookup reads
    // without flags set here: a zeroed one on the stack would cost a byte
    // loop per packet (the eBPF target calls `memset` for it).
    let fib = FIB.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's slot; one program runs per CPU at a time.
    let fib = unsafe { &mut *fib };
    fib.family = 2; // AF_INET
    fib.l4_protocol = 6;
    fib.sport = 0;
    fib.dport = 0;
    fib.__bindgen_anon_1.tot_len = 0;
    fib.ifindex = c.ifindex;
    fib.__bindgen_anon_2.tos = 0;
    fib.__bindgen_anon_3.ipv4_src = to.daddr;
    fib.__bindgen_anon_4.ipv4_dst = to.saddr;
    // SAFETY: `fib` is a valid, writable lookup structure.
    let r = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            core::ptr::from_mut(fib),
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if r != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(());
    }

    // Rewrite. The addresses change both checksums (TCP through the
    // pseudo-header); everything else only TCP's.
    let (saddr, daddr) = (f.u32(IP_SADDR), f.u32(IP_DADDR));
    let (new_saddr, new_daddr) = (u32::from_be(to.daddr), u32::from_be(to.saddr));
    let ip = Delta::new()
        .replace32(saddr, new_saddr)
        .replace32(daddr, new_daddr);
    let (sport, dport) = (f.u16(TCP_SPORT), f.u16(TCP_DPORT));
    let (new_sport, new_dport) = (u16::from_be(to.dport), u16::from_be(to.sport));
    let window = f.u16(TCP_WINDOW);
    let mut tcp = ip
        .replace16(sport, new_sport)
        .replace16(dport, new_dport)
        .replace32(seq, client_seq)
        .replace32(ack, c.c_ack)
        .replace16(window, c.c_window);
    if olen == TS_LEN {
        let (tsval, tsecr) = (f.u32(TCP_OPTS + 4), f.u32(TCP_OPTS + 8));
        let new_tsval = flows::ts_to_send(c, c.ts_map.to_receiver(tsval));
        tcp = tcp
            .replace32(tsval, new_tsval)
            .replace32(tsecr, c.ts_recent);
        f.set32(TCP_OPTS + 4, new_tsval);
        f.set32(TCP_OPTS + 8, c.ts_recent);
    }
    f.set16(IP_CHECK, ip.apply(f.u16(IP_CHECK)));
    f.set32(IP_SADDR, new_saddr);
    f.set32(IP_DADDR, new_daddr);
    f.set16(TCP_SPORT, new_sport);
    f.set16(TCP_DPORT, new_dport);
    f.set32(TCP_SEQ, client_seq);
    f.set32(TCP_ACK, c.c_ack);
    f.set16(TCP_WINDOW, c.c_window);
    f.set16(TCP_CHECK, tcp.apply(f.u16(TCP_CHECK)));
    f.set(0, &fib.dmac);
    f.set(6, &fib.smac);

    c.sent_end = seq_max(c.sent_end, client_seq.wrapping_add(payload_len));
    c.bytes_spliced += u64::from(payload_len);
    b.bytes_spliced += u64::from(payload_len);
    flows::add(counter::SEGMENTS, 1);
    flows::add(counter::XDP_SEGMENTS, 1);
    flows::add(counter::BYTES, u64::from(payload_len));
    // SAFETY: plain helper call; XDP_REDIRECT on success.
    Ok(unsafe { bpf_redirect(fib.ifindex, 0) } as u32)
}
