//! TCP options (RFC 9293 §3.1, RFC 7323, RFC 2018): a strict walker over
//! the options area and in-place rewrites that report their checksum
//! change.
//!
//! The options area is at most 40 bytes (a data offset of 15 words minus
//! the 20-byte fixed header). The eBPF side copies it into a
//! `[u8; MAX_LEN]` on the stack and works there ([`parse_area`]); [`parse`]
//! reads any `&[u8]` of at most [`MAX_LEN`] bytes. The walk visits the
//! [`MAX_LEN`] byte positions once each, a bound the verifier can see.
//!
//! Strictness: anything the walker does not fully understand makes the
//! whole area [`OptionsError`]; the caller then falls back (passes the
//! packet to the stack, or relays the response) and never rewrites it.
//!
//! Byte order: the option bytes are in network order as on the wire; the
//! values parsed out and passed in are host order. The checksum changes
//! ([`Delta`]) are host order, over the 16-bit words of the options area,
//! which must start at an even offset from the start of the TCP header (it
//! always does: offset 20).

use super::csum::Delta;
use super::sack::{MAX_BLOCKS, SackBlock, SackBlocks};

/// Largest options area.
pub const MAX_LEN: usize = 40;

/// End of option list.
pub const KIND_EOL: u8 = 0;
/// No operation (padding).
pub const KIND_NOP: u8 = 1;
/// Maximum segment size (SYN only), length 4.
pub const KIND_MSS: u8 = 2;
/// Window scale (SYN only), length 3.
pub const KIND_WSCALE: u8 = 3;
/// SACK permitted (SYN only), length 2.
pub const KIND_SACK_PERMITTED: u8 = 4;
/// SACK, length 2 + 8 * n, n in 1..=4.
pub const KIND_SACK: u8 = 5;
/// Timestamps, length 10.
pub const KIND_TIMESTAMPS: u8 = 8;

/// Why an options area was not understood. The caller never rewrites such
/// a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// More than [`MAX_LEN`] bytes.
    TooLong,
    /// An option's length byte is missing, below 2, or runs past the end.
    BadLength,
    /// A known option with the wrong length for its kind.
    BadKindLength,
    /// A known option twice (ambiguous: which one does the receiver use?).
    Duplicate,
}

/// An MSS option: `at` is the offset of its kind byte in the area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mss {
    /// Offset of the kind byte.
    pub at: u8,
    /// Host order.
    pub value: u16,
}

/// A window-scale option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowScale {
    /// Offset of the kind byte.
    pub at: u8,
    /// The shift as sent (not clamped to 14).
    pub shift: u8,
}

/// A timestamps option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    /// Offset of the kind byte.
    pub at: u8,
    /// Host order.
    pub tsval: u32,
    /// Host order.
    pub tsecr: u32,
}

/// A SACK option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sack {
    /// Offset of the kind byte.
    pub at: u8,
    /// Number of blocks, 1..=4 (the option's length is `2 + 8 * count`).
    pub count: u8,
}

impl Sack {
    /// The option's length byte value.
    #[must_use]
    #[inline(always)]
    pub const fn option_len(self) -> usize {
        2 + 8 * self.count as usize
    }
}

/// The options the datapath cares about, found in one area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// MSS, if present.
    pub mss: Option<Mss>,
    /// Window scale, if present.
    pub wscale: Option<WindowScale>,
    /// SACK permitted was present.
    pub sack_permitted: bool,
    /// Timestamps, if present.
    pub timestamps: Option<Timestamps>,
    /// SACK, if present.
    pub sack: Option<Sack>,
}

