//! An incremental scanner for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The proxy forwards a chunked body as it arrives, without decoding it; what
//! it needs is to know exactly where the body ends, so that the bytes after it
//! (the next pipelined message) are not forwarded with it, and to refuse any
//! body whose chunk syntax a peer could read differently. So the scanner
//! validates every byte of the framing to the grammar, strictly:
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-val = token / quoted-string
//! ```
//!
//! Lines end in CRLF only (a bare LF or bare CR is an error, as in heads), no
//! whitespace before the size, none between the size or an extension and the
//! CRLF (the grammar allows BWS only before `;` and around `=`), sizes of at
//! most 16 hex digits (so they always fit in u64), trailer fields shaped like
//! header fields without obs-fold.
//!
//! The scanner works one byte at a time except for chunk data, which it skips
//! in bulk; so its result never depends on how the input is split.

use thiserror::Error;

use super::framing::is_tchar;

/// Caps on the parts of a chunked body that are not data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::struct_field_names,
    reason = "`max_` reads as a cap where the fields are set"
)]
pub struct ChunkLimits {
    /// Longest chunk-size line (size plus extensions) or trailer field line,
    /// CRLF not counted.
    pub max_line_bytes: usize,
    /// Largest trailer section, CRLFs counted (the final empty line not).
    pub max_trailer_bytes: usize,
    /// Most payload (chunk data) bytes in the whole body.
    pub max_payload_bytes: u64,
}

impl Default for ChunkLimits {
    /// 4 KiB lines and 64 KiB of trailers, far beyond what real clients use
    /// (extensions are rare, trailers small); payload unlimited, as the caller
    /// sets its own body limit.
    fn default() -> Self {
        Self {
            max_line_bytes: 4 * 1024,
            max_trailer_bytes: 64 * 1024,
            max_payload_bytes: u64::MAX,
        }
    }
}

/// What one [`ChunkedScanner::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this message: forward exactly these.
    /// Less than the input only when `done`; the rest is the next message.
    pub consumed: usize,
    /// Whether the body (with its trailer section) is complete.
    pub done: bool,
}

/// Why a chunked body was rejected. After one, the scanner keeps returning
/// it: where the message ends is unknown, so the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// A chunk size that is empty, starts with something other than a hex
    /// digit (such as whitespace), or is followed by something other than
    /// `;`, BWS before `;`, or CRLF.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size of more than 16 hex digits.
    #[error("chunk size too long")]
    ChunkSizeTooLong,
    /// A malformed chunk extension.
    #[error("invalid chunk extension")]
    InvalidExtension,
    /// The CRLF after a chunk's data is missing.
    #[error("missing CRLF after chunk data")]
    MissingDataCrlf,
    /// A CR not followed by LF.
    #[error("bare CR in chunked framing")]
    BareCr,
    /// An LF not preceded by CR.
    #[error("bare LF in chunked framing")]
    BareLf,
    /// A malformed trailer field line.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// A trailer line starting with SP or HTAB (obs-fold).
    #[error("obsolete line folding in trailer section")]
    TrailerObsFold,
    /// A chunk-size or trailer line longer than
    /// [`ChunkLimits::max_line_bytes`].
    #[error("chunked framing line longer than {limit} bytes")]
    LineTooLong {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// A trailer section larger than [`ChunkLimits::max_trailer_bytes`].
    #[error("trailer section larger than {limit} bytes")]
    TrailersTooLarge {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// More payload than [`ChunkLimits::max_payload_bytes`]; detected when a
    /// chunk's size is read, before its data arrives.
    #[error("chunked body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The cap that was exceeded.
        limit: u64,
    },
}

impl ChunkError {
    /// The status code to answer a client whose request body failed so (if
    /// no response has started yet). For a response body the proxy can only
    /// close the connection.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::PayloadTooLarge { .. } => 413,
            Self::InvalidChunkSize
            | Self::ChunkSizeTooLong
            | Self::InvalidExtension
            | Self::MissingDataCrlf
            | Self::BareCr
            | Self::BareLf
            | Self::InvalidTrailer
            | Self::TrailerObsFold
            | Self::LineTooLong { .. }
            | Self::TrailersTooLarge { .. } => 400,
        }
    }
}

