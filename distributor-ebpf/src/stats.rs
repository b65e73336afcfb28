//! Counters: packets and bytes per interface and hook, and a reason for every
//! packet the datapath passes to the stack untouched.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    btf_maps::{PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use aya_log_ebpf::warn;
use distributor_common::{
    maps::{Counters, IFACE_STATS_MAX, IfaceKey},
    reason,
};

use crate::packet::{ETH_P_IP_BE, EthHdr, IPPROTO_TCP, Ipv4Hdr, Packet, TcpHdr};

// BTF map definitions (`.maps` section): the kernel gets the key and value
// types, so `bpftool map dump` prints field names.
#[btf_map]
static IFACE_STATS: PerCpuHashMap<IfaceKey, Counters, { IFACE_STATS_MAX as usize }> =
    PerCpuHashMap::new();

#[btf_map]
static REASONS: PerCpuArray<u64, { reason::COUNT as usize }> = PerCpuArray::new();

/// Adds one packet of `bytes` to the counters of (`ifindex`, `hook`).
#[inline(never)]
pub fn count<C: EbpfContext>(ctx: &C, ifindex: u32, hook: u32, bytes: u64) {
    let key = IfaceKey { ifindex, hook };
    if let Some(c) = IFACE_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU slot of this CPU; nothing else writes it while this
        // program runs (no preemption inside a BPF program).
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
        return;
    }
    let first = Counters { packets: 1, bytes };
    // BPF_NOEXIST: if another CPU created the key in between, our insert
    // fails with EEXIST and this packet goes uncounted in one CPU's slot;
    // acceptable for a statistic, and far cheaper than a retry loop.
    if IFACE_STATS
        .insert(key, first, u64::from(BPF_NOEXIST))
        .is_err()
        && IFACE_STATS.get_ptr_mut(key).is_none()
    {
        bump(reason::ERR_STATS_FULL);
        // Rare (the map holds every interface times every hook), so the log
        // line costs nothing on the fast path.
        warn!(ctx, "IFACE_STATS full: ifindex {} not counted", ifindex);
    }
}

/// Counts `reason` once.
#[inline(always)]
pub fn bump(reason: u32) {
    if let Some(c) = REASONS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot of this CPU, as in `count`.
        unsafe { *c += 1 };
    }
}

/// Counts why a packet the splice datapath could not read as a segment
/// goes to the stack untouched (a plain IPv4/TCP one: "no flow").
#[inline(never)]
pub fn classify(pkt: &Packet) {
    bump(classify_reason(pkt));
}

#[inline(always)]
fn classify_reason(pkt: &Packet) -> u32 {
    let Ok(eth) = pkt.ptr_at::<EthHdr>(0) else {
        return reason::PASS_TRUNCATED;
    };
    // SAFETY: `ptr_at` checked the bounds.
    if unsafe { (*eth).ether_type } != ETH_P_IP_BE {
        return reason::PASS_NOT_IPV4;
    }
    let Ok(ip) = pkt.ptr_at::<Ipv4Hdr>(size_of::<EthHdr>()) else {
        return reason::PASS_TRUNCATED;
    };
    // SAFETY: `ptr_at` checked the bounds.
    let ip = unsafe { *ip };
    if ip.protocol != IPPROTO_TCP {
        return reason::PASS_NOT_TCP;
    }
    // IHL != 5 (options) or MF/offset set (fragment: 0x3fff masks both).
    if ip.version_ihl != 0x45 || ip.frag_off & 0x3fff_u16.to_be() != 0 {
        return reason::PASS_IP_OPTIONS_OR_FRAGMENT;
    }
    if pkt
        .ptr_at::<TcpHdr>(size_of::<EthHdr>() + size_of::<Ipv4Hdr>())
        .is_err()
    {
        return reason::PASS_TRUNCATED;
    }
    reason::PASS_NO_FLOW
}
