//! The splice datapath's maps (layouts in `distributor_common::flow`), its
//! counters and its completion events.

use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use distributor_common::flow::{
    ARMS_MAX, Arm, BackendFlow, ClientFlow, EVENTS_BYTES, Event, FLOWS_MAX, FlowKey, counter,
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
#[inline(always)]
pub fn report(id: u64, kind: u32, reason: u32, len: u32) {
    let ev = Event {
        id,
        kind,
        reason,
        len,
        pad: 0,
    };
    if EVENTS.output(ev, 0).is_err() {
        add(counter::EVENTS_LOST, 1);
    }
}
