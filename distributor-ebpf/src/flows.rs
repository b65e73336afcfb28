//! The splice datapath's maps (layouts in `distributor_common::flow`), its
//! counters and its completion events.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use distributor_common::{
    flow::{
        ARMS_MAX, Arm, BackendFlow, ClientFlow, EVENTS_BYTES, Event, FLOWS_MAX, FlowKey, counter,
    },
    splice::timestamps::{ts_lt, ts_max},
};

#[btf_map]
pub static FLOWS_C: HashMap<FlowKey, ClientFlow, { FLOWS_MAX as usize }> = HashMap::new();

#[btf_map]
pub static FLOWS_S: HashMap<FlowKey, BackendFlow, { FLOWS_MAX as usize }> = HashMap::new();

#[btf_map]
pub static ARMS: HashMap<FlowKey, Arm, { ARMS_MAX as usize }> = HashMap::new();

#[btf_map]
static EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
static SPLICE_STATS: PerCpuArray<u64, { counter::LEN as usize }> = PerCpuArray::new();

/// Adds `n` to counter `index` (a `counter::*` index).
#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(c) = SPLICE_STATS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot; a BPF program is not preempted.
        unsafe { *c += n };
    }
}

/// Counts a response handed to the relay for `reason`.
#[inline(always)]
pub fn relayed(reason: u32) {
    add(counter::RELAYED, 1);
    add(counter::RELAY_BASE + reason, 1);
}

/// Reports an event to the control plane; counts it as lost if the ring
/// buffer is full (the control plane then times the request out).
///
/// Waking the reader costs an interrupt (`irq_work`: a self-IPI, and a
/// VM exit under a hypervisor: about 10 µs here, more than the rest of a
/// response's datapath work). `wake` false writes the event without: a
/// SPLICE event (nothing waits on it: the bytes flow regardless), a DONE
/// the control plane learns of otherwise ([`flags::WAKE_ON_DONE`] clear).
/// `wake` true forces one: the kernel's own rule (wake only when the
/// reader had read everything) would skip it behind an unread event.
#[inline(always)]
pub fn report(id: u64, kind: u32, reason: u32, len: u32, wake: bool) {
    let ev = Event {
        id,
        kind,
        reason,
        len,
        pad: 0,
    };
    let wake = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output(ev, u64::from(wake)).is_err() {
        add(counter::EVENTS_LOST, 1);
    }
}

/// The `TSval` to send the client for a segment whose own (already mapped)
/// `TSval` is `tsval`: `tsval`, or the highest one sent so far if that is
/// later. `ts_last_sent` rises to it.
///
/// Atomically: two CPUs may send segments of one connection at once (a
/// backend's segments arrive on the CPU that sent them), and a plain
/// read-modify-write lets the slower one put an older value back, so the
/// next segment goes out below one the client already took and PAWS drops
/// it. The field shares an aligned 64-bit word with `ts_recent` (checked
/// at compile time in `distributor-common`), which a 64-bit
/// compare-and-exchange carries along unchanged (the eBPF target has no
/// 32-bit one before cpu v3).
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    clippy::cast_possible_truncation,
    reason = "the word is 8-byte aligned (asserted in distributor-common); its low half is ts_last_sent"
)]
pub fn ts_to_send(c: &mut ClientFlow, tsval: u32) -> u32 {
    let word = (&raw mut c.ts_last_sent).cast::<u64>();
    // SAFETY: `ts_last_sent` starts an 8-byte aligned word of the map
    // value (`ClientFlow::TS_WORD`), alive while the program runs; every
    // writer of the word's first half goes through here.
    // (A plain 64-bit load is atomic; the target cannot select an atomic
    // load instruction on cpu "generic".)
    let mut cur = unsafe { word.read_volatile() };
    for _ in 0..4 {
        let last = cur as u32;
        if !ts_lt(last, tsval) {
            return last;
        }
        let new = (cur & !0xFFFF_FFFF) | u64::from(tsval);
        // SAFETY: as above.
        let (now, ok) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                word, cur, new,
            )
        };
        if ok {
            return tsval;
        }
        cur = now;
    }
    // Still racing after four tries: never below what was read last.
    ts_max(tsval, cur as u32)
}
