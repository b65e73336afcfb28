//! distributor's datapath: XDP and TC programs.
//!
//! Entry points are one-line wrappers around `try_*` functions. On any error
//! the packet goes to the kernel stack untouched (`XDP_PASS` / `TC_ACT_OK`):
//! the stack is authoritative for everything the datapath does not own, so
//! passing is always safe, while dropping or half-rewriting is not.
#![no_std]
#![no_main]
// `atomic_cxchg`: the bpfel target leaves `compare_exchange` out (no
// 32-bit form before cpu v3), though the 64-bit instruction exists.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics, for atomic_cxchg")]
#![expect(
    clippy::inline_always,
    reason = "BPF-to-BPF calls cost verifier work and stack; the hot path is inlined on purpose"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "the aya program macros hand the context over by value"
)]

mod flows;
mod packet;
mod splice;
mod splice_xdp;
mod stats;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use distributor_common::maps::hook;

use crate::packet::Packet;

/// XDP on every gateway interface (the `xdp` datapath mode): counts, and
/// splices region segments it can; the rest passes to the TC programs.
#[xdp]
pub fn dist_xdp(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_PASS,
    }
}

/// TC ingress on every gateway interface (the `tc` datapath mode).
#[classifier]
pub fn dist_tc_in(ctx: TcContext) -> i32 {
    count_tc(&ctx, hook::TC_INGRESS);
    splice::ingress(&ctx).unwrap_or_else(|()| {
        // Not a segment the splice datapath reads: why, in the reasons.
        classify_tc(&ctx);
        TC_ACT_OK
    })
}

/// TC egress on every gateway interface (both modes).
#[classifier]
pub fn dist_tc_out(ctx: TcContext) -> i32 {
    count_tc(&ctx, hook::TC_EGRESS);
    splice::egress(&ctx).unwrap_or(TC_ACT_OK)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the entry-point shape every program keeps: rewrite steps fail with Err"
)]
fn try_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    count_xdp(ctx);
    Ok(splice_xdp::fast_path(ctx))
}

/// The per-interface counters of the XDP hook, in their own frame.
#[inline(never)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "interface indexes fit in u32 (the kernel's own type)"
)]
fn count_xdp(ctx: &XdpContext) {
    let pkt = Packet::new(ctx.data(), ctx.data_end());
    stats::count(
        ctx,
        ctx.ingress_ifindex() as u32,
        hook::XDP_INGRESS,
        pkt.len(),
    );
}

/// The per-interface counters of a TC hook. Its own frame, returned from
/// before the splice work starts: the verifier caps the stack of a whole
/// call chain at 512 bytes.
#[inline(never)]
fn count_tc(ctx: &TcContext, hook: u32) {
    // SAFETY: `skb` points at the context the kernel handed to this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // TC sees GRO/GSO super-packets: count the whole skb, not the linear part.
    stats::count(ctx, ifindex, hook, u64::from(ctx.len()));
}

/// The reason TC ingress leaves a packet it cannot read as a segment to
/// the stack (TC ingress is where every mode makes its last decision on
/// an arriving packet: XDP passes it what it does not splice). Inlined:
/// the packet pointers must be read in the frame that uses them (a callee
/// given them as arguments widens them, which the verifier rejects).
#[inline(always)]
fn classify_tc(ctx: &TcContext) {
    stats::classify(&Packet::new(ctx.data(), ctx.data_end()));
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No panic is reachable (the verifier would reject an unbounded loop
    // anyway); this only satisfies `no_std`.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
