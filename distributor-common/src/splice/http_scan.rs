//! The datapath's decision on the first response segment: splice (the
//! response's length is known from its head) or relay (the control plane
//! reads the response from socket S).
//!
//! Strict on purpose: a response is spliced only when its head is complete
//! in the first segment, well-formed by RFC 9112 with no obsolete or
//! lenient forms, HTTP/1.1, and framed by exactly one valid Content-Length
//! or by a status or request that has no body (RFC 9112 §6.3: responses to
//! HEAD, 204 and 304). Anything else is relayed; relaying is always
//! correct, splicing a misframed response is not.
//!
//! One pass over at most [`SCAN_MAX`] bytes with a byte-at-a-time state
//! machine: one bounded loop, a constant amount of work per byte (the
//! header-name match compares against three fixed names), no recursion.

use super::relay::{
    RELAY_BAD_HEAD, RELAY_BAD_LENGTH, RELAY_CONNECTION, RELAY_EXCESS_DATA, RELAY_HEAD_INCOMPLETE,
    RELAY_HEAD_TOO_LONG, RELAY_HTTP_VERSION, RELAY_INFORMATIONAL, RELAY_NO_LENGTH, RELAY_TOO_LONG,
    RELAY_TRANSFER_ENCODING, RELAY_TUNNEL,
};
use super::seq::Region;

/// At most this many bytes of the first segment are scanned; a head must
/// end (its empty line included) within them.
pub const SCAN_MAX: usize = 2048;

/// The request was not HEAD or CONNECT: the response may have a body.
pub const REQUEST_OTHER: u32 = 0;
/// The request was HEAD: the response has no body whatever its headers say.
pub const REQUEST_HEAD: u32 = 1;
/// The request was CONNECT: a 2xx response turns the connection into a
/// tunnel. Always relayed.
pub const REQUEST_CONNECT: u32 = 2;

/// The decision on a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Splice: the response is `head_len + body_len` bytes (at most
    /// [`Region::MAX_LEN`]).
    Splice {
        /// Bytes of the head, the final CRLF included.
        head_len: u32,
        /// Bytes of the body (0 for HEAD, 204, 304).
        body_len: u64,
    },
    /// Relay, for one of the [`super::relay`] reasons.
    Relay(u32),
}

impl Verdict {
    /// The region length of a `Splice` verdict (`head_len + body_len`, which
    /// [`scan_response`] keeps within [`Region::MAX_LEN`]); `None` for
    /// `Relay`.
    #[must_use]
    #[inline(always)]
    pub fn region_len(self) -> Option<u32> {
        match self {
            Self::Splice { head_len, body_len } => {
                u32::try_from(u64::from(head_len).checked_add(body_len)?).ok()
            }
            Self::Relay(_) => None,
        }
    }
}

/// Header names the scan acts on, lowercase.
const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const CONNECTION: &[u8] = b"connection";
const KEEP_ALIVE: &[u8] = b"keep-alive";
/// Candidate bits for the name match.
const CAND_CL: u8 = 1;
const CAND_TE: u8 = 2;
const CAND_CONN: u8 = 4;
const CAND_ALL: u8 = CAND_CL | CAND_TE | CAND_CONN;
/// The status line up to the minor version digit.
const VERSION_PREFIX: &[u8] = b"HTTP/1.";
/// Content-Length values above this are not spliced anyway (beyond
/// `Region::MAX_LEN`); capping the digits keeps the arithmetic small.
const CL_CAP: u64 = 1 << 40;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// In "HTTP/1." at position `HeadScanner::count`.
    Version,
    /// The minor version digit.
    Minor,
    /// The space after the version.
    VersionSp,
    /// Status code digit `HeadScanner::count` (0, 1 or 2).
    Status,
    /// The space after the status code.
    StatusSp,
    /// The reason phrase.
    Reason,
    /// After a CR ending the status line.
    StatusLf,
    /// At the start of a header line (or the final empty line).
    LineStart,
    /// In a field name.
    Name,
    /// In a field value.
    Value,
    /// After a CR ending a field line.
    FieldLf,
    /// After the CR of the empty line.
    FinalLf,
    /// The head is complete.
    Done,
}

