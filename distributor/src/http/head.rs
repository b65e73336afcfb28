//! Request and response heads: the start line plus the header section, up to
//! and including the empty line that ends it.
//!
//! Parsing happens in two passes over the same bytes:
//!
//! 1. Our own structural scan ([`scan_head`]) walks the lines and enforces
//!    what must hold before anything is tokenized: every line ends in CRLF
//!    (no bare CR, no bare LF), no obs-fold, no whitespace before a colon, and
//!    the caps of [`Limits`]. It runs on partial input too, so a client that
//!    trickles an endless request line or header section is refused as soon
//!    as it crosses a cap instead of making us buffer forever.
//! 2. `httparse`, with every leniency of its [`httparse::ParserConfig`] left
//!    off, tokenizes the start line and the fields and checks their bytes
//!    (method and field names are tchar tokens, values hold no CTL but HTAB).
//!    On partial input it sees the complete lines and a partial start line,
//!    never a partial field line (whose meaning the next byte may change).
//!
//! How the bytes are split across reads never decides whether a head is
//! accepted or where it ends (a test checks every prefix of mutated heads);
//! it only decides how early a bad head is refused, and, for a head with
//! several faults, which of them is reported.
//!
//! Then request-only rules run on the owned result: a request target must be
//! ASCII and HTTP/1.1 needs exactly one valid `Host` (RFC 9112 §3.2).
//!
//! The functions are stateless: the caller keeps its read buffer and calls
//! again after every read. Each call costs time linear in the bytes it looks
//! at, and it never looks past `max_head_bytes`, so re-parsing a growing
//! buffer stays bounded by the caps.

use thiserror::Error;

/// Caps on a head, checked on complete and partial input alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_field_names,
    reason = "`max_` reads as a cap where the fields are set"
)]
pub struct Limits {
    /// Longest start line (request line, or status line for responses), not
    /// counting its CRLF. Over it a request gets 414.
    pub max_request_line: usize,
    /// Longest head, counting every byte up to and including the CRLF of the
    /// empty line (and any empty lines before a request line). Over it a
    /// request gets 431.
    pub max_head_bytes: usize,
    /// Most header field lines. Over it a request gets 431.
    pub max_headers: usize,
}

impl Default for Limits {
    /// 8 KiB request line, 64 KiB head, 100 fields: what common servers use,
    /// generous for browsers and small enough to bound per-connection memory.
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// The outcome of parsing a buffer that may not yet hold a whole head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is complete. `len` is its size in bytes including the final
    /// CRLFCRLF; the body (or the next pipelined message) starts at `len`.
    Complete {
        /// The parsed head.
        head: T,
        /// Bytes of the buffer taken by the head.
        len: usize,
    },
    /// Valid so far and within the caps: read more and call again.
    Partial,
}

/// Why a head was rejected. [`HeadError::status`] gives the status to answer
/// a client with; for a backend's response head the proxy answers 502 whatever
/// the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    /// The start line is longer than [`Limits::max_request_line`].
    #[error("start line longer than {limit} bytes")]
    StartLineTooLong {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// The head is longer than [`Limits::max_head_bytes`].
    #[error("message head larger than {limit} bytes")]
    HeadTooLarge {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// More field lines than [`Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// A well-formed `HTTP/x.y` version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// A CR not followed by LF (RFC 9112 §2.2 lets us reject it).
    #[error("bare CR in message head")]
    BareCr,
    /// A line ended by LF alone. RFC 9112 §2.2 allows a recipient to accept
    /// it; we reject it because a peer behind or in front of us that reads it
    /// differently is the classic request-smuggling gap.
    #[error("bare LF line ending in message head")]
    BareLf,
    /// A field line starting with SP or HTAB: obs-fold (RFC 9112 §5.2), or
    /// whitespace before the first field (§2.2); we reject both.
    #[error("obsolete line folding in header section")]
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1 says a
    /// server MUST reject it with 400; a proxy MUST remove it from responses,
    /// and we reject those instead).
    #[error("whitespace between header field name and colon")]
    WhitespaceBeforeColon,
    /// A field line starting with a colon.
    #[error("empty header field name")]
    EmptyHeaderName,
    /// A field name with a byte that is not a tchar, or a line without colon.
    #[error("invalid header field name")]
    InvalidHeaderName,
    /// A field value with a CTL other than HTAB.
    #[error("invalid byte in header field value")]
    InvalidHeaderValue,
    /// The method is not a token, or is not followed by exactly one SP.
    #[error("invalid request method")]
    InvalidMethod,
    /// The request target is empty, holds a byte outside visible ASCII, or is
    /// not followed by exactly one SP.
    #[error("invalid request target")]
    InvalidTarget,
    /// Anything else wrong in the start line: a malformed version, bytes after
    /// the version, a malformed status line, empty lines before a status line.
    #[error("malformed start line")]
    InvalidStartLine,
    /// A response status code outside 100..=599 (RFC 9110 §15).
    #[error("invalid response status code")]
    InvalidStatusCode,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// A request with more than one `Host` field line (RFC 9112 §3.2).
    #[error("multiple Host headers")]
    MultipleHost,
    /// A `Host` value that is not `uri-host [ ":" port ]` (RFC 9112 §3.2).
    #[error("invalid Host header")]
    InvalidHost,
}

impl HeadError {
    /// The status code to answer a client whose request head failed so.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::StartLineTooLong { .. } => 414,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::UnsupportedVersion => 505,
            Self::BareCr
            | Self::BareLf
            | Self::ObsFold
            | Self::WhitespaceBeforeColon
            | Self::EmptyHeaderName
            | Self::InvalidHeaderName
            | Self::InvalidHeaderValue
            | Self::InvalidMethod
            | Self::InvalidTarget
            | Self::InvalidStartLine
            | Self::InvalidStatusCode
            | Self::MissingHost
            | Self::MultipleHost
            | Self::InvalidHost => 400,
        }
    }
}

