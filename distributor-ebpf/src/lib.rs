//! Empty library target: it lets `distributor` name this crate as a build
//! dependency, so cargo reruns `distributor/build.rs` when it changes. The
//! programs are the `distributor` binary target, built for bpfel-unknown-none.
#![no_std]