/// Where the scanner is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// In the hex digits.
    Size,
    /// BWS after the size: only `;` may follow.
    SizeWs,
    /// After `;`: BWS, then an extension name.
    ExtNameStart,
    /// In an extension name.
    ExtName,
    /// BWS after an extension name: `=` or `;` may follow.
    ExtNameWs,
    /// After `=`: BWS, then a token or quoted string.
    ExtValueStart,
    /// In a token value.
    ExtToken,
    /// In a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedEscape,
    /// After the closing quote.
    ExtQuotedEnd,
    /// BWS after a value: only `;` may follow.
    ExtValueWs,
    /// Saw the CR ending the chunk-size line.
    SizeLf,
    /// In chunk data; `remaining` bytes left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// Saw the CR ending a trailer field line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
    /// Rejected; the error is kept to be returned again.
    Failed(ChunkError),
}

impl State {
    /// Whether this is a state within a chunk-size line, before its CR.
    fn in_size_line(self) -> bool {
        matches!(
            self,
            Self::SizeStart
                | Self::Size
                | Self::SizeWs
                | Self::ExtNameStart
                | Self::ExtName
                | Self::ExtNameWs
                | Self::ExtValueStart
                | Self::ExtToken
                | Self::ExtQuoted
                | Self::ExtQuotedEscape
                | Self::ExtQuotedEnd
                | Self::ExtValueWs
        )
    }
}

