//! RFC 1624 incremental update of the Internet checksum (IPv4 header, TCP).
//!
//! Byte order: the one's complement sum does not depend on byte order
//! (RFC 1071 §2(B)) as long as *every* operand is in the same one. The
//! functions here are written for host-order values (what
//! `u16::from_be_bytes` gives for a field read from the packet, and the
//! checksum field read the same way); the result is then in host order too
//! and is written back with `to_be_bytes`.
//!
//! Why equation 3 of RFC 1624, `HC' = ~(~HC + ~m + m')`, and not RFC 1141's
//! `HC' = HC + m + ~m'`: the latter can produce `0xFFFF` (one's complement
//! −0) where a full recomputation gives `0x0000`. Equation 3 with an
//! end-around-carry fold gives exactly what a full recomputation gives for
//! any header whose words are not all zero (always true for IPv4 and TCP:
//! the version nibble and the pseudo-header protocol are nonzero).

/// Folds a 32-bit one's complement accumulator to 16 bits with end-around
/// carry. Two rounds are enough for any `u32`: after the first the value is
/// at most `0xFFFF + 0xFFFF = 0x1_FFFE`, after the second at most `0xFFFF`.
#[must_use]
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let once = (sum & 0xFFFF) + (sum >> 16);
    let twice = (once & 0xFFFF) + (once >> 16);
    // `twice <= 0xFFFF` (see above), so the truncation keeps every bit.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "two folds leave at most 16 significant bits"
    )]
    let folded = twice as u16;
    folded
}

/// One's complement sum of two 16-bit values (end-around carry).
#[must_use]
#[inline(always)]
pub const fn add16(a: u16, b: u16) -> u16 {
    fold(a as u32 + b as u32)
}

/// New checksum after one 16-bit word covered by it changed from `old` to
/// `new` (RFC 1624 eqn. 3). All three values and the result in the same
/// byte order (host order by convention, see the module docs).
#[must_use]
#[inline(always)]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    Delta::new().replace16(old, new).apply(check)
}

/// New checksum after a 32-bit field (two aligned 16-bit words: an address,
/// a sequence or acknowledgement number, a timestamp) changed from `old` to
/// `new`. Host order.
#[must_use]
#[inline(always)]
pub const fn replace32(check: u16, old: u32, new: u32) -> u16 {
    Delta::new().replace32(old, new).apply(check)
}

/// An accumulated checksum change: the one's complement sum of `~old + new`
/// over every replaced word, kept folded so it never overflows.
///
/// Several rewrites of one packet (address, port, sequence number,
/// options) are collected here and applied to the checksum field once.
/// [`Delta::value`] is in the form `bpf_csum_diff` returns (the sum of the
/// new words minus the old), so with the byte order converted (the value
/// is host order; the kernel sums raw network-order memory) it can also be
/// handed to `bpf_l4_csum_replace` in its diff mode (size 0 in the flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    sum: u16,
}

impl Delta {
    /// No change.
    #[must_use]
    #[inline(always)]
    pub const fn new() -> Self {
        Self { sum: 0 }
    }

    /// Adds the change of one 16-bit word. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn replace16(self, old: u16, new: u16) -> Self {
        Self {
            sum: fold(self.sum as u32 + !old as u32 + new as u32),
        }
    }

    /// Adds the change of one 32-bit field (two aligned words). Host order.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "splitting a u32 into its two 16-bit halves on purpose"
    )]
    #[inline(always)]
    pub const fn replace32(self, old: u32, new: u32) -> Self {
        self.replace16((old >> 16) as u16, (new >> 16) as u16)
            .replace16(old as u16, new as u16)
    }

    /// Combines two deltas (their changes happen to the same packet).
    #[must_use]
    #[inline(always)]
    pub const fn merge(self, other: Self) -> Self {
        Self {
            sum: add16(self.sum, other.sum),
        }
    }

    /// The folded sum of `~old + new` over all replaced words, host order.
    #[must_use]
    #[inline(always)]
    pub const fn value(self) -> u16 {
        self.sum
    }

    /// Applies the change to a checksum field value (host order):
    /// `~(~check + delta)`.
    #[must_use]
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        !fold(!check as u32 + self.sum as u32)
    }
}

/// One's complement sum of `data` as big-endian 16-bit words (an odd last
/// byte is padded with a zero byte on the right), added to `initial`, not
/// yet folded or complemented; host order.
///
/// Host and test helper: it loops over the whole slice, so it is bounded
/// only by the slice's length. The datapath never calls it on a packet.
#[must_use]
#[inline(always)]
pub fn sum_bytes(initial: u32, data: &[u8]) -> u32 {
    // 64-bit accumulator: no overflow for any slice shorter than 2^48 words.
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [hi, lo] = w {
            sum += u64::from(u16::from_be_bytes([*hi, *lo]));
        }
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // Fold 64 -> 32 bits with end-around carry; three rounds always suffice.
    for _ in 0..3 {
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "three folds leave at most 32 significant bits"
    )]
    let folded = sum as u32;
    folded
}