/// What the current field line is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
}

/// `tchar` of RFC 9110 §5.6.2.
#[inline(always)]
const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Bytes allowed in a field value or reason phrase: HTAB, SP, VCHAR,
/// obs-text (RFC 9110 §5.5). Everything else (CTLs, DEL) is rejected.
#[inline(always)]
const fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7F)
}

#[inline(always)]
const fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Per-field value parsing state, reset at each field line.
#[derive(Clone, Copy)]
struct ValueScan {
    /// 0: leading OWS, 1: in the token/number, 2: trailing OWS.
    phase: u8,
    /// Content-Length digits so far.
    number: u64,
    /// Position in `keep-alive`.
    pos: usize,
    /// The value does not have the expected form.
    bad: bool,
}

impl ValueScan {
    #[inline(always)]
    const fn new() -> Self {
        Self {
            phase: 0,
            number: 0,
            pos: 0,
            bad: false,
        }
    }

    /// Feeds one value byte (already checked by [`is_value_byte`]).
    #[inline(always)]
    fn feed(&mut self, field: Field, b: u8) {
        if is_ows(b) {
            if self.phase == 1 {
                self.phase = 2;
            }
            return;
        }
        if self.phase == 2 {
            // Something after trailing whitespace: a list or garbage.
            self.bad = true;
            return;
        }
        self.phase = 1;
        match field {
            Field::ContentLength => {
                if b.is_ascii_digit() {
                    self.number = self.number * 10 + u64::from(b - b'0');
                    if self.number > CL_CAP {
                        // Stays above the cap: no overflow, still too long.
                        self.number = CL_CAP + 1;
                    }
                } else {
                    self.bad = true;
                }
            }
            Field::Connection => {
                match KEEP_ALIVE.get(self.pos) {
                    Some(&k) if b.to_ascii_lowercase() == k => {}
                    _ => self.bad = true,
                }
                self.pos += 1;
            }
            Field::TransferEncoding | Field::Other => {}
        }
    }
}

/// The scan as a byte-at-a-time machine: [`HeadScanner::feed`] takes the
/// payload's bytes in order, [`HeadScanner::finish`] gives the verdict when
/// they run out first. [`scan_response`] drives it in a loop; the datapath
/// drives it from `bpf_loop` (the verifier checks one byte's step once;
/// an open-coded 2048-step scan exceeds its complexity limit).
///
/// All fields are integers or small private enums, `Copy`, so the scanner
/// can live in the `bpf_loop` context on the stack.
#[derive(Clone, Copy)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags of one head scan, each read on its own"
)]
pub struct HeadScanner {
    /// Bytes fed so far.
    pos: usize,
    /// Whole payload length of the segment.
    seg_len: u32,
    /// The request was HEAD.
    no_body_request: bool,
    /// The request kind is not one we splice.
    tunnel: bool,
    state: State,
    /// Position inside the status line's version or status code.
    count: u8,
    minor: u8,
    status: u32,
    /// Header-name candidates still matching, and the name's length so far.
    cand: u8,
    name_len: usize,
    field: Field,
    value: ValueScan,
    /// A Content-Length was seen (plain fields, not an `Option`: a `None`
    /// copied into the datapath's map carries undefined bytes the verifier
    /// rejects).
    has_content_length: bool,
    content_length: u64,
    cl_bad: bool,
    te: bool,
    conn_bad: bool,
}

