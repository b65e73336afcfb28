//! Why a response was relayed through the control plane instead of being
//! spliced: one reason per declined response, shared by the datapath (it
//! counts them) and userspace (it prints them by name). Plain `u32`s, as in
//! [`crate::reason`], so they can index a counter array and cross the
//! kernel/user boundary; they are their own numbering, separate from
//! [`crate::reason`]'s packet pass reasons.

/// The first segment ended before the end of the response head (the
/// empty line): a head split across segments.
pub const RELAY_HEAD_INCOMPLETE: u32 = 0;
/// No end of head within the scan limit
/// ([`super::http_scan::SCAN_MAX`] bytes).
pub const RELAY_HEAD_TOO_LONG: u32 = 1;
/// Malformed status line or header field: bare LF or CR, obs-fold,
/// control characters, whitespace before a colon, a bad version or status
/// code. Relaying lets the control plane's full parser decide.
pub const RELAY_BAD_HEAD: u32 = 2;
/// A 1xx status (100 Continue, 101 Switching Protocols, 103 Early Hints):
/// more heads follow, or the connection leaves HTTP.
pub const RELAY_INFORMATIONAL: u32 = 3;
/// A Transfer-Encoding header (chunked or any other coding): the length
/// is not known from the head.
pub const RELAY_TRANSFER_ENCODING: u32 = 4;
/// Content-Length present more than once, or not a plain decimal number.
pub const RELAY_BAD_LENGTH: u32 = 5;
/// No Content-Length on a status that has a body: close-delimited.
pub const RELAY_NO_LENGTH: u32 = 6;
/// A Connection header other than `keep-alive` (`close`, `upgrade`, a
/// list): hop-by-hop semantics the control plane must handle (a spliced
/// head reaches the client verbatim).
pub const RELAY_CONNECTION: u32 = 7;
/// Not an HTTP/1.1 response (HTTP/1.0: the client would assume the
/// connection closes).
pub const RELAY_HTTP_VERSION: u32 = 8;
/// Head and body longer than a region can be
/// ([`super::seq::Region::MAX_LEN`]).
pub const RELAY_TOO_LONG: u32 = 9;
/// The first segment carries bytes after the end of the response.
pub const RELAY_EXCESS_DATA: u32 = 10;
/// The request was CONNECT (a tunnel), or of an unknown kind.
pub const RELAY_TUNNEL: u32 = 11;
/// The first response segment did not start at the region's start
/// (reordered or lost): the decision needs the head's first byte.
pub const RELAY_OUT_OF_ORDER: u32 = 12;
/// The first response segment's TCP options were not understood
/// ([`super::options::OptionsError`]).
pub const RELAY_BAD_OPTIONS: u32 = 13;
/// The backend's segments can be larger than the client accepts (its
/// MSS), or the two connections negotiated different options (timestamps
/// on one side only): the segments cannot be passed through unchanged.
pub const RELAY_MISMATCH: u32 = 14;
/// The client connection of the arm has no flow entry (it closed).
pub const RELAY_NO_CLIENT: u32 = 15;
/// Number of reasons (the length of a counter array indexed by them).
pub const COUNT: u32 = 16;

/// A short name for display, stable for scripts.
#[must_use]
#[inline(always)]
pub const fn name(reason: u32) -> &'static str {
    match reason {
        RELAY_HEAD_INCOMPLETE => "relay-head-incomplete",
        RELAY_HEAD_TOO_LONG => "relay-head-too-long",
        RELAY_BAD_HEAD => "relay-bad-head",
        RELAY_INFORMATIONAL => "relay-informational",
        RELAY_TRANSFER_ENCODING => "relay-transfer-encoding",
        RELAY_BAD_LENGTH => "relay-bad-length",
        RELAY_NO_LENGTH => "relay-no-length",
        RELAY_CONNECTION => "relay-connection",
        RELAY_HTTP_VERSION => "relay-http-version",
        RELAY_TOO_LONG => "relay-too-long",
        RELAY_EXCESS_DATA => "relay-excess-data",
        RELAY_TUNNEL => "relay-tunnel",
        RELAY_OUT_OF_ORDER => "relay-out-of-order",
        RELAY_BAD_OPTIONS => "relay-bad-options",
        RELAY_MISMATCH => "relay-connection-mismatch",
        RELAY_NO_CLIENT => "relay-no-client",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_unique_name() {
        let names: Vec<_> = (0..COUNT).map(name).collect();
        for (i, n) in names.iter().enumerate() {
            assert_ne!(*n, "unknown", "reason {i} has no name");
            assert_eq!(names.iter().filter(|m| *m == n).count(), 1, "{n} twice");
        }
        assert_eq!(name(COUNT), "unknown");
    }
}
