//! The splice datapath's maps (layouts in `distributor_common::flow`), its
//! counters and its completion events.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use distributor_common::flow::{
    ARMS_MAX, Arm, BackendFlow, ClientFlow, EVENTS_BYTES, Event, FLOWS_MAX, FlowKey, counter, event,
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
/// VM exit under a hypervisor: about 10 µs here, more than the rest of the
/// decision). A SPLICE event does not wake it: nothing waits on it, the
/// bytes flow regardless, and the reader takes it with the DONE that
/// follows (or at its periodic look). RELAY and DONE force the wake-up:
/// the kernel's own rule (wake only when the reader had read everything)
/// would skip it behind an unread SPLICE.
#[inline(always)]
pub fn report(id: u64, kind: u32, reason: u32, len: u32) {
    let ev = Event {
        id,
        kind,
        reason,
        len,
        pad: 0,
    };
    let wake = if kind == event::SPLICE {
        BPF_RB_NO_WAKEUP
    } else {
        BPF_RB_FORCE_WAKEUP
    };
    if EVENTS.output(ev, u64::from(wake)).is_err() {
        add(counter::EVENTS_LOST, 1);
    }
}
