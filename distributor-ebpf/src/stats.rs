//! Counters: packets and bytes per interface and hook, and a reason for every
//! packet the datapath passes to the stack untouched.

use aya_ebpf::{EbpfContext, btf_maps::PerCpuArray, macros::btf_map};
use aya_log_ebpf::warn;
use distributor_common::{
    maps::{Counters, IFACE_STATS_LEN, IFACES_MAX, stats_index},
    reason,
};

use crate::packet::{ETH_P_IP_BE, EthHdr, IPPROTO_TCP, Ipv4Hdr, Packet, TcpHdr};

// BTF map definitions (`.maps` section): the kernel gets the value types,
// so `bpftool map dump` prints field names.
#[btf_map]
static IFACE_STATS: PerCpuArray<Counters, { IFACE_STATS_LEN as usize }> = PerCpuArray::new();

#[btf_map]
static REASONS: PerCpuArray<u64, { reason::COUNT as usize }> = PerCpuArray::new();

/// The interfaces the programs attach to, in slot order, then zeros
/// (`maps::IFINDEXES`): filled by the loader, read-only from then on.
#[unsafe(no_mangle)]
static IFINDEXES: [u32; IFACES_MAX as usize] = [0; IFACES_MAX as usize];

/// The counter slot of `ifindex`: its position in [`IFINDEXES`].
#[inline(always)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "slots are below IFACES_MAX"
)]
fn slot(ifindex: u32) -> Option<u32> {
    let mut i = 0;
    while i < IFACES_MAX as usize {
        // SAFETY: an element of a static. Volatile: the compiler must not
        // fold the zeros the loader replaces.
        let listed = unsafe { core::ptr::read_volatile(&raw const IFINDEXES[i]) };
        if listed == 0 {
            // The list ends at the first zero (no interface has index 0).
            return None;
        }
        if listed == ifindex {
            return Some(i as u32);
        }
        i += 1;
    }
    None
}

/// Adds one packet of `bytes` to the counters of (`ifindex`, `hook`): a
/// scan of a short read-only list and an array slot, no hash lookup (the
/// counters run for every packet on both hooks).
#[inline(never)]
pub fn count<C: EbpfContext>(ctx: &C, ifindex: u32, hook: u32, bytes: u64) {
    let Some(slot) = slot(ifindex) else {
        bump(reason::ERR_UNCOUNTED_IFACE);
        // Only on an interface the loader did not list: off the fast path.
        warn!(ctx, "ifindex {} has no counter slot", ifindex);
        return;
    };
    if let Some(c) = IFACE_STATS.get_ptr_mut(stats_index(slot, hook)) {
        // SAFETY: per-CPU slot of this CPU; nothing else writes it while this
        // program runs (no preemption inside a BPF program).
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
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