impl HeadScanner {
    /// A scanner for the first segment of the response to a request of
    /// kind `request` (one of the `REQUEST_*` constants), whose whole
    /// payload is `seg_len` bytes.
    #[must_use]
    #[inline(always)]
    pub const fn new(request: u32, seg_len: u32) -> Self {
        Self {
            pos: 0,
            seg_len,
            no_body_request: request == REQUEST_HEAD,
            tunnel: request != REQUEST_HEAD && request != REQUEST_OTHER,
            state: State::Version,
            count: 0,
            minor: 0,
            status: 0,
            cand: 0,
            name_len: 0,
            field: Field::Other,
            value: ValueScan::new(),
            has_content_length: false,
            content_length: 0,
            cl_bad: false,
            te: false,
            conn_bad: false,
        }
    }

    /// Feeds the next payload byte. Returns `Some(verdict)` once the
    /// verdict is known (the head ended, or it cannot be spliced
    /// whatever follows); then stop feeding. At most [`SCAN_MAX`] bytes
    /// are taken: the next one gives `Relay(RELAY_HEAD_TOO_LONG)`.
    #[inline(always)]
    pub fn feed(&mut self, b: u8) -> Option<Verdict> {
        if self.tunnel {
            return Some(Verdict::Relay(RELAY_TUNNEL));
        }
        if self.pos >= SCAN_MAX {
            return Some(Verdict::Relay(RELAY_HEAD_TOO_LONG));
        }
        self.pos += 1;
        match self.step(b) {
            Ok(State::Done) => Some(self.decide()),
            Ok(next) => {
                self.state = next;
                None
            }
            Err(reason) => Some(Verdict::Relay(reason)),
        }
    }

    /// Takes the run of bytes at the start of `w` that the machine would
    /// only check and stay in its state for: tchars of a header name that
    /// matches none of the names the scan acts on, bytes of the reason
    /// phrase or of a value the scan ignores (not CR, not a control). The
    /// verdict comes out as if they had been fed one by one. Returns how
    /// many it took (0 to 8); feed the byte after them with
    /// [`HeadScanner::feed`].
    ///
    /// Most of a head is such runs (names, dates, types, tags); the
    /// datapath, which pays a loop step per call, takes them eight at a
    /// time.
    #[inline(always)]
    pub fn skip_run(&mut self, w: &[u8; 8]) -> usize {
        let name = match self.state {
            State::Name if self.cand == 0 => true,
            State::Reason => false,
            State::Value if matches!(self.field, Field::Other | Field::TransferEncoding) => false,
            _ => return 0,
        };
        if self.tunnel || self.pos + 8 > SCAN_MAX {
            return 0;
        }
        let mut n = 0;
        let mut run = true;
        for &b in w {
            run &= if name { is_tchar(b) } else { is_value_byte(b) };
            n += usize::from(run);
        }
        self.pos += n;
        if name {
            self.name_len += n;
        }
        n
    }

    /// The status code read so far (complete once a `Splice` verdict came).
    #[inline(always)]
    #[must_use]
    pub const fn status(&self) -> u32 {
        self.status
    }

    /// The verdict when the bytes ran out before [`HeadScanner::feed`]
    /// gave one: the head is incomplete (`avail`, the number of payload
    /// bytes the caller had, below [`SCAN_MAX`]) or too long.
    #[must_use]
    #[inline(always)]
    pub const fn finish(&self, avail: usize) -> Verdict {
        if self.tunnel {
            Verdict::Relay(RELAY_TUNNEL)
        } else if avail >= SCAN_MAX {
            Verdict::Relay(RELAY_HEAD_TOO_LONG)
        } else {
            Verdict::Relay(RELAY_HEAD_INCOMPLETE)
        }
    }

