//! Where a message body ends (RFC 9112 §6.3).
//!
//! `Transfer-Encoding` and `Content-Length` decide how every byte after a
//! head is read; a proxy that reads them differently from a peer lets one
//! message hide inside another (request smuggling). So wherever the RFC lets a
//! recipient either repair or reject, we reject: a request with both fields,
//! conflicting lengths, an HTTP/1.0 `Transfer-Encoding`, or any empty list
//! element in either field. RFC 9110 §5.6.1 asks recipients to tolerate empty
//! list elements, but these two fields are exactly where a lenient reading is
//! dangerous, and no well-behaved client sends them.

use thiserror::Error;

use super::head::{RequestHead, ResponseHead, list_elements};

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the next message starts right after the head.
    None,
    /// Exactly this many bytes, the normalised value of `Content-Length`
    /// (which may be 0). A proxy forwarding the head should send this single
    /// value, not the original (possibly repeated) field lines.
    Length(u64),
    /// The chunked transfer coding: feed the bytes to a
    /// [`crate::http::ChunkedScanner`] to find the end.
    Chunked,
    /// Responses only: the body runs until the backend closes the connection
    /// (RFC 9112 §6.3 items 4 and 8). The backend connection cannot be reused.
    CloseDelimited,
}

/// Why the framing of a message cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FramingError {
    /// Both `Transfer-Encoding` and `Content-Length`. RFC 9112 §6.3 lets
    /// `Transfer-Encoding` win, but also says such a message "ought to be
    /// handled as an error" by an intermediary; we never forward one, in
    /// either direction.
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingWithContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 message, whose framing RFC 9112 §6.1
    /// says to treat as faulty.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// A request whose final transfer coding is not `chunked`: its length
    /// cannot be determined (RFC 9112 §6.3 item 4).
    #[error("final transfer coding is not chunked")]
    ChunkedNotFinal,
    /// A `Transfer-Encoding` value that is not a list of transfer codings, or
    /// that applies `chunked` more than once or with parameters.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A `Content-Length` element that is not 1*DIGIT or overflows u64.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// `Content-Length` elements with different values.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A declared body longer than the configured maximum.
    #[error("body of {length} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// The declared length.
        length: u64,
        /// The maximum allowed.
        limit: u64,
    },
    /// A `101 Switching Protocols`: we never forward `Upgrade`, so a backend
    /// that switches protocols is broken (RFC 9110 §15.2.2).
    #[error("unsolicited 101 Switching Protocols")]
    UnexpectedSwitchingProtocols,
}

impl FramingError {
    /// The status code to answer a client with when its request failed so.
    /// A response whose framing fails is a backend fault: answer 502 whatever
    /// the variant.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } => 413,
            Self::UnexpectedSwitchingProtocols => 502,
            Self::TransferEncodingWithContentLength
            | Self::TransferEncodingInHttp10
            | Self::ChunkedNotFinal
            | Self::InvalidTransferEncoding
            | Self::InvalidContentLength
            | Self::ConflictingContentLength => 400,
        }
    }
}

/// The framing of a request body (RFC 9112 §6.3 items 3 to 7).
///
/// After an error the connection must be closed: where the next request
/// starts is unknown.
///
/// # Errors
///
/// Any [`FramingError`] but `BodyTooLarge` and `UnexpectedSwitchingProtocols`.
pub fn request_body(head: &RequestHead) -> Result<BodyFraming, FramingError> {
    let chunked = transfer_encoding(head.version, head.headers_all("transfer-encoding"))?;
    let length = content_length(head.headers_all("content-length"))?;
    match (chunked, length) {
        (Some(_), Some(_)) => Err(FramingError::TransferEncodingWithContentLength),
        (Some(true), None) => Ok(BodyFraming::Chunked),
        (Some(false), None) => Err(FramingError::ChunkedNotFinal),
        (None, Some(n)) => Ok(BodyFraming::Length(n)),
        (None, None) => Ok(BodyFraming::None),
    }
}