/// A parsed request head. Owns its data so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token, case preserved (methods are case-sensitive).
    pub method: String,
    /// The request target as sent (origin, absolute, authority or asterisk
    /// form); always visible ASCII.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The fields in order, names as sent, values without surrounding OWS.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first value of the field `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first_header(&self.headers, name)
    }

    /// Every value of the field `name` (case-insensitive), in order.
    pub fn headers_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        all_headers(&self.headers, name)
    }

    /// Whether the client's connection may carry another request after this
    /// one (RFC 9112 §9.3): HTTP/1.1 unless `Connection` lists `close`;
    /// HTTP/1.0 only if it lists `keep-alive` and not `close`.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    /// An HTTP/1.0 request's expectation is ignored (RFC 9110 §10.1.1).
    #[must_use]
    pub fn expects_continue(&self) -> bool {
        self.version >= 1
            && self
                .headers_all("expect")
                .flat_map(list_elements)
                .any(|e| e.eq_ignore_ascii_case(b"100-continue"))
    }

    /// Whether the request would turn the connection into a tunnel or another
    /// protocol: method `CONNECT`, or any `Upgrade` field. The proxy does not
    /// support either.
    #[must_use]
    pub fn is_upgrade_or_connect(&self) -> bool {
        self.method == "CONNECT" || self.header("upgrade").is_some()
    }
}

/// A parsed response head. Owns its data so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The status code, 100..=599.
    pub status: u16,
    /// The reason phrase; empty when absent or when it held obs-text.
    pub reason: String,
    /// The fields in order, names as sent, values without surrounding OWS.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    /// Every value of the field `name` (case-insensitive), in order.
    pub fn headers_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        all_headers(&self.headers, name)
    }

    /// Whether the backend's connection may be reused after this response
    /// (framing permitting), by the same rule as [`RequestHead::keep_alive`].
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// Whether this is an interim response (1xx) that is forwarded and then
    /// followed by the final response on the same connection. `101 Switching
    /// Protocols` is excluded: nothing follows it, and as we never forward an
    /// `Upgrade`, [`crate::http::response_body`] rejects it.
    #[must_use]
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a request head from the start of `buf`.
///
/// Empty lines (CRLF) before the request line are skipped, as RFC 9112 §2.2
/// suggests for robustness; they count in `len` and in `max_head_bytes`.
///
/// # Errors
///
/// A [`HeadError`] as soon as the bytes seen so far cannot start a valid head
/// or exceed a cap; [`HeadError::status`] says what to answer.
pub fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HeadError> {
    let scan = scan_head(buf, limits, Kind::Request)?;
    let input = &buf[..scan.tokenize];
    let mut headers = vec![httparse::EMPTY_HEADER; scan.field_lines];
    let mut req = httparse::Request::new(&mut headers);
    let status = match parser_config().parse_request(&mut req, input) {
        Ok(status) => status,
        Err(e) => {
            return Err(match (e, req.method, req.path) {
                (httparse::Error::Token, None, _) => HeadError::InvalidMethod,
                (httparse::Error::Token, Some(_), _) => HeadError::InvalidTarget,
                (httparse::Error::Version, Some(method), Some(target)) => {
                    // The version starts after "method SP target SP".
                    let at = scan.start_line + method.len() + target.len() + 2;
                    version_error(version_token(input.get(at..).unwrap_or_default()))
                }
                (other, ..) => map_common(other, limits),
            });
        }
    };
    let Some(end) = scan.end else {
        return Ok(Parsed::Partial);
    };
    if status != httparse::Status::Complete(end) {
        // Our scan found the end of the head where httparse did not: this
        // cannot happen for input the scan accepted, but never trust it.
        return Err(HeadError::InvalidStartLine);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::InvalidStartLine);
    };
    // httparse accepts UTF-8 in the target; RFC 9112 §3.2 does not, and a
    // non-ASCII path that some backend decodes differently is not worth it.
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::InvalidTarget);
    }
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        headers: own_headers(req.headers),
    };
    check_host(&head)?;
    Ok(Parsed::Complete { head, len: end })
}

