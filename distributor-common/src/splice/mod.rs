//! The pure translation logic of the splice datapath, tested on the host
//! and called from the XDP/TC programs.
//!
//! The model (see the product brief, "One consistent model of the
//! datapath"): the gateway's sockets C (client side) and S (backend side)
//! stay authoritative for everything but the response bytes of a *region*,
//! which the datapath moves from the backend to the client itself. These
//! modules hold every computation that needs: sequence and acknowledgement
//! translation and the sockets' consistency shifts ([`seq`]), window
//! rescaling ([`window`]), SACK block translation ([`sack`]), PAWS-safe
//! timestamp mapping ([`timestamps`]), the TCP option walker and in-place
//! rewrites ([`options`]), incremental checksums ([`csum`]), and the
//! splice-or-relay decision on a response's first segment
//! ([`http_scan`], reasons in [`relay`]).
//!
//! Rules for everything in here, because it runs inside BPF programs:
//! `no_std`, no allocation, no floating point, no recursion, no reachable
//! panic (no indexing that can fail, no `unwrap`), every loop bounded by a
//! small constant. Sequence numbers and timestamps wrap modulo 2^32: all
//! their arithmetic is `wrapping_*` and comparisons are signed
//! differences. Every function takes and returns host-order values unless
//! its documentation says otherwise; the caller converts packet fields
//! with `from_be`/`to_be`.

// The datapath's verifier needs these inlined: an out-of-line function
// that returns a struct through a pointer exits without setting R0, which
// the verifier rejects ("R0 !read_ok"), and every call level adds stack.
#![expect(
    clippy::inline_always,
    reason = "BPF-to-BPF calls of these helpers break verification (see above)"
)]

pub mod csum;
pub mod http_scan;
pub mod options;
pub mod relay;
pub mod sack;
pub mod seq;
pub mod timestamps;
pub mod window;