/// The framing of a response body (RFC 9112 §6.3), given the method of the
/// request it answers.
///
/// Responses to `CONNECT` are not special-cased: the proxy never forwards a
/// `CONNECT`.
///
/// # Errors
///
/// A [`FramingError`] when the backend's framing is broken or ambiguous; the
/// proxy answers 502 and closes the backend connection.
pub fn response_body(req_method: &str, head: &ResponseHead) -> Result<BodyFraming, FramingError> {
    if head.status == 101 {
        return Err(FramingError::UnexpectedSwitchingProtocols);
    }
    // Item 1: whatever the fields say, these have no body. Methods are
    // case-sensitive, so only "HEAD" is HEAD.
    if req_method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(BodyFraming::None);
    }
    let chunked = transfer_encoding(head.version, head.headers_all("transfer-encoding"))?;
    let length = content_length(head.headers_all("content-length"))?;
    match (chunked, length) {
        // Item 3 lets Transfer-Encoding win; we refuse to guess which of the
        // two the client behind us would believe.
        (Some(_), Some(_)) => Err(FramingError::TransferEncodingWithContentLength),
        (Some(true), None) => Ok(BodyFraming::Chunked),
        (Some(false) | None, None) => Ok(BodyFraming::CloseDelimited),
        (None, Some(n)) => Ok(BodyFraming::Length(n)),
    }
}

/// Refuses a `Length` body over `max` bytes (413), before any of it is read.
/// Chunked bodies have no declared length: [`crate::http::ChunkLimits`] caps
/// them while they stream.
///
/// # Errors
///
/// [`FramingError::BodyTooLarge`].
pub fn check_body_size(framing: BodyFraming, max: u64) -> Result<(), FramingError> {
    match framing {
        BodyFraming::Length(length) if length > max => {
            Err(FramingError::BodyTooLarge { length, limit: max })
        }
        _ => Ok(()),
    }
}

/// Reads all `Transfer-Encoding` field lines as one list. `None` when there
/// is none; else whether the final coding is `chunked`.
fn transfer_encoding<'a>(
    version: u8,
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<bool>, FramingError> {
    let mut present = false;
    let mut chunked_seen = false;
    let mut last_is_chunked = false;
    for value in values {
        if !present && version == 0 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        present = true;
        for element in list_elements(value) {
            let is_chunked = transfer_coding_is_chunked(element)?;
            if is_chunked && chunked_seen {
                // RFC 9112 §6.1: a sender MUST NOT apply chunked twice.
                return Err(FramingError::InvalidTransferEncoding);
            }
            chunked_seen |= is_chunked;
            last_is_chunked = is_chunked;
        }
    }
    Ok(present.then_some(last_is_chunked))
}

/// Checks one `transfer-coding = token *( OWS ";" OWS transfer-parameter )`
/// element and says whether it is `chunked` (case-insensitive). Parameters
/// are checked only loosely (token characters, `=`, quoted strings): they are
/// forwarded, not interpreted, except that `chunked` takes none.
fn transfer_coding_is_chunked(element: &[u8]) -> Result<bool, FramingError> {
    let name_end = element
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(element.len());
    let (name, params) = element.split_at(name_end);
    if name.is_empty() {
        return Err(FramingError::InvalidTransferEncoding);
    }
    let is_chunked = name.eq_ignore_ascii_case(b"chunked");
    if !params.is_empty() {
        let params_ok = params.iter().all(|&b| {
            is_tchar(b) || matches!(b, b' ' | b'\t' | b';' | b'=' | b'"' | b'\\') || b >= 0x80
        }) && params.trim_ascii_start().starts_with(b";");
        if is_chunked || !params_ok {
            return Err(FramingError::InvalidTransferEncoding);
        }
    }
    Ok(is_chunked)
}