/// Parses a response head from the start of `buf`, as strictly as a request
/// head: a backend that sends obs-fold, bare LF or a space before a colon is
/// refused (the proxy answers 502) rather than repaired.
///
/// # Errors
///
/// A [`HeadError`] as soon as the bytes seen so far cannot start a valid head
/// or exceed a cap.
pub fn parse_response_head(buf: &[u8], limits: &Limits) -> Result<Parsed<ResponseHead>, HeadError> {
    let scan = scan_head(buf, limits, Kind::Response)?;
    let input = &buf[..scan.tokenize];
    let mut headers = vec![httparse::EMPTY_HEADER; scan.field_lines];
    let mut resp = httparse::Response::new(&mut headers);
    let status = match parser_config().parse_response(&mut resp, input) {
        Ok(status) => status,
        Err(httparse::Error::Version) => return Err(version_error(version_token(input))),
        Err(e) => return Err(map_common(e, limits)),
    };
    let Some(end) = scan.end else {
        return Ok(Parsed::Partial);
    };
    if status != httparse::Status::Complete(end) {
        return Err(HeadError::InvalidStartLine);
    }
    let (Some(version), Some(code), Some(reason)) = (resp.version, resp.code, resp.reason) else {
        return Err(HeadError::InvalidStartLine);
    };
    // RFC 9110 §15: values outside 100..=599 are invalid; a client would
    // treat them as 5xx, a gateway has nothing sensible to forward.
    if !(100..=599).contains(&code) {
        return Err(HeadError::InvalidStatusCode);
    }
    Ok(Parsed::Complete {
        head: ResponseHead {
            version,
            status: code,
            reason: reason.to_owned(),
            headers: own_headers(resp.headers),
        },
        len: end,
    })
}

/// All leniencies off; spelled out so the choice is visible and survives a
/// change of httparse's defaults.
fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_requests(false)
        .ignore_invalid_headers_in_responses(false);
    config
}

/// Maps the httparse errors whose meaning does not depend on the message kind.
fn map_common(e: httparse::Error, limits: &Limits) -> HeadError {
    match e {
        httparse::Error::HeaderName => HeadError::InvalidHeaderName,
        httparse::Error::HeaderValue => HeadError::InvalidHeaderValue,
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders {
            limit: limits.max_headers,
        },
        httparse::Error::Token => HeadError::InvalidMethod,
        httparse::Error::NewLine | httparse::Error::Status | httparse::Error::Version => {
            HeadError::InvalidStartLine
        }
    }
}

/// httparse reports any version but 1.0 and 1.1 the same way. A version that
/// is well-formed (`HTTP/` DIGIT `.` DIGIT, or a prefix of it when the line is
/// still partial) but other gets 505; anything else is malformed, 400.
fn version_error(token: &[u8]) -> HeadError {
    let Some(rest) = token.strip_prefix(b"HTTP/") else {
        return HeadError::InvalidStartLine;
    };
    let well_formed = match rest {
        [major] | [major, b'.'] => major.is_ascii_digit(),
        [major, b'.', minor] => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    };
    if well_formed {
        HeadError::UnsupportedVersion
    } else {
        HeadError::InvalidStartLine
    }
}

/// The bytes of `input` up to the first SP, CR or LF.
fn version_token(input: &[u8]) -> &[u8] {
    let end = input
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(input.len());
    &input[..end]
}

fn own_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

fn first_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The iterator borrows `name` too, but yields slices of `headers` only.
fn all_headers<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The elements of a comma-separated list field value (RFC 9110 §5.6.1),
/// with OWS trimmed. Empty elements are returned as empty slices; callers
/// decide whether to ignore or reject them. Commas inside quoted strings are
/// not special: the fields we read as lists (`Connection`, `Expect`,
/// `Transfer-Encoding`, `Content-Length`) have no business quoting one, and
/// the framing fields then fail to parse, which is the safe outcome.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// `value` without leading and trailing SP / HTAB.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn keep_alive(version: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for element in all_headers(headers, "connection").flat_map(list_elements) {
        close |= element.eq_ignore_ascii_case(b"close");
        keep_alive |= element.eq_ignore_ascii_case(b"keep-alive");
    }
    // `close` wins over everything: when in doubt, close.
    !close && (version >= 1 || keep_alive)
}

/// RFC 9112 §3.2: HTTP/1.1 needs exactly one `Host`, any request at most one,
/// and its value must be `uri-host [ ":" port ]` (empty is allowed).
fn check_host(head: &RequestHead) -> Result<(), HeadError> {
    let mut hosts = head.headers_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if head.version >= 1 => Err(HeadError::MissingHost),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(HeadError::MultipleHost),
        (Some(value), None) if valid_host(value) => Ok(()),
        (Some(_), None) => Err(HeadError::InvalidHost),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986): a reg-name or IPv4 address
