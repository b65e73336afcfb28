//! HTTP/1.x message framing (RFC 9112).
//!
//! Pure and synchronous: no I/O, no runtime. The proxy hands in the bytes it
//! has read and learns where each request and response starts and ends, so it
//! can forward exactly one message at a time over per-request backend choices
//! and keep pipelined bytes for the next message.
//!
//! - [`parse_request_head`] / [`parse_response_head`]: the head, with caps
//!   ([`Limits`]) checked on partial input so a slow peer cannot make us
//!   buffer without bound.
//! - [`request_body`] / [`response_body`]: how the body is delimited
//!   ([`BodyFraming`]), RFC 9112 §6.3.
//! - [`ChunkedScanner`]: where a chunked body ends, fed in arbitrary slices.
//!
//! Parsing is deliberately stricter than RFC 9112 requires of a recipient
//! wherever a lenient reading could differ from a peer's (bare LF, obs-fold,
//! whitespace before a colon, TE with CL, empty list elements in framing
//! fields, malformed chunk lines): those differences are what request
//! smuggling exploits, and a load balancer sits exactly between two parsers.
//! `httparse` tokenizes; the framing rules and the extra checks are ours.
//!
//! Errors carry the status to answer a client with (`status()`); for errors
//! in a backend's response the proxy answers 502 and closes that connection.

mod chunked;
mod framing;
mod head;
#[cfg(test)]
mod testutil;

pub use chunked::{ChunkLimits, ChunkedScanner};
pub use framing::{BodyFraming, check_body_size, request_body, response_body};
pub(crate) use head::trim_ows;
pub use head::{
    Limits, Parsed, RequestHead, ResponseHead, parse_request_head, parse_response_head,
};