    /// One byte of the state machine: the next state, or a relay reason.
    #[inline(always)]
    fn step(&mut self, b: u8) -> Result<State, u32> {
        let next = match self.state {
            State::Version => match VERSION_PREFIX.get(usize::from(self.count)) {
                Some(&want) if b == want => {
                    self.count += 1;
                    if usize::from(self.count) == VERSION_PREFIX.len() {
                        State::Minor
                    } else {
                        State::Version
                    }
                }
                _ => return Err(RELAY_BAD_HEAD),
            },
            State::Minor => {
                if !b.is_ascii_digit() {
                    return Err(RELAY_BAD_HEAD);
                }
                self.minor = b - b'0';
                State::VersionSp
            }
            State::VersionSp => {
                if b != b' ' {
                    return Err(RELAY_BAD_HEAD);
                }
                self.count = 0;
                State::Status
            }
            State::Status => {
                let n = self.count;
                let ok = if n == 0 {
                    matches!(b, b'1'..=b'5')
                } else {
                    b.is_ascii_digit()
                };
                if !ok {
                    return Err(RELAY_BAD_HEAD);
                }
                self.status = self.status * 10 + u32::from(b - b'0');
                if n == 2 {
                    State::StatusSp
                } else {
                    self.count = n + 1;
                    State::Status
                }
            }
            State::StatusSp => {
                if b != b' ' {
                    return Err(RELAY_BAD_HEAD);
                }
                State::Reason
            }
            State::Reason => {
                if b == b'\r' {
                    State::StatusLf
                } else if is_value_byte(b) {
                    State::Reason
                } else {
                    return Err(RELAY_BAD_HEAD);
                }
            }
            State::StatusLf => {
                if b != b'\n' {
                    return Err(RELAY_BAD_HEAD);
                }
                // The status line is complete: decide what no header can
                // change, without scanning further.
                if self.minor != 1 {
                    return Err(RELAY_HTTP_VERSION);
                }
                if self.status < 200 {
                    return Err(RELAY_INFORMATIONAL);
                }
                State::LineStart
            }
            State::LineStart => {
                if b == b'\r' {
                    State::FinalLf
                } else if is_tchar(b) {
                    self.cand = CAND_ALL;
                    self.name_len = 0;
                    self.name_byte(b);
                    State::Name
                } else {
                    // Obs-fold (SP or HTAB here) included.
                    return Err(RELAY_BAD_HEAD);
                }
            }
            State::Name => {
                if b == b':' {
                    self.field = self.field_of_name();
                    self.value = ValueScan::new();
                    State::Value
                } else if is_tchar(b) {
                    self.name_byte(b);
                    State::Name
                } else {
                    // Whitespace before the colon included (RFC 9112 §5.1).
                    return Err(RELAY_BAD_HEAD);
                }
            }
            State::Value => {
                if b == b'\r' {
                    State::FieldLf
                } else if is_value_byte(b) {
                    self.value.feed(self.field, b);
                    State::Value
                } else {
                    // Bare LF, NUL and other controls.
                    return Err(RELAY_BAD_HEAD);
                }
            }
            State::FieldLf => {
                if b != b'\n' {
                    return Err(RELAY_BAD_HEAD);
                }
                self.end_field();
                State::LineStart
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(RELAY_BAD_HEAD);
                }
                State::Done
            }
            // Not reached: `feed` stops at `Done`.
            State::Done => return Err(RELAY_BAD_HEAD),
        };
        Ok(next)
    }

    /// Narrows the name candidates with the next name byte.
    #[inline(always)]
    fn name_byte(&mut self, b: u8) {
        match_name(&mut self.cand, self.name_len, b);
        self.name_len += 1;
    }

    /// The field whose name just ended.
    #[inline(always)]
    const fn field_of_name(&self) -> Field {
        if self.cand & CAND_CL != 0 && self.name_len == CONTENT_LENGTH.len() {
            Field::ContentLength
        } else if self.cand & CAND_TE != 0 && self.name_len == TRANSFER_ENCODING.len() {
            Field::TransferEncoding
        } else if self.cand & CAND_CONN != 0 && self.name_len == CONNECTION.len() {
            Field::Connection
        } else {
            Field::Other
        }
    }

    /// Takes in the value of the field line that just ended.
    #[inline(always)]
    fn end_field(&mut self) {
        match self.field {
            Field::ContentLength => {
                if self.value.bad || self.value.phase == 0 || self.has_content_length {
                    self.cl_bad = true;
                }
                self.has_content_length = true;
                self.content_length = self.value.number;
            }
            Field::TransferEncoding => self.te = true,
            Field::Connection => {
                if self.value.bad || self.value.pos != KEEP_ALIVE.len() {
                    self.conn_bad = true;
                }
            }
            Field::Other => {}
        }
    }

    /// The verdict on a complete head of `self.pos` bytes.
    #[inline(always)]
    fn decide(&self) -> Verdict {
        if self.te {
            return Verdict::Relay(RELAY_TRANSFER_ENCODING);
        }
        if self.cl_bad {
            return Verdict::Relay(RELAY_BAD_LENGTH);
        }
        if self.conn_bad {
            return Verdict::Relay(RELAY_CONNECTION);
        }
        let body_len = if self.no_body_request || self.status == 204 || self.status == 304 {
            0
        } else if self.has_content_length {
            self.content_length
        } else {
            return Verdict::Relay(RELAY_NO_LENGTH);
        };
        // pos <= SCAN_MAX, so it fits.
        let head_len = u32::try_from(self.pos).unwrap_or(u32::MAX);
        let total = u64::from(head_len) + body_len;
        if total > u64::from(Region::MAX_LEN) {
            return Verdict::Relay(RELAY_TOO_LONG);
        }
        if u64::from(self.seg_len) > total {
            return Verdict::Relay(RELAY_EXCESS_DATA);
        }
        Verdict::Splice { head_len, body_len }
    }
}

