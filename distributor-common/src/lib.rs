//! Types and pure logic shared by the eBPF datapath (`distributor-ebpf`) and
//! the control plane (`distributor`).
//!
//! Everything that crosses the kernel/user boundary lives here: map names,
//! map keys and values, hook and reason numbers. Map types are `#[repr(C)]`,
//! `Copy`, hold integers only (no `bool`, `Option` or enums: the kernel side
//! must never read an invalid discriminant), pad explicitly and assert their
//! size, so both sides and `bpftool` agree on the layout byte for byte.
#![cfg_attr(not(test), no_std)]

pub mod flow;
pub mod maps;
pub mod reason;
pub mod splice;

pub use maps::Counters;