/// Reads all `Content-Length` field lines as one list whose elements must
/// all be the same number (RFC 9112 §6.3 item 5 allows merging identical
/// repeats).
fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for element in values.flat_map(list_elements) {
        let n = parse_decimal(element).ok_or(FramingError::InvalidContentLength)?;
        match length {
            Some(previous) if previous != n => {
                return Err(FramingError::ConflictingContentLength);
            }
            _ => length = Some(n),
        }
    }
    Ok(length)
}

/// `1*DIGIT` as u64: no sign, no whitespace, no hex, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// tchar (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::super::head::{Limits, Parsed, parse_request_head, parse_response_head};
    use super::*;

    fn request(fields: &str, version: &str) -> RequestHead {
        let raw = format!("POST / HTTP/{version}\r\nHost: a\r\n{fields}\r\n");
        match parse_request_head(raw.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    fn request_framing() {
        use BodyFraming::{Chunked, Length};
        use FramingError::*;
        let cases: &[(&str, &str, Result<BodyFraming, FramingError>)] = &[
            ("", "1.1", Ok(BodyFraming::None)),
            ("", "1.0", Ok(BodyFraming::None)),
            ("Content-Length: 0\r\n", "1.1", Ok(Length(0))),
            ("Content-Length: 42\r\n", "1.1", Ok(Length(42))),
            ("Content-Length: 42\r\n", "1.0", Ok(Length(42))),
            ("Content-Length: 007\r\n", "1.1", Ok(Length(7))),
            ("Content-Length: 1,1\r\n", "1.1", Ok(Length(1))),
            ("Content-Length: 1 , 1\r\n", "1.1", Ok(Length(1))),
            (
                "Content-Length: 1\r\nContent-Length: 1\r\n",
                "1.1",
                Ok(Length(1)),
            ),
            (
                "Content-Length: 18446744073709551615\r\n",
                "1.1",
                Ok(Length(u64::MAX)),
            ),
            (
                "Content-Length: 18446744073709551616\r\n",
                "1.1",
                Err(InvalidContentLength),
            ),
            (
                "Content-Length: 99999999999999999999999\r\n",
                "1.1",
                Err(InvalidContentLength),
            ),
            (
                "Content-Length: 1,2\r\n",
                "1.1",
                Err(ConflictingContentLength),
            ),
            (
                "Content-Length: 1\r\nContent-Length: 2\r\n",
                "1.1",
                Err(ConflictingContentLength),
            ),
            ("Content-Length: +5\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: -5\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: 0x10\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: 1 0\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: 1.0\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: \r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: 1,\r\n", "1.1", Err(InvalidContentLength)),
            ("Content-Length: ,1\r\n", "1.1", Err(InvalidContentLength)),
            (
                "Content-Length: \u{661}\r\n",
                "1.1",
                Err(InvalidContentLength),
            ),
            ("Transfer-Encoding: chunked\r\n", "1.1", Ok(Chunked)),
            ("Transfer-Encoding: Chunked\r\n", "1.1", Ok(Chunked)),
            ("Transfer-Encoding:   chunked  \r\n", "1.1", Ok(Chunked)),
            ("Transfer-Encoding:\tchunked\r\n", "1.1", Ok(Chunked)),
            ("Transfer-Encoding: gzip, chunked\r\n", "1.1", Ok(Chunked)),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "1.1",
                Ok(Chunked),
            ),
            (
                "Transfer-Encoding: gzip;q=1, chunked\r\n",
                "1.1",
                Ok(Chunked),
            ),
            ("Transfer-Encoding: gzip\r\n", "1.1", Err(ChunkedNotFinal)),
            (
                "Transfer-Encoding: chunked, gzip\r\n",
                "1.1",
                Err(ChunkedNotFinal),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                "1.1",
                Err(ChunkedNotFinal),
            ),
            (
                "Transfer-Encoding: xchunked\r\n",
                "1.1",
                Err(ChunkedNotFinal),
            ),
            (
                "Transfer-Encoding: chunkedx\r\n",
                "1.1",
                Err(ChunkedNotFinal),
            ),
            (
                "Transfer-Encoding: identity\r\n",
                "1.1",
                Err(ChunkedNotFinal),
            ),
            (
                "Transfer-Encoding: chunked, chunked\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked;a=b\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: \"chunked\"\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked,\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: , chunked\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: \r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked chunked\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: gzip x, chunked\r\n",
                "1.1",
                Err(InvalidTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "1.1",
                Err(TransferEncodingWithContentLength),
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n",
                "1.1",
                Err(TransferEncodingWithContentLength),
            ),
            (
                "Transfer-Encoding: chunked\r\n",
                "1.0",
                Err(TransferEncodingInHttp10),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "1.0",
                Err(TransferEncodingInHttp10),
            ),
        ];
        for (fields, version, want) in cases {
            let head = request(fields, version);
            assert_eq!(request_body(&head), *want, "{fields:?} HTTP/{version}");
            if let Err(e) = want {
                assert_eq!(e.status(), 400, "{e}");
            }
        }
    }

    #[test]
    fn smuggling_spellings_never_reach_framing() {
        // These must fail in the head parser already, whatever framing says.
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\n: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\rTransfer-Encoding: chunked\r\n\r\n",
        ];
        for raw in cases {
            let got = parse_request_head(raw.as_bytes(), &Limits::default());
            assert!(got.is_err(), "{raw:?}: {got:?}");
            assert_eq!(got.err().map(|e| e.status()), Some(400), "{raw:?}");
        }
    }

    #[test]
    fn body_size_limit() {
        assert_eq!(check_body_size(BodyFraming::Length(10), 10), Ok(()));
        let err = check_body_size(BodyFraming::Length(11), 10);
        assert_eq!(
            err,
            Err(FramingError::BodyTooLarge {
                length: 11,
                limit: 10
            })
        );
        assert_eq!(err.err().map(|e| e.status()), Some(413));
        assert_eq!(check_body_size(BodyFraming::Chunked, 0), Ok(()));
        assert_eq!(check_body_size(BodyFraming::None, 0), Ok(()));
    }

    fn response(raw: &str) -> ResponseHead {
        match parse_response_head(raw.as_bytes(), &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    fn response_framing() {
        use BodyFraming::{Chunked, CloseDelimited, Length};
        use FramingError::*;
        let cases: &[(&str, &str, Result<BodyFraming, FramingError>)] = &[
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(Length(5)),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Ok(Length(5)),
            ),
            (
                "HEAD",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "HEAD",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            ("HEAD", "HTTP/1.1 200 OK\r\n\r\n", Ok(BodyFraming::None)),
            (
                "head",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(Length(5)),
            ),
            (
                "GET",
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "GET",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "GET",
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "GET",
                "HTTP/1.1 100 Continue\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "GET",
                "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n",
                Ok(BodyFraming::None),
            ),
            (
                "GET",
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                Err(UnexpectedSwitchingProtocols),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Chunked),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Ok(Chunked),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Ok(CloseDelimited),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Ok(CloseDelimited),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Err(InvalidTransferEncoding),
            ),
            ("GET", "HTTP/1.1 200 OK\r\n\r\n", Ok(CloseDelimited)),
            ("GET", "HTTP/1.0 200 OK\r\n\r\n", Ok(CloseDelimited)),
            (
                "GET",
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                Ok(Length(3)),
            ),
            (
                "POST",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                Ok(Length(0)),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Err(TransferEncodingWithContentLength),
            ),
            (
                "GET",
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(TransferEncodingInHttp10),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
                Err(InvalidContentLength),
            ),
            (
                "GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Err(ConflictingContentLength),
            ),
        ];
        for (method, raw, want) in cases {
            let head = response(raw);
            assert_eq!(response_body(method, &head), *want, "{method} {raw:?}");
        }
    }

    #[test]
    fn parse_decimal_edges() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"00", Some(0)),
            (b"123", Some(123)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"", None),
            (b" 1", None),
            (b"1a", None),
            (b"+1", None),
        ];
        for (digits, want) in cases {
            assert_eq!(parse_decimal(digits), *want, "{digits:?}");
        }
    }
}