/// Decides how the response whose first segment payload starts with
/// `payload` is carried. `seg_len` is the whole payload length of that
/// segment (the caller may pass fewer bytes than that in `payload`, at
/// least [`SCAN_MAX`] or all of them); `request` is one of the `REQUEST_*`
/// constants for the request this response answers.
///
/// Reasons are checked in this order: tunnel; malformed or incomplete head
/// (in byte order: the first problem found wins); HTTP version; 1xx;
/// Transfer-Encoding; bad Content-Length; Connection; missing length; too
/// long; excess data.
///
/// Host-side driver of [`HeadScanner`]; the datapath runs the same steps
/// ([`HeadScanner::skip_run`], then [`HeadScanner::feed`]) from
/// `bpf_loop`.
#[must_use]
#[inline(always)]
pub fn scan_response(payload: &[u8], seg_len: u32, request: u32) -> Verdict {
    let seg_len = u32::try_from(payload.len()).map_or(u32::MAX, |n| n.max(seg_len));
    let mut scanner = HeadScanner::new(request, seg_len);
    // The datapath's steps: a run of ignored bytes where eight are there,
    // then one byte.
    let avail = payload.len().min(SCAN_MAX + 1);
    let mut at = 0;
    while at < avail {
        if at + 8 <= avail
            && let Some(w) = payload.get(at..at + 8)
            && let Ok(w) = <&[u8; 8]>::try_from(w)
        {
            at += scanner.skip_run(w);
        }
        let Some(&b) = payload.get(at).filter(|_| at < avail) else {
            break;
        };
        if let Some(verdict) = scanner.feed(b) {
            return verdict;
        }
        at += 1;
    }
    scanner.finish(payload.len())
}