/// Finds the end of one chunked body, fed in arbitrary slices.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    limits: ChunkLimits,
    state: State,
    /// The size of the chunk being read (while in its size line), then the
    /// data bytes still to come.
    size: u64,
    /// Hex digits of the current size.
    digits: u8,
    /// Bytes of the current chunk-size or trailer line.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
    /// Chunk data bytes consumed so far.
    payload: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    /// A scanner with the default [`ChunkLimits`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(ChunkLimits::default())
    }

    /// A scanner with the given caps.
    #[must_use]
    pub fn with_limits(limits: ChunkLimits) -> Self {
        Self {
            limits,
            state: State::SizeStart,
            size: 0,
            digits: 0,
            line_bytes: 0,
            trailer_bytes: 0,
            payload: 0,
        }
    }

    /// Chunk data bytes seen so far (framing not counted).
    #[must_use]
    #[cfg(test)]
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// Whether the body is complete.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans the next bytes of the body. Stops right after the body's last
    /// byte: `consumed` then tells how much of `input` was part of it. Once
    /// done, further calls consume nothing.
    ///
    /// # Errors
    ///
    /// A [`ChunkError`] at the first byte that breaks the grammar or a cap;
    /// the same error on every later call.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data => {
                    let available = input.len() - pos;
                    let take = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    pos += take;
                    // take <= size, so neither subtraction nor addition can
                    // fail (payload + size was checked when size was read).
                    let take = u64::try_from(take).unwrap_or(u64::MAX);
                    self.size = self.size.saturating_sub(take);
                    self.payload = self.payload.saturating_add(take);
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let byte = input[pos];
                    pos += 1;
                    if let Err(e) = self.step(byte) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(Progress {
            consumed: pos,
            done: self.state == State::Done,
        })
    }

    /// Advances over one framing byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State as S;
        let state = self.state;
        // Line caps first, for every byte that is part of a line's content.
        match state {
            _ if state.in_size_line() => self.count_line_byte(b)?,
            S::TrailerStart | S::TrailerName | S::TrailerValue => {
                if b != b'\r' || state != S::TrailerStart {
                    self.count_trailer_byte()?;
                }
                self.count_line_byte(b)?;
            }
            S::TrailerLf => self.count_trailer_byte()?,
            _ => {}
        }
        // A stray LF is always a bare LF, whatever else the state expects.
        let expects_lf = matches!(state, S::SizeLf | S::DataLf | S::TrailerLf | S::FinalLf);
        if b == b'\n' && !expects_lf {
            return Err(ChunkError::BareLf);
        }
        self.state = if state.in_size_line() {
            self.size_line_next(state, b)?
        } else {
            self.line_end_or_trailer_next(state, b)?
        };
        Ok(())
    }

    /// The state after `b` in a chunk-size line, before its CR.
    fn size_line_next(&mut self, state: State, b: u8) -> Result<State, ChunkError> {
        use State as S;
        Ok(match state {
            S::SizeStart => {
                let Some(digit) = hex_value(b) else {
                    return Err(ChunkError::InvalidChunkSize);
                };
                self.size = u64::from(digit);
                self.digits = 1;
                S::Size
            }
            S::Size => {
                if let Some(digit) = hex_value(b) {
                    if self.digits == 16 {
                        return Err(ChunkError::ChunkSizeTooLong);
                    }
                    self.digits += 1;
                    // At most 16 hex digits: never overflows.
                    self.size = (self.size << 4) | u64::from(digit);
                    S::Size
                } else {
                    self.check_payload_limit()?;
                    match b {
                        b';' => S::ExtNameStart,
                        b' ' | b'\t' => S::SizeWs,
                        b'\r' => S::SizeLf,
                        _ => return Err(ChunkError::InvalidChunkSize),
                    }
                }
            }
            S::SizeWs => match b {
                b' ' | b'\t' => S::SizeWs,
                b';' => S::ExtNameStart,
                _ => return Err(ChunkError::InvalidChunkSize),
            },
            S::ExtNameStart => match b {
                b' ' | b'\t' => S::ExtNameStart,
                _ if is_tchar(b) => S::ExtName,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtName => match b {
                _ if is_tchar(b) => S::ExtName,
                b' ' | b'\t' => S::ExtNameWs,
                b'=' => S::ExtValueStart,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtNameWs => match b {
                b' ' | b'\t' => S::ExtNameWs,
                b'=' => S::ExtValueStart,
                b';' => S::ExtNameStart,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtValueStart => match b {
                b' ' | b'\t' => S::ExtValueStart,
                b'"' => S::ExtQuoted,
                _ if is_tchar(b) => S::ExtToken,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtToken => match b {
                _ if is_tchar(b) => S::ExtToken,
                b' ' | b'\t' => S::ExtValueWs,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtQuoted => match b {
                b'"' => S::ExtQuotedEnd,
                b'\\' => S::ExtQuotedEscape,
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | b' '..=b'~' | 0x80..=0xff => S::ExtQuoted,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtQuotedEscape => match b {
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                b'\t' | b' '..=b'~' | 0x80..=0xff => S::ExtQuoted,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtQuotedEnd => match b {
                b' ' | b'\t' => S::ExtValueWs,
                b';' => S::ExtNameStart,
                b'\r' => S::SizeLf,
                _ => return Err(ChunkError::InvalidExtension),
            },
            S::ExtValueWs => match b {
                b' ' | b'\t' => S::ExtValueWs,
                b';' => S::ExtNameStart,
                _ => return Err(ChunkError::InvalidExtension),
            },
            // step() sends only size-line states here.
            _ => state,
        })
    }

    /// The state after `b` at the end of a line, after chunk data or in the
    /// trailer section.
    fn line_end_or_trailer_next(&mut self, state: State, b: u8) -> Result<State, ChunkError> {
        use State as S;
        Ok(match state {
            S::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                self.line_bytes = 0;
                if self.size == 0 {
                    S::TrailerStart
                } else {
                    S::Data
                }
            }
            S::DataCr => match b {
                b'\r' => S::DataLf,
                _ => return Err(ChunkError::MissingDataCrlf),
            },
            S::DataLf => match b {
                b'\n' => S::SizeStart,
                _ => return Err(ChunkError::BareCr),
            },
            S::TrailerStart => match b {
                b'\r' => S::FinalLf,
                b' ' | b'\t' => return Err(ChunkError::TrailerObsFold),
                _ if is_tchar(b) => S::TrailerName,
                _ => return Err(ChunkError::InvalidTrailer),
            },
            S::TrailerName => match b {
                _ if is_tchar(b) => S::TrailerName,
                b':' => S::TrailerValue,
                _ => return Err(ChunkError::InvalidTrailer),
            },
            S::TrailerValue => match b {
                b'\r' => S::TrailerLf,
                // field-vchar / SP / HTAB, as in header values.
                b'\t' | b' '..=b'~' | 0x80..=0xff => S::TrailerValue,
                _ => return Err(ChunkError::InvalidTrailer),
            },
            S::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                self.line_bytes = 0;
                S::TrailerStart
            }
            S::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                S::Done
            }
            // feed() handles these without calling step(), and step() sends
            // size-line states elsewhere.
            _ => state,
        })
    }

    /// Counts a byte of a line; the CR that ends it is not counted.
    fn count_line_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        if b != b'\r' {
            self.line_bytes += 1;
            if self.line_bytes > self.limits.max_line_bytes {
                return Err(ChunkError::LineTooLong {
                    limit: self.limits.max_line_bytes,
                });
            }
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.max_trailer_bytes {
            return Err(ChunkError::TrailersTooLarge {
                limit: self.limits.max_trailer_bytes,
            });
        }
        Ok(())
    }

    /// Refuses a chunk whose size would take the body past the payload cap,
    /// before any of its data is read.
    fn check_payload_limit(&self) -> Result<(), ChunkError> {
        let limit = self.limits.max_payload_bytes;
        match self.payload.checked_add(self.size) {
            Some(total) if total <= limit => Ok(()),
            _ => Err(ChunkError::PayloadTooLarge { limit }),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Rng;
    use super::*;

    /// The outcome of scanning one input: bytes consumed and done, or the
    /// error, plus the payload count.
    type Outcome = (Result<(usize, bool), ChunkError>, u64);

    /// Bytes consumed and done, or the error.
    type Scanned = Result<(usize, bool), ChunkError>;

    /// Feeds `chunks` in order, stopping at done or error, as a proxy would.
    fn scan_pieces(limits: ChunkLimits, pieces: &[&[u8]]) -> Outcome {
        let mut scanner = ChunkedScanner::with_limits(limits);
        let mut total = 0;
        for piece in pieces {
            match scanner.feed(piece) {
                Ok(p) => {
                    total += p.consumed;
                    if p.done {
                        assert!(scanner.is_done());
                        return (Ok((total, true)), scanner.payload_bytes());
                    }
                    assert_eq!(p.consumed, piece.len(), "consumed less without being done");
                }
                Err(e) => {
                    // The error sticks.
                    assert_eq!(scanner.feed(b"0\r\n\r\n"), Err(e));
                    return (Err(e), scanner.payload_bytes());
                }
            }
        }
        (Ok((total, false)), scanner.payload_bytes())
    }

    /// Scans `input` whole, split at every position, and byte by byte, and
    /// checks the outcomes agree.
    fn scan_all_ways(limits: ChunkLimits, input: &[u8]) -> Outcome {
        let whole = scan_pieces(limits, &[input]);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                scan_pieces(limits, &[a, b]),
                whole,
                "split at {cut} of {input:?}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            scan_pieces(limits, &bytes),
            whole,
            "byte by byte: {input:?}"
        );
        whole
    }

    #[test]
    fn valid_bodies() {
        // (body, payload bytes); each is followed by "NEXT" which must be left.
        let cases: &[(&str, u64)] = &[
            ("0\r\n\r\n", 0),
            ("000\r\n\r\n", 0),
            ("5\r\nhello\r\n0\r\n\r\n", 5),
            ("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 11),
            ("a\r\n0123456789\r\n0\r\n\r\n", 10),
            ("A\r\n0123456789\r\n0\r\n\r\n", 10),
            ("0000000000000003\r\nabc\r\n0\r\n\r\n", 3),
            ("3\r\n\r\n\r\r\n0\r\n\r\n", 3),
            ("3;ext\r\nabc\r\n0\r\n\r\n", 3),
            ("3;a=b;c=d\r\nabc\r\n0;last\r\n\r\n", 3),
            ("3 ; a = b ; c\r\nabc\r\n0\r\n\r\n", 3),
            ("3\t;\ta\t=\tb\r\nabc\r\n0\r\n\r\n", 3),
            ("3;a=\"quoted; \\\"value\\\" \"\r\nabc\r\n0\r\n\r\n", 3),
            ("3;a=\"\"\r\nabc\r\n0\r\n\r\n", 3),
            ("3;a=\"x\" ;b\r\nabc\r\n0\r\n\r\n", 3),
            ("3;a=\"caf\u{e9}\"\r\nabc\r\n0\r\n\r\n", 3),
            ("0\r\nExpires: never\r\n\r\n", 0),
            ("3\r\nabc\r\n0\r\nA: 1\r\nB:\r\nC:\tx y\t\r\n\r\n", 3),
            ("2\r\n\r\n\r\n0\r\n\r\n", 2),
        ];
        for &(body, payload) in cases {
            let input = format!("{body}NEXT");
            let got = scan_all_ways(ChunkLimits::default(), input.as_bytes());
            assert_eq!(got, (Ok((body.len(), true)), payload), "{body:?}");
        }
    }

    #[test]
    fn invalid_bodies() {
        use ChunkError::*;
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\n", InvalidChunkSize),
            (b";a\r\n", InvalidChunkSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"\t5\r\n", InvalidChunkSize),
            (b"+5\r\n", InvalidChunkSize),
            (b"-5\r\n", InvalidChunkSize),
            (b"0x5\r\n", InvalidChunkSize),
            (b"g\r\n", InvalidChunkSize),
            (b"5 \r\nhello\r\n", InvalidChunkSize),
            (b"5g\r\n", InvalidChunkSize),
            (b"5,5\r\n", InvalidChunkSize),
            (b"00000000000000001\r\n", ChunkSizeTooLong),
            (b"10000000000000000\r\n", ChunkSizeTooLong),
            (b"5\nhello\r\n0\r\n\r\n", BareLf),
            (b"5\r\rhello", BareCr),
            (b"5\rhello", BareCr),
            (b"5;a\nhello", BareLf),
            (b"5\r\nhello\n0\r\n\r\n", BareLf),
            (b"5\r\nhello0\r\n\r\n", MissingDataCrlf),
            (b"5\r\nhelloX\r\n", MissingDataCrlf),
            (b"5\r\nhello\rX", BareCr),
            (b"0\r\n\n", BareLf),
            (b"0\r\n\rX", BareCr),
            (b"5;\r\n", InvalidExtension),
            (b"5;;a\r\n", InvalidExtension),
            (b"5;a=\r\n", InvalidExtension),
            (b"5;a=b \r\n", InvalidExtension),
            (b"5;a \r\n", InvalidExtension),
            (b"5;=b\r\n", InvalidExtension),
            (b"5;a=b=c\r\n", InvalidExtension),
            (b"5;a=\"b\r\n", InvalidExtension),
            (b"5;a=\"b\"c\r\n", InvalidExtension),
            (b"5;a=\"\0\"\r\n", InvalidExtension),
            (b"5;a=\"\\\0\"\r\n", InvalidExtension),
            (b"5;a(b)\r\n", InvalidExtension),
            (b"5;a=b\x7f\r\n", InvalidExtension),
            (b"0\r\n X: y\r\n\r\n", TrailerObsFold),
            (b"0\r\nX: y\r\n\tz\r\n\r\n", TrailerObsFold),
            (b"0\r\n: y\r\n\r\n", InvalidTrailer),
            (b"0\r\nX : y\r\n\r\n", InvalidTrailer),
            (b"0\r\nX\r\n\r\n", InvalidTrailer),
            (b"0\r\nX: \0\r\n\r\n", InvalidTrailer),
            (b"0\r\nX: y\nZ: w\r\n\r\n", BareLf),
            (b"0\r\nX: y\rZ\r\n\r\n", BareCr),
        ];
        for (input, want) in cases {
            let (got, _) = scan_all_ways(ChunkLimits::default(), input);
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(want.status(), 400);
        }
    }

    #[test]
    fn max_hex_size_is_accepted_and_checked_against_limit() {
        let input = b"ffffffffffffffff\r\nabc";
        let (got, payload) = scan_all_ways(ChunkLimits::default(), input);
        assert_eq!(got, Ok((input.len(), false)));
        assert_eq!(payload, 3);
        // A second chunk that would overflow the u64 payload count.
        let mut scanner = ChunkedScanner::new();
        scanner.payload = 1;
        assert_eq!(
            scanner.feed(b"ffffffffffffffff\r\n"),
            Err(ChunkError::PayloadTooLarge { limit: u64::MAX })
        );
    }

    #[test]
    fn incomplete_bodies_wait() {
        let body = "5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\n";
        for cut in 0..body.len() {
            let (got, _) = scan_pieces(ChunkLimits::default(), &[&body.as_bytes()[..cut]]);
            assert_eq!(got, Ok((cut, false)), "cut at {cut}");
        }
    }

    #[test]
    fn back_to_back_messages_stop_at_the_first_end() {
        let first = b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\nT: v\r\n\r\n";
        let second = b"3\r\nabc\r\n0\r\n\r\n";
        let input = [&first[..], &second[..]].concat();
        let got = scan_all_ways(ChunkLimits::default(), &input);
        assert_eq!(got, (Ok((first.len(), true)), 9));
        // The rest scans as the second message with a fresh scanner.
        let got = scan_all_ways(ChunkLimits::default(), &input[first.len()..]);
        assert_eq!(got, (Ok((second.len(), true)), 3));
        // Once done, a scanner consumes nothing more.
        let mut scanner = ChunkedScanner::new();
        assert_eq!(
            scanner.feed(&input),
            Ok(Progress {
                consumed: first.len(),
                done: true
            })
        );
        assert_eq!(
            scanner.feed(second),
            Ok(Progress {
                consumed: 0,
                done: true
            })
        );
        assert_eq!(
            scanner.feed(b""),
            Ok(Progress {
                consumed: 0,
                done: true
            })
        );
    }

    #[test]
    fn line_limits() {
        let limits = ChunkLimits {
            max_line_bytes: 8,
            max_trailer_bytes: 20,
            max_payload_bytes: u64::MAX,
        };
        let cases: &[(&[u8], Scanned)] = &[
            // Size line of exactly 8 bytes, then 9.
            (b"1;abcdef\r\nx\r\n0\r\n\r\n", Ok((18, true))),
            (b"1;abcdefg\r\n", Err(ChunkError::LineTooLong { limit: 8 })),
            (b"1;abcdefg", Err(ChunkError::LineTooLong { limit: 8 })),
            // Data is not a line: long chunks are fine.
            (b"10\r\n0123456789abcdef\r\n0\r\n\r\n", Ok((27, true))),
            // Trailer lines: 8 bytes fine, 9 too long.
            (b"0\r\nAbcd: ef\r\n\r\n", Ok((15, true))),
            (
                b"0\r\nAbcd: efg\r\n\r\n",
                Err(ChunkError::LineTooLong { limit: 8 }),
            ),
            // Trailer section: two lines of 10 bytes with CRLF = 20, fine; a
            // third byte more is not.
            (b"0\r\nA: 12345\r\nB: 12345\r\n\r\n", Ok((25, true))),
            (
                b"0\r\nA: 12345\r\nB: 12345\r\nC",
                Err(ChunkError::TrailersTooLarge { limit: 20 }),
            ),
        ];
        for (input, want) in cases {
            let (got, _) = scan_all_ways(limits, input);
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn payload_limit() {
        let limits = ChunkLimits {
            max_payload_bytes: 10,
            ..ChunkLimits::default()
        };
        let cases: &[(&[u8], Scanned, u64)] = &[
            (b"a\r\n0123456789\r\n0\r\n\r\n", Ok((20, true)), 10),
            (b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", Ok((25, true)), 10),
            // Refused at the size line, before any data.
            (b"b\r\n", Err(ChunkError::PayloadTooLarge { limit: 10 }), 0),
            (
                b"b;x\r\n",
                Err(ChunkError::PayloadTooLarge { limit: 10 }),
                0,
            ),
            (
                b"5\r\n01234\r\n6\r\n",
                Err(ChunkError::PayloadTooLarge { limit: 10 }),
                5,
            ),
        ];
        for (input, want, payload) in cases {
            let got = scan_all_ways(limits, input);
            assert_eq!(
                got,
                (*want, *payload),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(ChunkError::PayloadTooLarge { limit: 1 }.status(), 413);
    }

    #[test]
    fn payload_counts_partial_data() {
        let mut scanner = ChunkedScanner::new();
        assert_eq!(
            scanner.feed(b"a\r\n0123"),
            Ok(Progress {
                consumed: 7,
                done: false
            })
        );
        assert_eq!(scanner.payload_bytes(), 4);
        assert_eq!(
            scanner.feed(b"456789\r\n0\r\n\r\nGET"),
            Ok(Progress {
                consumed: 13,
                done: true
            })
        );
        assert_eq!(scanner.payload_bytes(), 10);
    }

    #[test]
    fn mutated_bodies_scan_the_same_however_split() {
        const ALPHABET: &[u8] = b"\r\n \t;=\"\\0aFgX:\0\x80";
        let bodies: &[&[u8]] = &[
            b"5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\nNEXT",
            b"3;x\r\nabc\r\n1\r\n\r\r\n0\r\n\r\n",
        ];
        let limits = ChunkLimits {
            max_line_bytes: 12,
            max_trailer_bytes: 16,
            max_payload_bytes: 9,
        };
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let base = bodies[rng.below(bodies.len())];
            let input = rng.mutate(base, ALPHABET);
            if let (Ok((consumed, _)), _) = scan_all_ways(ChunkLimits::default(), &input) {
                assert!(consumed <= input.len());
            }
            if let (Ok((consumed, _)), payload) = scan_all_ways(limits, &input) {
                assert!(consumed <= input.len() && payload <= 9);
            }
        }
    }
}