/// The Internet checksum of `data` (RFC 1071): the complement of the folded
/// one's complement sum, host order. Verifying a packet whose checksum field
/// is included gives `0` when it is correct.
///
/// Host and test helper (loops over the whole slice, see [`sum_bytes`]).
#[must_use]
#[inline(always)]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(0, data))
}

/// The full TCP checksum of an IPv4 segment with no payload (an ACK made
/// from a data segment by cutting its payload off), host order.
///
/// `header` is the 20-byte fixed TCP header (its checksum field is
/// skipped), `options` holds the options area in its first `options_len`
/// bytes (the rest is not read); the addresses are as on the wire. Loops
/// bounded by constants: the datapath may call it.
#[must_use]
#[inline(always)]
pub fn header_only_tcp(
    saddr: [u8; 4],
    daddr: [u8; 4],
    header: &[u8; 20],
    options: &[u8; 40],
    options_len: u16,
) -> u16 {
    let word = |b: &[u8], i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    // Pseudo-header: addresses, protocol 6, TCP length.
    let mut sum = word(&saddr, 0) + word(&saddr, 2) + word(&daddr, 0) + word(&daddr, 2);
    sum += 6 + 20 + u32::from(options_len);
    let mut i = 0;
    while i < 20 {
        // Byte 16 is the checksum field.
        if i != 16 {
            sum += word(header, i);
        }
        i += 2;
    }
    // The area's own bytes only: what follows them in `options` is left
    // over from other packets.
    let mut i = 0;
    while i < 40 && i < usize::from(options_len) {
        sum += word(options, i);
        i += 2;
    }
    // At most 36 words of 16 bits: no u32 overflow before folding.
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic pseudo-random numbers without a
    /// dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn u16(&mut self) -> u16 {
            (self.next() >> 48) as u16
        }
        fn u32(&mut self) -> u32 {
            (self.next() >> 32) as u32
        }
    }

    fn word(p: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([p[at], p[at + 1]])
    }

    fn set_word(p: &mut [u8], at: usize, v: u16) {
        p[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn rfc1624_example_gives_plus_zero_not_minus_zero() {
        // RFC 1624 §4: the other words sum to 0xCD7A, m = 0x5555 changes to
        // m' = 0x3285; recomputation gives 0x0000, RFC 1141's equation gave
        // 0xFFFF.
        assert_eq!(!add16(0xCD7A, 0x5555), 0xDD2F);
        assert_eq!(!add16(0xCD7A, 0x3285), 0x0000);
        assert_eq!(replace16(0xDD2F, 0x5555, 0x3285), 0x0000);
        // And back again.
        assert_eq!(replace16(0x0000, 0x3285, 0x5555), 0xDD2F);
    }

    #[test]
    fn fold_table() {
        for (sum, folded) in [
            (0_u32, 0_u16),
            (0xFFFF, 0xFFFF),
            (0x1_0000, 1),
            (0x1_FFFE, 0xFFFF),
            (0xFFFF_FFFF, 0xFFFF),
            (0x8000_8000, 1),
            (0x0001_FFFF, 1),
        ] {
            assert_eq!(fold(sum), folded, "fold({sum:#x})");
        }
    }

    #[test]
    fn replace_table_matches_recomputation() {
        // (other words' sum, old word, new word): edge values 0, 0xFFFF and
        // words that make the sum wrap.
        let cases: &[(u16, u16, u16)] = &[
            (0x0001, 0x0000, 0xFFFF),
            (0x0001, 0xFFFF, 0x0000),
            (0x1234, 0x0000, 0x0000),
            (0x1234, 0xFFFF, 0xFFFF),
            (0xFFFE, 0x0001, 0x0000),
            (0xFFFE, 0x0000, 0x0001),
            (0x8000, 0x8000, 0x7FFF),
            (0xEDCB, 0x1234, 0x1235),
            (0x0100, 0xFEFF, 0xFFFF),
        ];
        for &(rest, old, new) in cases {
            let check = !add16(rest, old);
            let want = !add16(rest, new);
            assert_eq!(
                replace16(check, old, new),
                want,
                "rest {rest:#x} {old:#x}->{new:#x}"
            );
        }
    }

    #[test]
    fn unchanged_word_keeps_the_checksum() {
        for check in [0x0000, 0x0001, 0x7FFF, 0xFFFE] {
            for w in [0x0000, 0x0001, 0x8000, 0xFFFF] {
                assert_eq!(replace16(check, w, w), check, "{check:#x} {w:#x}");
            }
        }
    }

    #[test]
    fn random_packets_incremental_equals_full() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            // A 4-byte-multiple "pseudo-header + TCP header + payload" with a
            // nonzero first word (as any real header has) and the checksum
            // field at offset 16.
            let len = 24 + 4 * (rng.next() % 20) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
            p[0] |= 0x40;
            set_word(&mut p, 16, 0);
            let check = checksum(&p);
            set_word(&mut p, 16, check);
            assert_eq!(checksum(&p), 0, "round {round}: fresh packet verifies");

            // A 16-bit and a 32-bit rewrite at aligned, random positions
            // (not the checksum word), applied one at a time and as one
            // delta.
            let a16 = 2 * usize::try_from(rng.next() % (len as u64 / 2)).unwrap();
            let a16 = if a16 == 16 { 18 } else { a16 };
            let a32 = 4 * usize::try_from(rng.next() % (len as u64 / 4)).unwrap();
            let a32 = if a32 == 16 { 20 } else { a32 };
            let (new16, new32) = match round % 4 {
                0 => (rng.u16(), rng.u32()),
                1 => (0, 0),
                2 => (0xFFFF, 0xFFFF_FFFF),
                _ => (!word(&p, a16), rng.u32()),
            };
            let old16 = word(&p, a16);
            set_word(&mut p, a16, new16);
            let c1 = replace16(check, old16, new16);
            let old32 = u32::from_be_bytes(p[a32..a32 + 4].try_into().unwrap());
            p[a32..a32 + 4].copy_from_slice(&new32.to_be_bytes());
            let c2 = replace32(c1, old32, new32);
            let delta = Delta::new().replace16(old16, new16).replace32(old32, new32);
            set_word(&mut p, 16, 0);
            let full = checksum(&p);
            assert_eq!(c2, full, "round {round}: incremental vs full");
            assert_eq!(delta.apply(check), full, "round {round}: one delta");
            set_word(&mut p, 16, c2);
            assert_eq!(checksum(&p), 0, "round {round}: rewritten packet verifies");
        }
    }

    #[test]
    fn merged_deltas_equal_sequential_ones() {
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let check = rng.u16();
            let (a, b, c, d) = (rng.u16(), rng.u16(), rng.u32(), rng.u32());
            let one = Delta::new().replace16(a, b);
            let two = Delta::new().replace32(c, d);
            assert_eq!(
                one.merge(two).apply(check),
                replace32(replace16(check, a, b), c, d)
            );
        }
    }

    #[test]
    fn byte_order_independence() {
        // The same rewrite done on byte-swapped operands gives the
        // byte-swapped checksum: the caller may stay in network order as
        // long as every operand is.
        let mut rng = Rng(99);
        for _ in 0..1000 {
            let (check, old, new) = (rng.u16(), rng.u16(), rng.u16());
            if check == 0xFFFF || check == 0 {
                continue;
            }
            assert_eq!(
                replace16(check.swap_bytes(), old.swap_bytes(), new.swap_bytes()),
                replace16(check, old, new).swap_bytes()
            );
        }
    }

    #[test]
    fn header_only_tcp_matches_full_recomputation() {
        let mut rng = Rng(0x51CE);
        for round in 0..5000 {
            let olen_u16 = 4 * u16::try_from(rng.next() % 11).unwrap();
            let olen = usize::from(olen_u16);
            let saddr = rng.u32().to_be_bytes();
            let daddr = rng.u32().to_be_bytes();
            let mut header = [0_u8; 20];
            for b in &mut header {
                *b = rng.next().to_le_bytes()[0];
            }
            // Garbage in the checksum field is ignored.
            header[16] = 0xAB;
            let mut options = [0_u8; 40];
            for b in &mut options[..olen] {
                *b = rng.next().to_le_bytes()[0];
            }
            let got = header_only_tcp(saddr, daddr, &header, &options, olen_u16);
            let tcp_len = 20 + olen_u16;
            let mut segment = Vec::new();
            segment.extend_from_slice(&saddr);
            segment.extend_from_slice(&daddr);
            segment.extend_from_slice(&[0, 6]);
            segment.extend_from_slice(&tcp_len.to_be_bytes());
            header[16..18].copy_from_slice(&got.to_be_bytes());
            segment.extend_from_slice(&header);
            segment.extend_from_slice(&options[..olen]);
            assert_eq!(checksum(&segment), 0, "round {round}: verifies");
        }
    }

    #[test]
    fn odd_length_is_padded() {
        assert_eq!(sum_bytes(0, &[0x12]), 0x1200);
        assert_eq!(sum_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(checksum(&[]), 0xFFFF);
    }
}