/// Narrows the name candidates with byte `b` at position `pos`
/// (case-insensitive).
#[inline(always)]
fn match_name(cand: &mut u8, pos: usize, b: u8) {
    let lower = b.to_ascii_lowercase();
    for (bit, name) in [
        (CAND_CL, CONTENT_LENGTH),
        (CAND_TE, TRANSFER_ENCODING),
        (CAND_CONN, CONNECTION),
    ] {
        if name.get(pos) != Some(&lower) {
            *cand &= !bit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::relay::{self, RELAY_TUNNEL};
    use super::*;

    fn splice(head_len: usize, body_len: u64) -> Verdict {
        Verdict::Splice {
            head_len: u32::try_from(head_len).unwrap(),
            body_len,
        }
    }

    /// A splice of the whole head in the table (filled in by the loop).
    fn ok(body_len: u64) -> Verdict {
        Verdict::Splice {
            head_len: u32::MAX,
            body_len,
        }
    }

    /// Scans `head` as the whole first segment (plus `extra` payload bytes
    /// counted in the segment length but not passed).
    fn scan(head: &[u8], extra: u32, request: u32) -> Verdict {
        scan_response(head, u32::try_from(head.len()).unwrap() + extra, request)
    }

    #[test]
    fn table() {
        use Verdict::Relay;
        let ok200 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let cases: &[(&str, &[u8], u32, u32, Verdict)] = &[
            // name, head (the whole segment so far), body bytes also in the
            // segment, request, verdict
            ("200 with length, head only", ok200, 0, REQUEST_OTHER, ok(5)),
            ("200 with length and body", ok200, 5, REQUEST_OTHER, ok(5)),
            ("excess bytes", ok200, 6, REQUEST_OTHER, Relay(RELAY_EXCESS_DATA)),
            (
                "nginx-like",
                b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/html\r\ncontent-length: 1000000\r\nConnection: keep-alive\r\nX-Backend: b1\r\n\r\n",
                1000,
                REQUEST_OTHER,
                ok(1_000_000),
            ),
            ("CL with OWS", b"HTTP/1.1 200 OK\r\nContent-Length: \t42 \r\n\r\n", 0, REQUEST_OTHER, ok(42)),
            ("CL zero", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, REQUEST_OTHER, ok(0)),
            ("CL leading zeros", b"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n", 0, REQUEST_OTHER, ok(7)),
            ("CL upper case name", b"HTTP/1.1 404 Not Found\r\nCONTENT-LENGTH: 3\r\n\r\n", 0, REQUEST_OTHER, ok(3)),
            ("empty reason", b"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, ok(1)),
            ("599", b"HTTP/1.1 599 X\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, ok(1)),
            ("obs-text in reason", b"HTTP/1.1 200 \xC3\xA9\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, ok(1)),
            ("204 without length", b"HTTP/1.1 204 No Content\r\n\r\n", 0, REQUEST_OTHER, ok(0)),
            ("304 with length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0, REQUEST_OTHER, ok(0)),
            ("HEAD with length", ok200, 0, REQUEST_HEAD, ok(0)),
            ("HEAD without length", b"HTTP/1.1 200 OK\r\n\r\n", 0, REQUEST_HEAD, ok(0)),
            ("HEAD response then bytes", ok200, 1, REQUEST_HEAD, Relay(RELAY_EXCESS_DATA)),
            ("names with other prefixes", b"HTTP/1.1 200 OK\r\nContent-Lengths: 1\r\nContent-Type: x\r\nConnectionX: close\r\nTransfer-Encodings: x\r\nContent-Length: 2\r\n\r\n", 0, REQUEST_OTHER, ok(2)),
            // Relay.
            ("CONNECT", ok200, 0, REQUEST_CONNECT, Relay(RELAY_TUNNEL)),
            ("unknown request kind", ok200, 0, 7, Relay(RELAY_TUNNEL)),
            ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_TRANSFER_ENCODING)),
            ("TE and CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_TRANSFER_ENCODING)),
            ("TE on 204", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_TRANSFER_ENCODING)),
            ("close-delimited", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_NO_LENGTH)),
            ("two CL, same value", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL sign", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL hex", b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL empty", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL inner space", b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_LENGTH)),
            ("CL invalid on HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 0, REQUEST_HEAD, Relay(RELAY_BAD_LENGTH)),
            ("CL huge", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_TOO_LONG)),
            ("CL just over a region", b"HTTP/1.1 200 OK\r\nContent-Length: 1073741800\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_TOO_LONG)),
            ("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_CONNECTION)),
            ("Connection list", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_CONNECTION)),
            ("Connection: keep-alives", b"HTTP/1.1 200 OK\r\nConnection: keep-alives\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_CONNECTION)),
            ("Connection: Keep-Alive", b"HTTP/1.1 200 OK\r\nConnection:Keep-Alive \r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, ok(1)),
            ("HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_HTTP_VERSION)),
            ("HTTP/2.0", b"HTTP/2.0 200 OK\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("lowercase http", b"http/1.1 200 OK\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("100 Continue", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_INFORMATIONAL)),
            ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_INFORMATIONAL)),
            ("103 on HEAD", b"HTTP/1.1 103 Early Hints\r\n\r\n", 0, REQUEST_HEAD, Relay(RELAY_INFORMATIONAL)),
            ("status 600", b"HTTP/1.1 600 X\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("status 099", b"HTTP/1.1 099 X\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("two-digit status", b"HTTP/1.1 20 OK\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("no SP after status", b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("bare LF status line", b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("bare LF field", b"HTTP/1.1 200 OK\r\nContent-Length: 1\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("bare LF end", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("bare CR", b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("obs-fold of CL", b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\t5\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("empty name", b"HTTP/1.1 200 OK\r\n: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("no colon", b"HTTP/1.1 200 OK\r\nContent-Length\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("NUL in value", b"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("DEL in reason", b"HTTP/1.1 200 O\x7FK\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("non-token name", b"HTTP/1.1 200 OK\r\nX(y): 1\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("leading space", b" HTTP/1.1 200 OK\r\n\r\n", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
            ("empty", b"", 0, REQUEST_OTHER, Relay(RELAY_HEAD_INCOMPLETE)),
            // A bad byte before the end of a head that is also incomplete
            // is reported as bad, as soon as it is seen.
            ("bad then incomplete", b"HTTP/1.1 200 OK\r\nX\x01", 0, REQUEST_OTHER, Relay(RELAY_BAD_HEAD)),
        ];
        for &(name, head, extra, request, want) in cases {
            // `ok(n)` stands for "splice the whole head given, n body bytes".
            let want = match want {
                Verdict::Splice {
                    head_len: u32::MAX,
                    body_len,
                } => splice(head.len(), body_len),
                w => w,
            };
            assert_eq!(scan(head, extra, request), want, "{name}");
            if let Verdict::Splice { head_len, body_len } = want {
                assert_eq!(head_len as usize, head.len(), "{name}: table's head_len");
                assert_eq!(
                    want.region_len(),
                    Some(head_len + u32::try_from(body_len).unwrap())
                );
            }
        }
    }

    #[test]
    fn every_split_of_a_head_is_incomplete() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: b1\r\n\r\n";
        for cut in 0..head.len() {
            // The segment ends at `cut`: the rest (and the body) would come
            // in later segments.
            assert_eq!(
                scan_response(&head[..cut], u32::try_from(cut).unwrap(), REQUEST_OTHER),
                Verdict::Relay(RELAY_HEAD_INCOMPLETE),
                "cut at {cut}"
            );
            // Same when the caller passes fewer bytes than the segment has.
            assert_eq!(
                scan_response(&head[..cut], 1000, REQUEST_OTHER),
                Verdict::Relay(RELAY_HEAD_INCOMPLETE),
                "cut at {cut}, long segment"
            );
        }
        assert_eq!(scan(head, 5, REQUEST_OTHER), splice(head.len(), 5));
    }

    /// A head of exactly `len` bytes: status line, Content-Length: 0, and
    /// one padding field sized to fit.
    fn head_of_len(len: usize) -> Vec<u8> {
        let mut h = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ".to_vec();
        let pad = len - h.len() - 4;
        h.extend(std::iter::repeat_n(b'p', pad));
        h.extend_from_slice(b"\r\n\r\n");
        assert_eq!(h.len(), len);
        h
    }

    #[test]
    fn scan_limit_is_inclusive() {
        let at_limit = head_of_len(SCAN_MAX);
        assert_eq!(scan(&at_limit, 0, REQUEST_OTHER), splice(SCAN_MAX, 0));
        let over = head_of_len(SCAN_MAX + 1);
        assert_eq!(
            scan(&over, 0, REQUEST_OTHER),
            Verdict::Relay(RELAY_HEAD_TOO_LONG)
        );
        // The caller passes only the first SCAN_MAX bytes of a long segment.
        assert_eq!(
            scan_response(&over[..SCAN_MAX], 1400 * 3, REQUEST_OTHER),
            Verdict::Relay(RELAY_HEAD_TOO_LONG)
        );
        // A head at the limit with its body in the same (GSO-sized) segment.
        let mut h = head_of_len(SCAN_MAX);
        let i = h.windows(3).position(|w| w == b": 0").unwrap();
        h[i + 2] = b'9';
        assert_eq!(scan(&h, 9, REQUEST_OTHER), splice(SCAN_MAX, 9));
    }

    /// The byte-at-a-time driver: what `scan_response` must equal.
    fn scan_bytes(payload: &[u8], seg_len: u32, request: u32) -> Verdict {
        let seg_len = u32::try_from(payload.len()).map_or(u32::MAX, |n| n.max(seg_len));
        let mut scanner = HeadScanner::new(request, seg_len);
        for &b in payload.iter().take(SCAN_MAX + 1) {
            if let Some(verdict) = scanner.feed(b) {
                return verdict;
            }
        }
        scanner.finish(payload.len())
    }

    /// Taking runs of ignored bytes changes no verdict: heads of
    /// every kind, cut at every length, with each byte replaced in turn by
    /// bytes that matter (line ends, controls, separators, obs-text).
    #[test]
    fn skipping_runs_changes_no_verdict() {
        let heads: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 19:40:21 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Mon, 23 Nov 2026 19:40:00 GMT\r\nConnection: keep-alive\r\nETag: \"6741f0e0-400\"\r\nAccept-Ranges: bytes\r\n\r\n",
            b"HTTP/1.1 404 Not Found With A Long Reason Phrase\r\nTransfer-Encoding: gzip, chunked, something long\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nX-Long-Header-Name-Here: \t value with\ttabs and \x80\xff obs-text \r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 12345678\r\nConnection: close, keep-alive\r\n\r\n",
        ];
        let bytes = [b'\t', b'\r', b'\n', 0x7f, 0, b' ', b':', b'a', 0x80, b'0'];
        let mut checked = 0;
        for head in heads {
            for request in [REQUEST_OTHER, REQUEST_HEAD] {
                let seg = u32::try_from(head.len()).unwrap() + 10;
                for cut in 0..=head.len() {
                    let p = &head[..cut];
                    assert_eq!(
                        scan_response(p, seg, request),
                        scan_bytes(p, seg, request),
                        "{:?} cut at {cut}",
                        String::from_utf8_lossy(head)
                    );
                    checked += 1;
                }
                for at in 0..head.len() {
                    for &b in &bytes {
                        let mut p = head.to_vec();
                        p[at] = b;
                        assert_eq!(
                            scan_response(&p, seg, request),
                            scan_bytes(&p, seg, request),
                            "{:?}",
                            String::from_utf8_lossy(&p)
                        );
                        checked += 1;
                    }
                }
            }
        }
        // Long heads around the scan limit: the skips stop short of it.
        for len in SCAN_MAX - 20..=SCAN_MAX + 20 {
            let h = head_of_len(len);
            for extra in [0, 100] {
                assert_eq!(
                    scan_response(&h, u32::try_from(len).unwrap() + extra, REQUEST_OTHER),
                    scan_bytes(&h, u32::try_from(len).unwrap() + extra, REQUEST_OTHER),
                    "head of {len}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn region_len_of_relay_is_none() {
        assert_eq!(Verdict::Relay(RELAY_TUNNEL).region_len(), None);
        assert!(relay::name(RELAY_TUNNEL).starts_with("relay-"));
    }
}