/// (unreserved, pct-encoded, sub-delims) or a bracketed IP literal, then an
/// optional port of digits. Enough to refuse values that could be read as a
/// path, userinfo or a second field.
fn valid_host(value: &[u8]) -> bool {
    let is_reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        let valid_literal = !literal.is_empty()
            && literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b) || is_reg_name(b));
        if !valid_literal {
            return false;
        }
        (&b""[..], &rest[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        }
    };
    let valid_port = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host.iter().all(is_reg_name) && valid_port
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// What the structural scan learned.
struct Scan {
    /// Where the start line begins (after skipped empty lines).
    start_line: usize,
    /// Bytes of `buf` to hand httparse: the head if complete, else the
    /// complete lines (and a partial start line).
    tokenize: usize,
    /// The end of the head (after the final CRLF), if present.
    end: Option<usize>,
    /// Field lines seen, complete or not: the size httparse's array needs.
    field_lines: usize,
}

/// Walks the lines of a head, complete or not, and rejects what is wrong in
/// its structure or over a cap. Looks at no more than `max_head_bytes`.
fn scan_head(buf: &[u8], limits: &Limits, kind: Kind) -> Result<Scan, HeadError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut pos = 0;
    if kind == Kind::Request {
        while window[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
    } else if matches!(window.first(), Some(b'\r' | b'\n')) {
        return Err(HeadError::InvalidStartLine);
    }
    let start_line = pos;
    let mut field_lines = 0;
    loop {
        let rest = &window[pos..];
        let is_start_line = pos == start_line;
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // A partial line: check what can be checked already.
            let content = rest.strip_suffix(b"\r").unwrap_or(rest);
            if content.contains(&b'\r') {
                return Err(HeadError::BareCr);
            }
            if is_start_line {
                if content.len() > limits.max_request_line {
                    return Err(HeadError::StartLineTooLong {
                        limit: limits.max_request_line,
                    });
                }
            } else if !content.is_empty() {
                check_field_line(content)?;
                field_lines += 1;
                if field_lines > limits.max_headers {
                    return Err(HeadError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
            }
            if buf.len() >= limits.max_head_bytes {
                // Not complete within the cap: the head would exceed it.
                return Err(HeadError::HeadTooLarge {
                    limit: limits.max_head_bytes,
                });
            }
            return Ok(Scan {
                start_line,
                // httparse sees a partial start line (to fail early on a bad
                // method or version), but not a partial field line: it would
                // judge `Name ` before knowing whether a colon follows, and
                // answer differently from the complete line. Nor a final CR
                // that may yet turn out bare.
                tokenize: if is_start_line {
                    pos + content.len()
                } else {
                    pos
                },
                end: None,
                field_lines,
            });
        };
        let Some(content) = rest[..lf].strip_suffix(b"\r") else {
            return Err(HeadError::BareLf);
        };
        if content.contains(&b'\r') {
            return Err(HeadError::BareCr);
        }
        pos += lf + 1;
        if is_start_line {
            if content.len() > limits.max_request_line {
                return Err(HeadError::StartLineTooLong {
                    limit: limits.max_request_line,
                });
            }
        } else if content.is_empty() {
            return Ok(Scan {
                start_line,
                tokenize: pos,
                end: Some(pos),
                field_lines,
            });
        } else {
            check_field_line(content)?;
            field_lines += 1;
            if field_lines > limits.max_headers {
                return Err(HeadError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
        }
    }
}

/// The checks on one field line (complete or partial, without CRLF) that
/// httparse either does not make or reports too vaguely.
fn check_field_line(line: &[u8]) -> Result<(), HeadError> {
    match line {
        [b' ' | b'\t', ..] => return Err(HeadError::ObsFold),
        [b':', ..] => return Err(HeadError::EmptyHeaderName),
        _ => {}
    }
    if let Some(colon) = line.iter().position(|&b| b == b':')
        && matches!(line[colon - 1], b' ' | b'\t')
    {
        return Err(HeadError::WhitespaceBeforeColon);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Rng;
    use super::*;

    fn req(raw: &str) -> Result<Parsed<RequestHead>, HeadError> {
        parse_request_head(raw.as_bytes(), &Limits::default())
    }

    fn complete(raw: &str) -> (RequestHead, usize) {
        match req(raw) {
            Ok(Parsed::Complete { head, len }) => (head, len),
            other => panic!("expected a complete head for {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn good_requests() {
        // (input, method, target, version, header count)
        let cases: &[(&str, &str, &str, u8, usize)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", 1, 1),
            ("GET / HTTP/1.0\r\n\r\n", "GET", "/", 0, 0),
            (
                "POST /x?y=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 3\r\n\r\n",
                "POST",
                "/x?y=1",
                1,
                2,
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                "OPTIONS",
                "*",
                1,
                1,
            ),
            (
                "GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET",
                "http://a/b",
                1,
                1,
            ),
            (
                "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET",
                "/",
                1,
                1,
            ),
            (
                "M-SEARCH * HTTP/1.1\r\nHost: [::1]:1900\r\n\r\n",
                "M-SEARCH",
                "*",
                1,
                1,
            ),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET", "/", 1, 1),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
                "GET",
                "/",
                1,
                3,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n",
                "GET",
                "/",
                1,
                2,
            ),
            ("get / HTTP/1.1\r\nhost: a\r\n\r\n", "get", "/", 1, 1),
        ];
        for &(raw, method, target, version, count) in cases {
            let (head, len) = complete(raw);
            assert_eq!(len, raw.len(), "{raw:?}");
            assert_eq!(head.method, method, "{raw:?}");
            assert_eq!(head.target, target, "{raw:?}");
            assert_eq!(head.version, version, "{raw:?}");
            assert_eq!(head.headers.len(), count, "{raw:?}");
            prefixes_agree(raw.as_bytes(), parse_request_head, None);
        }
    }

    /// Every proper prefix of `raw` is either `Partial` or already fails with
    /// the error the whole input fails with (`None`: whole input is good, so
    /// every prefix must be `Partial`). So a head read in any pieces gives the
    /// same answer, possibly earlier, never a different one.
    fn prefixes_agree<T: std::fmt::Debug>(
        raw: &[u8],
        parse: fn(&[u8], &Limits) -> Result<Parsed<T>, HeadError>,
        want: Option<HeadError>,
    ) {
        for cut in 0..raw.len() {
            match parse(&raw[..cut], &Limits::default()) {
                Ok(Parsed::Partial) => {}
                Err(e) if Some(e) == want => {}
                other => panic!(
                    "prefix {:?}: {other:?}",
                    String::from_utf8_lossy(&raw[..cut])
                ),
            }
        }
    }

    /// The weaker property that holds for any input: a prefix is rejected
    /// only if the whole input is rejected too (maybe for another of its
    /// faults), and complete as soon as, and exactly as, the whole input is.
    /// So how a head is split never decides whether it is accepted or where
    /// it ends.
    fn prefixes_monotone<T: std::fmt::Debug + PartialEq>(
        raw: &[u8],
        parse: fn(&[u8], &Limits) -> Result<Parsed<T>, HeadError>,
    ) {
        let whole = parse(raw, &Limits::default());
        for cut in 0..raw.len() {
            let got = parse(&raw[..cut], &Limits::default());
            let fine = match (&got, &whole) {
                (_, Ok(Parsed::Complete { len, .. })) if cut >= *len => got == whole,
                (Err(_), Err(_)) | (Ok(Parsed::Partial), _) => true,
                _ => false,
            };
            assert!(
                fine,
                "prefix {:?} of {:?}: {got:?}, whole: {whole:?}",
                String::from_utf8_lossy(&raw[..cut]),
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn values_keep_bytes_and_order_without_ows() {
        let (head, _) = complete(
            "GET / HTTP/1.1\r\nHost: a\r\nX-A:  one two \t\r\nx-a: 2\r\nX-B: \u{e9}\r\n\r\n",
        );
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_owned(), b"a".to_vec()),
                ("X-A".to_owned(), b"one two".to_vec()),
                ("x-a".to_owned(), b"2".to_vec()),
                ("X-B".to_owned(), "\u{e9}".as_bytes().to_vec()),
            ]
        );
        assert_eq!(head.header("x-A"), Some(&b"one two"[..]));
        assert_eq!(
            head.headers_all("X-A").collect::<Vec<_>>(),
            vec![&b"one two"[..], &b"2"[..]]
        );
        assert_eq!(head.header("missing"), None);
        // The values outlive a short-lived name.
        let name = String::from("x-a");
        let values: Vec<&[u8]> = head.headers_all(&name).collect();
        drop(name);
        assert_eq!(values.len(), 2);
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    fn bad_requests() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(100)
        );
        let cases: &[(&str, HeadError)] = &[
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
                HeadError::ObsFold,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
                HeadError::ObsFold,
            ),
            ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", HeadError::ObsFold),
            (
                "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
                HeadError::WhitespaceBeforeColon,
            ),
            (
                "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
                HeadError::WhitespaceBeforeColon,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
                HeadError::WhitespaceBeforeColon,
            ),
            ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", HeadError::BareCr),
            ("GET / HTTP/1.1\rHost: a\r\n\r\n", HeadError::BareCr),
            ("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BareCr),
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", HeadError::BareCr),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", HeadError::BareLf),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", HeadError::BareLf),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", HeadError::BareLf),
            ("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BareLf),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
                HeadError::InvalidHeaderValue,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
                HeadError::InvalidHeaderValue,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n",
                HeadError::InvalidHeaderValue,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n",
                HeadError::InvalidHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX y: a\r\n\r\n",
                HeadError::InvalidHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
                HeadError::InvalidHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX\": a\r\n\r\n",
                HeadError::InvalidHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n",
                HeadError::EmptyHeaderName,
            ),
            ("GET / HTTP/1.1\r\n\r\n", HeadError::MissingHost),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                HeadError::MultipleHost,
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
                HeadError::MultipleHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
                HeadError::InvalidHost,
            ),
            (
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                HeadError::UnsupportedVersion,
            ),
            (
                "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                HeadError::UnsupportedVersion,
            ),
            (
                "GET / HTTP/2\r\nHost: a\r\n\r\n",
                HeadError::UnsupportedVersion,
            ),
            (
                "GET / HTTP/1.1x\r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            (
                "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            (
                "GET / http/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            (
                "GET / FOO/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            (
                "GET / HTTP/11.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            ("GET /\r\nHost: a\r\n\r\n", HeadError::InvalidTarget),
            (
                "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidTarget,
            ),
            (
                "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidStartLine,
            ),
            (
                "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidTarget,
            ),
            (
                "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidTarget,
            ),
            (
                "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidMethod,
            ),
            (
                "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidMethod,
            ),
            (
                " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                HeadError::InvalidMethod,
            ),
            (&long_target, HeadError::StartLineTooLong { limit: 8192 }),
            (&many_headers, HeadError::TooManyHeaders { limit: 100 }),
        ];
        for (raw, want) in cases {
            assert_eq!(req(raw), Err(*want), "{raw:?}");
            prefixes_agree(raw.as_bytes(), parse_request_head, Some(*want));
        }
    }

    #[test]
    fn every_ctl_in_a_value_is_rejected_but_htab() {
        for b in (0u8..0x20).chain([0x7f]) {
            let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: a".to_vec();
            raw.push(b);
            raw.extend_from_slice(b"b\r\n\r\n");
            let got = parse_request_head(&raw, &Limits::default());
            match b {
                b'\t' => assert!(matches!(got, Ok(Parsed::Complete { .. })), "{b:#x}"),
                b'\r' => assert_eq!(got, Err(HeadError::BareCr), "{b:#x}"),
                b'\n' => assert_eq!(got, Err(HeadError::BareLf), "{b:#x}"),
                _ => assert_eq!(got, Err(HeadError::InvalidHeaderValue), "{b:#x}"),
            }
        }
    }

    #[test]
    fn statuses() {
        let cases = [
            (HeadError::StartLineTooLong { limit: 1 }, 414),
            (HeadError::HeadTooLarge { limit: 1 }, 431),
            (HeadError::TooManyHeaders { limit: 1 }, 431),
            (HeadError::UnsupportedVersion, 505),
            (HeadError::ObsFold, 400),
            (HeadError::BareCr, 400),
            (HeadError::BareLf, 400),
            (HeadError::MissingHost, 400),
            (HeadError::MultipleHost, 400),
            (HeadError::InvalidHeaderValue, 400),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
        }
    }

    #[test]
    fn caps_on_complete_heads() {
        let limits = Limits {
            max_request_line: 16,
            max_head_bytes: 64,
            max_headers: 2,
        };
        let parse = |raw: &str| parse_request_head(raw.as_bytes(), &limits);
        // Exactly at the caps is fine.
        let line = "GET /12 HTTP/1.1"; // 16 bytes
        assert!(matches!(
            parse(&format!("{line}\r\nHost: a\r\nX: b\r\n\r\n")),
            Ok(Parsed::Complete { .. })
        ));
        assert_eq!(
            parse("GET /123 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(HeadError::StartLineTooLong { limit: 16 })
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\nY: c\r\n\r\n"),
            Err(HeadError::TooManyHeaders { limit: 2 })
        );
        let exact = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(32));
        assert_eq!(exact.len(), 64);
        assert!(matches!(
            parse(&exact),
            Ok(Parsed::Complete { len: 64, .. })
        ));
        let over = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "v".repeat(33));
        assert_eq!(parse(&over), Err(HeadError::HeadTooLarge { limit: 64 }));
    }

    #[test]
    fn exactly_max_headers_is_accepted() {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: y\r\n".repeat(99));
        let (head, _) = complete(&raw);
        assert_eq!(head.headers.len(), 100);
    }

    #[test]
    fn caps_on_partial_heads() {
        let limits = Limits::default();
        // A request line that never ends: 414 as soon as it is over the cap.
        let mut line = b"GET /".to_vec();
        line.resize(8192, b'a');
        assert_eq!(parse_request_head(&line, &limits), Ok(Parsed::Partial));
        line.push(b'a');
        assert_eq!(
            parse_request_head(&line, &limits),
            Err(HeadError::StartLineTooLong { limit: 8192 })
        );
        // A CR right at the cap is not counted: the line may still end there.
        let mut at_cap = format!("GET /{} HTTP/1.1", "a".repeat(8192 - 14)).into_bytes();
        assert_eq!(at_cap.len(), 8192);
        at_cap.push(b'\r');
        assert_eq!(parse_request_head(&at_cap, &limits), Ok(Parsed::Partial));
        // A header section that never ends: 431 at the cap.
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        head.resize(64 * 1024 - 1, b'v');
        assert_eq!(parse_request_head(&head, &limits), Ok(Parsed::Partial));
        head.push(b'v');
        assert_eq!(
            parse_request_head(&head, &limits),
            Err(HeadError::HeadTooLarge { limit: 64 * 1024 })
        );
        // Too many header lines, the last still partial.
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{}X", "X: y\r\n".repeat(99));
        assert_eq!(
            parse_request_head(raw.as_bytes(), &limits),
            Err(HeadError::TooManyHeaders { limit: 100 })
        );
        // Endless empty lines before the request line are capped too.
        let empties = "\r\n".repeat(32 * 1024);
        assert_eq!(
            parse_request_head(empties.as_bytes(), &limits),
            Err(HeadError::HeadTooLarge { limit: 64 * 1024 })
        );
    }

    #[test]
    fn partial_prefixes_are_partial_and_errors_come_early() {
        let raw =
            "POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nX-Tab:\ta\tb\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(req(&raw[..cut]), Ok(Parsed::Partial), "cut at {cut}");
        }
        assert!(matches!(req(raw), Ok(Parsed::Complete { .. })));
        // Errors found before the head is complete.
        let early: &[(&str, HeadError)] = &[
            ("GET / HTTP/2", HeadError::UnsupportedVersion),
            ("GET / HTTP/2.", HeadError::UnsupportedVersion),
            ("GET / HTTP/3.0\r", HeadError::UnsupportedVersion),
            ("GET / XTTP", HeadError::InvalidStartLine),
            ("G(T", HeadError::InvalidMethod),
            ("GET /\x01", HeadError::InvalidTarget),
            ("GET / HTTP/1.1\r\nHost: a\r\n x", HeadError::ObsFold),
            (
                "GET / HTTP/1.1\r\nHost : a",
                HeadError::WhitespaceBeforeColon,
            ),
            ("GET / HTTP/1.1\r\n:", HeadError::EmptyHeaderName),
            ("GET / HTTP/1.1\r\nHost: a\rb", HeadError::BareCr),
            ("GET / HTTP/1.1\n", HeadError::BareLf),
            ("GET / HTTP/1.1\r\nX: \0\r\n", HeadError::InvalidHeaderValue),
            ("GET / HTTP/1.1\r\nX y: a\r\n", HeadError::InvalidHeaderName),
        ];
        for (raw, want) in early {
            assert_eq!(req(raw), Err(*want), "{raw:?}");
        }
    }

    #[test]
    fn pipelined_requests() {
        let first = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let second = "GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let buf = format!("{first}{second}GET /3 HT");
        let (head, len) = complete(&buf);
        assert_eq!(head.target, "/1");
        assert_eq!(len, first.len());
        let (head, len2) = complete(&buf[len..]);
        assert_eq!(head.target, "/2");
        assert_eq!(len2, second.len());
        assert!(!head.keep_alive());
        assert_eq!(req(&buf[len + len2..]), Ok(Parsed::Partial));
        // Whatever follows the head is not looked at, even garbage.
        let (_, len) = complete("GET / HTTP/1.1\r\nHost: a\r\n\r\n\0\r\x7f\n \t");
        assert_eq!(len, 27);
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: Close\r\n", false),
            ("1.1", "Connection: keep-alive\r\n", true),
            ("1.1", "Connection: foo, CLOSE\r\n", false),
            ("1.1", "Connection: foo\r\nConnection: close\r\n", false),
            ("1.1", "Connection: closed\r\n", true),
            ("1.0", "", false),
            ("1.0", "Connection: keep-alive\r\n", true),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: te ,\tkeep-alive \r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
            ("1.0", "Connection: keep-alives\r\n", false),
        ];
        for (version, fields, want) in cases {
            let raw = format!("GET / HTTP/{version}\r\nHost: a\r\n{fields}\r\n");
            assert_eq!(complete(&raw).0.keep_alive(), *want, "{raw:?}");
        }
    }

    #[test]
    fn expect_and_upgrade() {
        let cases: &[(&str, bool, bool)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, false),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                true,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n",
                true,
                false,
            ),
            (
                "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
                false,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                false,
                true,
            ),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false, true),
            (
                "connect a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                false,
                false,
            ),
        ];
        for (raw, expects, upgrade) in cases {
            let (head, _) = complete(raw);
            assert_eq!(head.expects_continue(), *expects, "{raw:?}");
            assert_eq!(head.is_upgrade_or_connect(), *upgrade, "{raw:?}");
        }
    }

    fn resp(raw: &str) -> Result<Parsed<ResponseHead>, HeadError> {
        parse_response_head(raw.as_bytes(), &Limits::default())
    }

    #[test]
    fn good_responses() {
        let cases: &[(&str, u8, u16, &str, usize, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                1,
                200,
                "OK",
                1,
                false,
            ),
            (
                "HTTP/1.0 404 Not Found\r\n\r\n",
                0,
                404,
                "Not Found",
                0,
                false,
            ),
            ("HTTP/1.1 204 \r\n\r\n", 1, 204, "", 0, false),
            ("HTTP/1.1 204\r\n\r\n", 1, 204, "", 0, false),
            ("HTTP/1.1 100 Continue\r\n\r\n", 1, 100, "Continue", 0, true),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                1,
                103,
                "Early Hints",
                1,
                true,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                1,
                101,
                "Switching Protocols",
                0,
                false,
            ),
            ("HTTP/1.1 599 x\r\n\r\n", 1, 599, "x", 0, false),
            ("HTTP/1.1 200 caf\u{e9}\r\n\r\n", 1, 200, "", 0, false),
        ];
        for &(raw, version, status, reason, count, informational) in cases {
            let Ok(Parsed::Complete { head, len }) = resp(raw) else {
                panic!("{raw:?}: {:?}", resp(raw));
            };
            assert_eq!(len, raw.len(), "{raw:?}");
            assert_eq!(head.version, version, "{raw:?}");
            assert_eq!(head.status, status, "{raw:?}");
            assert_eq!(head.reason, reason, "{raw:?}");
            assert_eq!(head.headers.len(), count, "{raw:?}");
            assert_eq!(head.is_informational(), informational, "{raw:?}");
            prefixes_agree(raw.as_bytes(), parse_response_head, None);
        }
    }

    #[test]
    fn response_keep_alive() {
        let cases: &[(&str, bool)] = &[
            ("HTTP/1.1 200 OK\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (raw, want) in cases {
            let Ok(Parsed::Complete { head, .. }) = resp(raw) else {
                panic!("{raw:?}");
            };
            assert_eq!(head.keep_alive(), *want, "{raw:?}");
        }
    }

    #[test]
    fn bad_responses() {
        let cases: &[(&str, HeadError)] = &[
            ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HeadError::ObsFold),
            (
                "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
                HeadError::WhitespaceBeforeColon,
            ),
            ("HTTP/1.1 200 OK\nX: a\r\n\r\n", HeadError::BareLf),
            ("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", HeadError::BareCr),
            (
                "HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
                HeadError::InvalidHeaderValue,
            ),
            (
                "HTTP/1.1 200 OK\r\nX/1: a\r\n\r\n",
                HeadError::InvalidHeaderName,
            ),
            ("HTTP/1.1 200 OK\r\n: a\r\n\r\n", HeadError::EmptyHeaderName),
            ("HTTP/2.0 200 OK\r\n\r\n", HeadError::UnsupportedVersion),
            ("HTTP/1.1 20 OK\r\n\r\n", HeadError::InvalidStartLine),
            ("HTTP/1.1 2000 OK\r\n\r\n", HeadError::InvalidStartLine),
            ("HTTP/1.1  200 OK\r\n\r\n", HeadError::InvalidStartLine),
            ("HTTP/1.1 200 O\x01K\r\n\r\n", HeadError::InvalidStartLine),
            ("HTTP/1.1 099 x\r\n\r\n", HeadError::InvalidStatusCode),
            ("HTTP/1.1 600 x\r\n\r\n", HeadError::InvalidStatusCode),
            ("\r\nHTTP/1.1 200 OK\r\n\r\n", HeadError::InvalidStartLine),
            ("ICY 200 OK\r\n\r\n", HeadError::InvalidStartLine),
        ];
        for (raw, want) in cases {
            assert_eq!(resp(raw), Err(*want), "{raw:?}");
            prefixes_agree(raw.as_bytes(), parse_response_head, Some(*want));
        }
    }

    #[test]
    fn response_caps_and_partials() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..raw.len() - 3 {
            assert_eq!(resp(&raw[..cut]), Ok(Parsed::Partial), "cut at {cut}");
        }
        assert!(matches!(resp(raw), Ok(Parsed::Complete { len: 38, .. })));
        let limits = Limits {
            max_request_line: 12,
            max_head_bytes: 32,
            max_headers: 1,
        };
        let parse = |raw: &str| parse_response_head(raw.as_bytes(), &limits);
        assert_eq!(
            parse("HTTP/1.1 200 OK"),
            Err(HeadError::StartLineTooLong { limit: 12 })
        );
        assert_eq!(
            parse("HTTP/1.1 200\r\nA: b\r\nC"),
            Err(HeadError::TooManyHeaders { limit: 1 })
        );
        assert_eq!(
            parse("HTTP/1.1 200\r\nA: bbbbbbbbbbbbbbbbbb"),
            Err(HeadError::HeadTooLarge { limit: 32 })
        );
    }

    #[test]
    fn list_helpers() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(
            list_elements(b"a, b ,,\tc").collect::<Vec<_>>(),
            vec![&b"a"[..], b"b", b"", b"c"]
        );
    }

    #[test]
    fn mutated_heads_never_panic_and_splits_never_decide() {
        const ALPHABET: &[u8] = b"\r\n \t:aZ0/;,\"\\\0\x7f\x80H.1";
        let requests: &[&[u8]] = &[
            b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.0\r\nX: y\r\n\r\n",
        ];
        let responses: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.0 404 x\r\nX: y\r\n\r\n",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let base = requests[rng.below(requests.len())];
            prefixes_monotone(&rng.mutate(base, ALPHABET), parse_request_head);
            let base = responses[rng.below(responses.len())];
            prefixes_monotone(&rng.mutate(base, ALPHABET), parse_response_head);
        }
    }
}