#[inline(always)]
fn be16(opts: &[u8], at: usize) -> Option<u16> {
    match (opts.get(at), opts.get(at.wrapping_add(1))) {
        (Some(&a), Some(&b)) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

#[inline(always)]
fn be32(opts: &[u8], at: usize) -> Option<u32> {
    match (be16(opts, at), be16(opts, at.wrapping_add(2))) {
        (Some(hi), Some(lo)) => Some((u32::from(hi) << 16) | u32::from(lo)),
        _ => None,
    }
}

/// Offsets here are below 40, so they fit a `u8`.
#[inline(always)]
fn at_u8(at: usize) -> u8 {
    u8::try_from(at).unwrap_or(u8::MAX)
}

/// Walks an options area (network-order bytes, at most [`MAX_LEN`]) and
/// returns the options found, or why the area is not understood. Stops at
/// EOL (the bytes after it are padding); skips NOPs and unknown options
/// with a well-formed length.
///
/// Copies the area into a fixed buffer and calls [`parse_area`]; the
/// datapath, which already holds the area in a `[u8; MAX_LEN]`, calls
/// that directly.
#[inline(always)]
pub fn parse(opts: &[u8]) -> Result<Parsed, OptionsError> {
    let mut buf = [0_u8; MAX_LEN];
    let len = opts.len();
    buf.get_mut(..len)
        .ok_or(OptionsError::TooLong)?
        .copy_from_slice(opts);
    parse_area(&buf, len)
}

/// [`parse`] over the first `len` bytes of `buf`.
///
/// Written for the verifier: the walk visits every byte position `p` in
/// `0..MAX_LEN` in order and acts only where the next option starts, so
/// every read is at `p` plus a constant (a constant stack offset once the
/// loop is unrolled, a bounded loop counter otherwise), never at an offset
/// computed from packet data. The offset of the next option is then only
/// compared, never used to address memory, so the verifier need not track
/// it precisely and prunes the paths that differ only in it. (A walk that
/// jumps from option to option reads at data-dependent offsets and
/// exceeds the verifier's complexity limit.)
#[inline(always)]
pub fn parse_area(buf: &[u8; MAX_LEN], len: usize) -> Result<Parsed, OptionsError> {
    if len > MAX_LEN {
        return Err(OptionsError::TooLong);
    }
    let mut out = Parsed::default();
    let mut next = 0_usize;
    for p in 0..MAX_LEN {
        if p != next || p >= len {
            continue;
        }
        let kind = buf.get(p).copied().unwrap_or(KIND_EOL);
        if kind == KIND_EOL {
            // The bytes after EOL are padding.
            break;
        }
        if kind == KIND_NOP {
            next = p + 1;
            continue;
        }
        let opt_len = match buf.get(p + 1) {
            Some(&l) if p + 1 < len => usize::from(l),
            _ => return Err(OptionsError::BadLength),
        };
        if opt_len < 2 || p + opt_len > len {
            return Err(OptionsError::BadLength);
        }
        record(&mut out, buf, p, kind, opt_len)?;
        next = p + opt_len;
    }
    Ok(out)
}

/// Records option `kind` of length `len` (already checked to lie within
/// the area) at offset `p`.
#[inline(always)]
fn record(
    out: &mut Parsed,
    buf: &[u8; MAX_LEN],
    p: usize,
    kind: u8,
    len: usize,
) -> Result<(), OptionsError> {
    let at = at_u8(p);
    match kind {
        KIND_MSS => {
            if len != 4 {
                return Err(OptionsError::BadKindLength);
            }
            if out.mss.is_some() {
                return Err(OptionsError::Duplicate);
            }
            let value = be16(buf, p + 2).ok_or(OptionsError::BadLength)?;
            out.mss = Some(Mss { at, value });
        }
        KIND_WSCALE => {
            if len != 3 {
                return Err(OptionsError::BadKindLength);
            }
            if out.wscale.is_some() {
                return Err(OptionsError::Duplicate);
            }
            let shift = *buf.get(p + 2).ok_or(OptionsError::BadLength)?;
            out.wscale = Some(WindowScale { at, shift });
        }
        KIND_SACK_PERMITTED => {
            if len != 2 {
                return Err(OptionsError::BadKindLength);
            }
            if out.sack_permitted {
                return Err(OptionsError::Duplicate);
            }
            out.sack_permitted = true;
        }
        KIND_SACK => {
            if len < 10 || !(len - 2).is_multiple_of(8) {
                return Err(OptionsError::BadKindLength);
            }
            if out.sack.is_some() {
                return Err(OptionsError::Duplicate);
            }
            // len <= MAX_LEN - p, so at most 4 blocks.
            out.sack = Some(Sack {
                at,
                count: at_u8((len - 2) / 8),
            });
        }
        KIND_TIMESTAMPS => {
            if len != 10 {
                return Err(OptionsError::BadKindLength);
            }
            if out.timestamps.is_some() {
                return Err(OptionsError::Duplicate);
            }
            let tsval = be32(buf, p + 2).ok_or(OptionsError::BadLength)?;
            let tsecr = be32(buf, p + 6).ok_or(OptionsError::BadLength)?;
            out.timestamps = Some(Timestamps { at, tsval, tsecr });
        }
        // Unknown options are skipped by their length.
        _ => {}
    }
    Ok(())
}

/// The blocks of a SACK option found by [`parse`], host order. Returns no
/// blocks if `sack` does not describe a SACK option inside `opts`.
#[must_use]
#[inline(always)]
pub fn read_sack(opts: &[u8], sack: Sack) -> SackBlocks {
    let mut out = SackBlocks::new();
    let at = usize::from(sack.at);
    if opts.get(at) != Some(&KIND_SACK)
        || opts.get(at + 1).map(|&l| usize::from(l)) != Some(sack.option_len())
    {
        return out;
    }
    for n in 0..MAX_BLOCKS {
        if n >= usize::from(sack.count) {
            break;
        }
        let base = at + 2 + 8 * n;
        if let (Some(left), Some(right)) = (be32(opts, base), be32(opts, base + 4)) {
            out.push(SackBlock { left, right });
        }
    }
    out
}

/// [`read_sack`] over an area buffer, at the offsets [`parse_common`]
/// reports (2 or 14) through constant offsets only (see
/// [`write_with_delta`] for why); no blocks for any other offset.
#[must_use]
#[inline(always)]
pub fn read_sack_area(buf: &[u8; MAX_LEN], sack: Sack) -> SackBlocks {
    match sack.at {
        2 => read_sack_at::<2>(buf, sack.count),
        14 => read_sack_at::<14>(buf, sack.count),
        _ => SackBlocks::new(),
    }
}

#[inline(always)]
fn read_sack_at<const AT: usize>(buf: &[u8; MAX_LEN], count: u8) -> SackBlocks {
    let mut out = SackBlocks::new();
    if buf.get(AT) != Some(&KIND_SACK) {
        return out;
    }
    for n in 0..MAX_BLOCKS {
        if n >= usize::from(count) {
            break;
        }
        let base = AT + 2 + 8 * n;
        if let (Some(left), Some(right)) = (be32(buf, base), be32(buf, base + 4)) {
            out.push(SackBlock { left, right });
        }
    }
    out
}

/// Writes `bytes` at `at` in `buf` and returns the checksum change over the
/// aligned 16-bit words the write touched; `None` (and `buf` unchanged)
/// when the range does not fit.
/// Where the datapath writes: the offsets the layouts of
/// [`parse_common`] produce (the area start, a timestamps or SACK option's
/// kind byte, a timestamps option's values). In BPF every write goes
/// through a constant offset (the verifier cannot bound a variable one
/// into a map value once LLVM has rearranged the checks); other offsets
/// are refused there, and written by the general path on the host.
#[inline(always)]
fn write_with_delta(buf: &mut [u8; MAX_LEN], at: usize, bytes: &[u8]) -> Option<Delta> {
    match at {
        0 => write_at::<0>(buf, bytes),
        2 => write_at::<2>(buf, bytes),
        4 => write_at::<4>(buf, bytes),
        14 => write_at::<14>(buf, bytes),
        16 => write_at::<16>(buf, bytes),
        #[cfg(not(target_arch = "bpf"))]
        _ => write_bytes(buf, at, bytes),
        #[cfg(target_arch = "bpf")]
        _ => None,
    }
}

/// [`write_bytes`] at a constant offset: inlined, every offset below is a
/// constant for the verifier.
#[inline(always)]
fn write_at<const AT: usize>(buf: &mut [u8; MAX_LEN], bytes: &[u8]) -> Option<Delta> {
    write_bytes(buf, AT, bytes)
}

#[inline(always)]
fn write_bytes(buf: &mut [u8; MAX_LEN], at: usize, bytes: &[u8]) -> Option<Delta> {
    let end = at.checked_add(bytes.len())?;
    if end > MAX_LEN {
        return None;
    }
    let before = *buf;
    // Byte by byte, the source at loop-constant positions: a
    // `copy_from_slice` at the variable offset `at` becomes a memcpy loop
    // whose bounds the verifier cannot tie to the check above.
    // The loop runs a constant number of times and stores conditionally,
    // so LLVM does not turn it into a memcpy of a variable length.
    for j in 0..MAX_LEN {
        if j < bytes.len()
            && let (Some(dst), Some(&src)) = (buf.get_mut(at + j), bytes.get(j))
        {
            *dst = src;
        }
    }
    // Every aligned word overlapping [at, end). The word positions are
    // loop constants, not computed from `at`: once the loop is unrolled
    // every read has a constant stack offset. (A variable index into the
    // stack copy made LLVM reuse a pointer whose bounds the verifier had
    // not narrowed: "invalid variable-offset read from stack".)
    let mut delta = Delta::new();
    for w in 0..MAX_LEN / 2 {
        let i = 2 * w;
        if i >= end || i + 2 <= at {
            continue;
        }
        if let (Some(old), Some(new)) = (be16(&before, i), be16(buf, i)) {
            delta = delta.replace16(old, new);
        }
    }
    Some(delta)
}

/// Sets the timestamps option found by [`parse`] to `tsval`/`tsecr` (host
/// order) in place; returns the checksum change, or `None` (nothing
/// written) if `ts.at` does not hold a timestamps option.
#[inline(always)]
pub fn set_timestamps(
    buf: &mut [u8; MAX_LEN],
    ts: Timestamps,
    tsval: u32,
    tsecr: u32,
) -> Option<Delta> {
    let at = usize::from(ts.at);
    if buf.get(at) != Some(&KIND_TIMESTAMPS) || buf.get(at + 1) != Some(&10) {
        return None;
    }
    if at == 2 {
        // Linux's layout (NOP NOP TS, the only one the datapath meets):
        // both values sit on checksum word boundaries at constant offsets,
        // so each is written and summed as one 32-bit field (the general
        // path below runs a byte loop over the whole area).
        return Some(replace_u32_at::<4>(buf, tsval).merge(replace_u32_at::<8>(buf, tsecr)));
    }
    let mut bytes = [0_u8; 8];
    let (v, e) = bytes.split_at_mut(4);
    v.copy_from_slice(&tsval.to_be_bytes());
    e.copy_from_slice(&tsecr.to_be_bytes());
    write_with_delta(buf, at + 2, &bytes)
}

/// Writes `value` (host order) as the 32-bit big-endian field at `AT`, an
/// even offset (a checksum word boundary: the area starts at the TCP
/// header's byte 20); returns the checksum change.
#[inline(always)]
fn replace_u32_at<const AT: usize>(buf: &mut [u8; MAX_LEN], value: u32) -> Delta {
    const { assert!(AT.is_multiple_of(2) && AT + 4 <= MAX_LEN) };
    let old = u32::from_be_bytes([buf[AT], buf[AT + 1], buf[AT + 2], buf[AT + 3]]);
    let [a, b, c, d] = value.to_be_bytes();
    (buf[AT], buf[AT + 1], buf[AT + 2], buf[AT + 3]) = (a, b, c, d);
    Delta::new().replace32(old, value)
}

/// Replaces the SACK option found by [`parse`] with `blocks` (host order;
/// at most `sack.count` of them are written). The option keeps its place;
/// when fewer blocks remain, the option shrinks and the freed bytes become
/// NOPs (the area, and so the packet, keeps its length); with no blocks
/// the whole option becomes NOPs. Returns the checksum change, or `None`
/// (nothing written) if `sack` does not describe a SACK option in `buf`.
#[inline(always)]
pub fn write_sack(buf: &mut [u8; MAX_LEN], sack: Sack, blocks: &SackBlocks) -> Option<Delta> {
    let at = usize::from(sack.at);
    let len = sack.option_len();
    if buf.get(at) != Some(&KIND_SACK) || buf.get(at + 1).map(|&l| usize::from(l)) != Some(len) {
        return None;
    }
    let mut bytes = [KIND_NOP; 2 + 8 * MAX_BLOCKS];
    let keep = if blocks.len() < usize::from(sack.count) {
        blocks.len()
    } else {
        usize::from(sack.count)
    };
    if keep > 0 {
        if let Some([k, l]) = bytes.get_mut(..2) {
            *k = KIND_SACK;
            *l = at_u8(2 + 8 * keep);
        }
        for (n, b) in blocks.as_slice().iter().enumerate().take(keep) {
            let base = 2 + 8 * n;
            if let Some(dst) = bytes.get_mut(base..base + 8) {
                let (l, r) = dst.split_at_mut(4);
                l.copy_from_slice(&b.left.to_be_bytes());
                r.copy_from_slice(&b.right.to_be_bytes());
            }
        }
    }
    write_with_delta(buf, at, bytes.get(..len)?)
}

/// Overwrites `len` bytes at `at` with NOPs (removes an option); returns
/// the checksum change, or `None` if the range does not fit.
#[inline(always)]
pub fn nop_out(buf: &mut [u8; MAX_LEN], at: u8, len: u8) -> Option<Delta> {
    let nops = [KIND_NOP; MAX_LEN];
    write_with_delta(buf, usize::from(at), nops.get(..usize::from(len))?)
}

/// Lowers the MSS option found by [`parse`] to `max` (host order) if it is
/// above; returns the checksum change (empty when the value was already
/// within `max`), or `None` if `mss.at` does not hold an MSS option.
#[inline(always)]
pub fn clamp_mss(buf: &mut [u8; MAX_LEN], mss: Mss, max: u16) -> Option<Delta> {
    let at = usize::from(mss.at);
    if buf.get(at) != Some(&KIND_MSS) || buf.get(at + 1) != Some(&4) {
        return None;
    }
    let value = be16(buf, at + 2)?;
    if value <= max {
        return Some(Delta::new());
    }
    write_with_delta(buf, at + 2, &max.to_be_bytes())
}

/// What [`parse_common`] found. Plain integers only (no `Option`s): a
/// `None` carries undefined payload bytes, and copying them makes LLVM
/// read registers the verifier considers uninitialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The layout is one of the known ones (otherwise nothing else is set).
    pub known: bool,
    /// Offset of the timestamps option's kind byte; 0 when absent.
    pub ts_at: u8,
    /// Offset of the SACK option's kind byte; 0 when absent.
    pub sack_at: u8,
    /// SACK blocks (1..=4) when present.
    pub sack_count: u8,
    /// Host order.
    pub tsval: u32,
    /// Host order.
    pub tsecr: u32,
}

impl Layout {
    /// The timestamps option, as [`parse`] reports it.
    #[inline(always)]
    #[must_use]
    pub const fn timestamps(&self) -> Option<Timestamps> {
        if self.ts_at == 0 {
            None
        } else {
            Some(Timestamps {
                at: self.ts_at,
                tsval: self.tsval,
                tsecr: self.tsecr,
            })
        }
    }

    /// The SACK option, as [`parse`] reports it.
    #[inline(always)]
    #[must_use]
    pub const fn sack(&self) -> Option<Sack> {
        if self.sack_at == 0 {
            None
        } else {
            Some(Sack {
                at: self.sack_at,
                count: self.sack_count,
            })
        }
    }
}

/// The option layouts Linux sends on established connections, recognised
/// by fixed-offset reads only (what the datapath runs: the general walk of
/// [`parse_area`] exceeds the verifier's complexity limit):
///
/// - no options;
/// - `NOP NOP TS` (12 bytes);
/// - `NOP NOP TS NOP NOP SACK(1..=3 blocks)` (24, 32, 40 bytes);
/// - `NOP NOP SACK(1..=4 blocks)` (12, 20, 28, 36 bytes).
///
/// Any other layout gives `known: false`; the caller then treats the area
/// as not understood (removes it rather than pass it through
/// untranslated).
#[inline(always)]
#[must_use]
pub fn parse_common(buf: &[u8; MAX_LEN], len: usize) -> Layout {
    let unknown = Layout::default();
    let mut out = Layout {
        known: true,
        ..Layout::default()
    };
    if len == 0 {
        return out;
    }
    let head = [buf[0], buf[1], buf[2], buf[3]];
    let sack_at = if head == [KIND_NOP, KIND_NOP, KIND_TIMESTAMPS, 10] && len >= 12 {
        out.ts_at = 2;
        out.tsval = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        out.tsecr = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len == 12 {
            return out;
        }
        if [buf[12], buf[13], buf[14]] != [KIND_NOP, KIND_NOP, KIND_SACK] {
            return unknown;
        }
        14
    } else if [head[0], head[1], head[2]] == [KIND_NOP, KIND_NOP, KIND_SACK] {
        2
    } else {
        return unknown;
    };
    // The SACK option runs to the end of the area.
    let opt_len = if sack_at == 14 { buf[15] } else { buf[3] };
    let count = opt_len.wrapping_sub(2) / 8;
    if !(1..=4).contains(&count)
        || usize::from(opt_len) != 2 + 8 * usize::from(count)
        || sack_at + usize::from(opt_len) != len
    {
        return unknown;
    }
    out.sack_at = at_u8(sack_at);
    out.sack_count = count;
    out
}

/// Replaces the whole area with NOPs (an area [`parse_common`] does not
/// understand, on a segment whose options would need translating); returns
/// the checksum change.
pub fn nop_all(buf: &mut [u8; MAX_LEN], len: usize) -> Option<Delta> {
    nop_out(buf, 0, u8::try_from(len).ok()?)
}

#[cfg(test)]
mod tests {
    use super::super::csum::checksum;
    use super::*;

    /// Linux's usual data-segment layout: NOP NOP TS.
    fn ts_area(tsval: u32, tsecr: u32) -> Vec<u8> {
        let mut v = vec![1, 1, 8, 10];
        v.extend_from_slice(&tsval.to_be_bytes());
        v.extend_from_slice(&tsecr.to_be_bytes());
        v
    }

    fn buf(area: &[u8]) -> [u8; MAX_LEN] {
        let mut b = [0_u8; MAX_LEN];
        b[..area.len()].copy_from_slice(area);
        b
    }

    #[test]
    fn parse_table() {
        let syn = [
            2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut sack_ts = vec![1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1, 5, 18];
        sack_ts.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40]);
        let ok: &[(&str, &[u8], Parsed)] = &[
            ("empty", &[], Parsed::default()),
            ("only NOPs", &[1, 1, 1], Parsed::default()),
            ("EOL stops the walk", &[0, 2, 1], Parsed::default()),
            (
                "SYN: MSS, SACK permitted, TS, NOP, WS",
                &syn,
                Parsed {
                    mss: Some(Mss { at: 0, value: 1460 }),
                    wscale: Some(WindowScale { at: 17, shift: 7 }),
                    sack_permitted: true,
                    timestamps: Some(Timestamps {
                        at: 6,
                        tsval: 1,
                        tsecr: 0,
                    }),
                    sack: None,
                },
            ),
            (
                "TS then SACK with two blocks",
                &sack_ts,
                Parsed {
                    timestamps: Some(Timestamps {
                        at: 2,
                        tsval: 5,
                        tsecr: 6,
                    }),
                    sack: Some(Sack { at: 14, count: 2 }),
                    ..Parsed::default()
                },
            ),
            (
                "unknown option skipped",
                &[30, 4, 9, 9, 1, 0],
                Parsed::default(),
            ),
            (
                "TS at an odd offset",
                &[1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0],
                Parsed {
                    timestamps: Some(Timestamps {
                        at: 1,
                        tsval: 1,
                        tsecr: 2,
                    }),
                    ..Parsed::default()
                },
            ),
        ];
        for (name, area, want) in ok {
            assert_eq!(parse(area), Ok(*want), "{name}");
        }
        let bad: &[(&str, &[u8], OptionsError)] = &[
            ("41 bytes", &[1; 41], OptionsError::TooLong),
            ("length byte missing", &[1, 8], OptionsError::BadLength),
            ("length 0", &[30, 0, 1, 1], OptionsError::BadLength),
            ("length 1", &[30, 1, 1, 1], OptionsError::BadLength),
            (
                "past the end",
                &[8, 10, 0, 0, 0, 1],
                OptionsError::BadLength,
            ),
            ("MSS length 3", &[2, 3, 1], OptionsError::BadKindLength),
            ("WS length 4", &[3, 4, 1, 1], OptionsError::BadKindLength),
            (
                "TS length 8",
                &[8, 8, 0, 0, 0, 0, 0, 0],
                OptionsError::BadKindLength,
            ),
            ("SACK no block", &[5, 2], OptionsError::BadKindLength),
            (
                "SACK 1.5 blocks",
                &[5, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                OptionsError::BadKindLength,
            ),
            (
                "SACK-permitted length 3",
                &[4, 3, 0],
                OptionsError::BadKindLength,
            ),
            ("two WS", &[3, 3, 1, 3, 3, 2], OptionsError::Duplicate),
            ("two SACK-permitted", &[4, 2, 4, 2], OptionsError::Duplicate),
        ];
        for (name, area, want) in bad {
            assert_eq!(parse(area), Err(*want), "{name}");
        }
        let mut two_ts = ts_area(1, 2);
        two_ts.extend(ts_area(3, 4));
        assert_eq!(parse(&two_ts), Err(OptionsError::Duplicate));
    }

    #[test]
    fn full_sack_option_and_read_back() {
        // Four blocks fill 34 bytes (no room for TS).
        let mut area = vec![1, 1, 5, 34];
        for i in 0..8_u32 {
            area.extend_from_slice(&(0xFFFF_FFF0_u32.wrapping_add(i * 0x10)).to_be_bytes());
        }
        assert_eq!(area.len(), 36);
        let p = parse(&area).unwrap();
        let sack = p.sack.unwrap();
        assert_eq!(sack, Sack { at: 2, count: 4 });
        let blocks = read_sack(&area, sack);
        assert_eq!(blocks.len(), 4);
        assert_eq!(
            blocks.as_slice()[1],
            SackBlock {
                left: 0x10,
                right: 0x20
            }
        );
        // A stale descriptor reads nothing.
        assert!(read_sack(&area, Sack { at: 0, count: 4 }).is_empty());
    }

    /// The options area inside a 20-byte TCP header (plus a pseudo-header
    /// stand-in) so rewrites can be checked against a full checksum.
    fn segment_check(area: &[u8; MAX_LEN]) -> u16 {
        let mut seg = vec![0x45, 0x00, 0x12, 0x34, 0xC0, 0, 2, 1, 0, 0, 0, 6];
        seg.extend_from_slice(&[0x1F, 0x90, 0xC3, 0x50, 1, 2, 3, 4, 5, 6, 7, 8]);
        seg.extend_from_slice(&[0xF0, 0x10, 0x01, 0xF5, 0, 0, 0, 0]);
        seg.extend_from_slice(area);
        seg.extend_from_slice(b"payload!");
        checksum(&seg)
    }

    #[test]
    fn set_timestamps_even_and_odd_offsets() {
        for (area, at) in [
            (ts_area(100, 200), 2_usize),
            // NOP TS NOP: TSval starts at an odd offset.
            ([&[1_u8][..], &ts_area(100, 200)[2..], &[1]].concat(), 1),
        ] {
            let mut b = buf(&area);
            let check = segment_check(&b);
            let ts = parse(&area).unwrap().timestamps.unwrap();
            assert_eq!(usize::from(ts.at), at);
            for (v, e) in [
                (0xFFFF_FFFF, 0),
                (0, 0xFFFF_FFFF),
                (0x1234_5678, 0x9ABC_DEF0),
            ] {
                let before = segment_check(&b);
                let d = set_timestamps(&mut b, ts, v, e).unwrap();
                let p = parse(&b[..area.len()]).unwrap().timestamps.unwrap();
                assert_eq!((p.tsval, p.tsecr), (v, e));
                assert_eq!(d.apply(before), segment_check(&b), "at {at}: {v:#x} {e:#x}");
            }
            assert_ne!(check, segment_check(&b));
        }
        // A stale descriptor writes nothing.
        let mut b = buf(&ts_area(1, 2));
        let bad = Timestamps {
            at: 0,
            tsval: 0,
            tsecr: 0,
        };
        assert_eq!(set_timestamps(&mut b, bad, 5, 5), None);
        assert_eq!(b, buf(&ts_area(1, 2)));
    }

    #[test]
    fn write_sack_shrinks_with_nops() {
        let mut area = ts_area(5, 6);
        area.extend_from_slice(&[1, 1, 5, 26]);
        for v in [10_u32, 20, 30, 40, 50, 60] {
            area.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(area.len(), 40);
        let sack = parse(&area).unwrap().sack.unwrap();
        let cases: &[(&[(u32, u32)], usize)] = &[
            (&[(1, 2), (3, 4), (5, 6)], 3),
            (&[(7, 8)], 1),
            (&[], 0),
            (&[(1, 2), (3, 4), (5, 6), (7, 8)], 3), // only `count` fit
        ];
        for &(new, kept) in cases {
            let mut b = buf(&area);
            let before = segment_check(&b);
            let mut blocks = SackBlocks::new();
            for &(l, r) in new {
                blocks.push(SackBlock::new(l, r));
            }
            let d = write_sack(&mut b, sack, &blocks).unwrap();
            assert_eq!(d.apply(before), segment_check(&b), "{new:?}");
            let p = parse(&b).unwrap();
            assert_eq!(p.timestamps.unwrap().tsval, 5, "TS untouched");
            match p.sack {
                None => assert_eq!(kept, 0),
                Some(s) => {
                    assert_eq!(usize::from(s.count), kept);
                    let got = read_sack(&b, s);
                    assert_eq!(got.as_slice(), &blocks.as_slice()[..kept]);
                    // Freed bytes are NOPs.
                    assert!(b[14 + s.option_len()..].iter().all(|&x| x == KIND_NOP));
                }
            }
        }
    }

    #[test]
    fn clamp_mss_and_nop_out() {
        let area = [2, 4, 0x23, 0x28, 1, 3, 3, 7]; // MSS 9000, NOP, WS 7
        let mss = parse(&area).unwrap().mss.unwrap();
        let mut b = buf(&area);
        let before = segment_check(&b);
        assert_eq!(clamp_mss(&mut b, mss, 9000), Some(Delta::new()));
        let d = clamp_mss(&mut b, mss, 1460).unwrap();
        assert_eq!(parse(&b[..8]).unwrap().mss.unwrap().value, 1460);
        assert_eq!(d.apply(before), segment_check(&b));

        let before = segment_check(&b);
        let d = nop_out(&mut b, 5, 3).unwrap();
        assert_eq!(parse(&b[..8]).unwrap().wscale, None);
        assert_eq!(d.apply(before), segment_check(&b));
        assert_eq!(nop_out(&mut b, 38, 3), None);
    }

    #[test]
    fn parse_common_agrees_with_the_general_walk_on_linux_layouts() {
        let ts = ts_area(0x0102_0304, 0x0a0b_0c0d);
        let mut ts_sack = ts.clone();
        ts_sack.extend_from_slice(&[1, 1, 5, 18]);
        ts_sack.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
        let mut sack_only = vec![1, 1, 5, 10];
        sack_only.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0x10]);
        for area in [vec![], ts, ts_sack, sack_only] {
            let mut buf = [0_u8; MAX_LEN];
            buf[..area.len()].copy_from_slice(&area);
            let layout = parse_common(&buf, area.len());
            let parsed = parse(&area).expect("valid area");
            assert!(layout.known, "{area:02x?}");
            assert_eq!(layout.timestamps(), parsed.timestamps, "{area:02x?}");
            assert_eq!(layout.sack(), parsed.sack, "{area:02x?}");
        }
    }

    #[test]
    fn parse_common_declines_other_layouts() {
        let cases: [&[u8]; 5] = [
            // MSS (a SYN's options).
            &[2, 4, 5, 0xb4],
            // Timestamps without the NOP padding.
            &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1],
            // TS followed by something that is not SACK.
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 30, 2],
            // SACK length not matching the area.
            &[1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2],
            // SACK with a length that is not 2 + 8n.
            &[1, 1, 5, 9, 0, 0, 0, 1, 0, 0, 0, 2],
        ];
        for area in cases {
            let mut buf = [0_u8; MAX_LEN];
            buf[..area.len()].copy_from_slice(area);
            assert_eq!(
                parse_common(&buf, area.len()),
                Layout::default(),
                "{area:02x?}"
            );
        }
    }

    #[test]
    fn nop_all_clears_the_area_and_keeps_the_checksum_right() {
        let area = ts_area(7, 9);
        let mut buf = [0_u8; MAX_LEN];
        buf[..12].copy_from_slice(&area);
        let before = checksum(&buf[..12]);
        let d = nop_all(&mut buf, 12).expect("fits");
        assert_eq!(&buf[..12], &[KIND_NOP; 12]);
        assert_eq!(d.apply(before), checksum(&buf[..12]));
    }
}
