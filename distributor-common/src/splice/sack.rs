//! SACK blocks (RFC 2018) translated between the client's and the
//! backend's sequence spaces, and into the gateway sockets' views.
//!
//! A block is `[left, right)`: host-order sequence numbers (the caller
//! converts from the option's network-order bytes; [`super::options`]
//! reads and writes them). An option holds at most four blocks (three with
//! timestamps). Blocks are kept in their original order: the first block
//! carries meaning (the most recent arrival, or a D-SACK, RFC 2883).

use super::seq::{Region, Shift, seq_lt, seq_max};

/// Most blocks one SACK option can hold (40 option bytes: 2 + 4 * 8 = 34).
pub const MAX_BLOCKS: usize = 4;

/// One SACK block `[left, right)`, host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlock {
    /// First sequence number covered. Host order.
    pub left: u32,
    /// One past the last sequence number covered. Host order.
    pub right: u32,
}

impl SackBlock {
    /// A block, host order.
    #[must_use]
    #[inline(always)]
    pub const fn new(left: u32, right: u32) -> Self {
        Self { left, right }
    }

    /// True when the block covers at least one byte (`left < right` in
    /// sequence space); a block that does not is garbage and is dropped.
    #[must_use]
    #[inline(always)]
    pub const fn is_valid(self) -> bool {
        seq_lt(self.left, self.right)
    }
}

/// Up to [`MAX_BLOCKS`] blocks, without allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [SackBlock; MAX_BLOCKS],
    count: usize,
}

impl SackBlocks {
    /// No blocks.
    #[must_use]
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            blocks: [SackBlock { left: 0, right: 0 }; MAX_BLOCKS],
            count: 0,
        }
    }

    /// Appends a block; returns false (and keeps the list) when full.
    #[inline(always)]
    pub fn push(&mut self, block: SackBlock) -> bool {
        match self.blocks.get_mut(self.count) {
            Some(slot) => {
                *slot = block;
                self.count += 1;
                true
            }
            None => false,
        }
    }

    /// Number of blocks.
    #[must_use]
    #[inline(always)]
    pub const fn len(&self) -> usize {
        self.count
    }

    /// True when there are no blocks.
    #[must_use]
    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The blocks.
    #[must_use]
    #[inline(always)]
    pub fn as_slice(&self) -> &[SackBlock] {
        self.blocks.get(..self.count).unwrap_or(&[])
    }
}

/// The client's SACK blocks (client space) as the backend must see them:
/// each block clipped to the region's client range `[c0, c0 + len)`,
/// blocks entirely outside dropped (they are about C's own bytes), the
/// rest moved to backend space. Invalid blocks are dropped; at most the
/// first [`MAX_BLOCKS`] input blocks are looked at. Host order.
#[must_use]
#[inline(always)]
pub fn to_backend(region: Region, blocks: &[SackBlock]) -> SackBlocks {
    let mut out = SackBlocks::new();
    let c_end = region.c_end();
    for i in 0..MAX_BLOCKS {
        let Some(&b) = blocks.get(i) else { break };
        if !b.is_valid() {
            continue;
        }
        let left = seq_max(b.left, region.c0);
        let right = if seq_lt(c_end, b.right) {
            c_end
        } else {
            b.right
        };
        if seq_lt(left, right) {
            let s0 = region.s0;
            out.push(SackBlock {
                left: s0.wrapping_add(left.wrapping_sub(region.c0)),
                right: s0.wrapping_add(right.wrapping_sub(region.c0)),
            });
        }
    }
    out
}

/// The client's SACK blocks as socket C must see them: edges collapsed
/// out of the region in flight ([`Region::collapse_client`]) and shifted
/// by C's completed regions ([`Shift::c_ingress_ack`]); blocks left empty
/// (entirely inside the region) dropped, so C never sees a SACK of bytes
/// it did not send (the kernel would count `TCPSACKDiscard`). With no
/// region in flight pass an empty region (`len == 0`): collapsing is then
/// the identity. Host order.
#[must_use]
#[inline(always)]
pub fn to_socket_c(region: Region, shift: Shift, blocks: &[SackBlock]) -> SackBlocks {
    let mut out = SackBlocks::new();
    for i in 0..MAX_BLOCKS {
        let Some(&b) = blocks.get(i) else { break };
        if !b.is_valid() {
            continue;
        }
        let mapped = SackBlock {
            left: shift.c_ingress_ack(region.collapse_client(b.left)),
            right: shift.c_ingress_ack(region.collapse_client(b.right)),
        };
        if mapped.is_valid() {
            out.push(mapped);
        }
    }
    out
}

/// Socket S's own SACK blocks (S's receive space) as the backend must see
/// them: shifted by S's completed regions ([`Shift::s_egress_ack`]) and
/// expanded past the region in flight ([`Region::expand_backend_edge`]).
/// With no region in flight pass an empty region. Host order.
#[must_use]
#[inline(always)]
pub fn from_socket_s(region: Region, shift: Shift, blocks: &[SackBlock]) -> SackBlocks {
    let mut out = SackBlocks::new();
    for i in 0..MAX_BLOCKS {
        let Some(&b) = blocks.get(i) else { break };
        let mapped = SackBlock {
            left: region.expand_backend_edge(shift.s_egress_ack(b.left)),
            right: region.expand_backend_edge(shift.s_egress_ack(b.right)),
        };
        if mapped.is_valid() {
            out.push(mapped);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, input blocks, expected blocks)
    type Case<'a> = (&'a str, &'a [(u32, u32)], &'a [(u32, u32)]);

    fn blocks(v: &[(u32, u32)]) -> Vec<SackBlock> {
        v.iter().map(|&(l, r)| SackBlock::new(l, r)).collect()
    }

    fn pairs(b: &SackBlocks) -> Vec<(u32, u32)> {
        b.as_slice().iter().map(|b| (b.left, b.right)).collect()
    }

    /// Client space `[0xFFFF_FF00, 0x200)` (wraps), backend space from
    /// `0x5000_0000`.
    const R: Region = Region {
        s0: 0x5000_0000,
        c0: 0xFFFF_FF00,
        len: 0x300,
    };

    #[test]
    fn to_backend_table() {
        let c0 = R.c0;
        let s0 = R.s0;
        let cases: &[Case] = &[
            ("none", &[], &[]),
            (
                "inside",
                &[(c0 + 0x10, c0 + 0x20)],
                &[(s0 + 0x10, s0 + 0x20)],
            ),
            (
                "across the wrap",
                &[(0xFFFF_FFF0, 0x10)],
                &[(s0 + 0xF0, s0 + 0x110)],
            ),
            ("whole region", &[(c0, 0x200)], &[(s0, s0 + 0x300)]),
            ("before: dropped", &[(c0 - 0x100, c0)], &[]),
            ("after: dropped", &[(0x200, 0x300)], &[]),
            (
                "straddles start: clipped",
                &[(c0 - 8, c0 + 8)],
                &[(s0, s0 + 8)],
            ),
            (
                "straddles end: clipped",
                &[(0x1F8, 0x208)],
                &[(s0 + 0x2F8, s0 + 0x300)],
            ),
            (
                "covers all: clipped",
                &[(c0 - 1, 0x201)],
                &[(s0, s0 + 0x300)],
            ),
            ("empty: dropped", &[(0x10, 0x10)], &[]),
            ("reversed: dropped", &[(0x20, 0x10)], &[]),
            (
                "order kept, outside ones dropped",
                &[
                    (0x100, 0x110),
                    (c0 - 0x50, c0 - 0x40),
                    (0x10, 0x20),
                    (0x1000, 0x1100),
                ],
                &[(s0 + 0x200, s0 + 0x210), (s0 + 0x110, s0 + 0x120)],
            ),
            (
                "a fifth block is ignored",
                &[(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)],
                &[
                    (s0 + 0x100, s0 + 0x101),
                    (s0 + 0x102, s0 + 0x103),
                    (s0 + 0x104, s0 + 0x105),
                    (s0 + 0x106, s0 + 0x107),
                ],
            ),
        ];
        for &(name, input, want) in cases {
            assert_eq!(pairs(&to_backend(R, &blocks(input))), want, "{name}");
        }
    }

    #[test]
    fn to_socket_c_table() {
        let c0 = R.c0;
        let shift = Shift { spliced: 0x1000 };
        let sh = |x: u32| x.wrapping_sub(0x1000);
        let cases: &[Case] = &[
            (
                "C's own bytes",
                &[(c0 - 0x40, c0 - 0x20)],
                &[(sh(c0 - 0x40), sh(c0 - 0x20))],
            ),
            ("inside the region: dropped", &[(c0 + 1, c0 + 9)], &[]),
            (
                "up to the region start",
                &[(c0 - 0x40, c0 + 0x10)],
                &[(sh(c0 - 0x40), sh(c0))],
            ),
            (
                "after the region",
                &[(0x210, 0x220)],
                &[(sh(c0 + 0x10), sh(c0 + 0x20))],
            ),
            (
                "spanning it",
                &[(c0 - 4, 0x204)],
                &[(sh(c0 - 4), sh(c0 + 4))],
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(
                &pairs(&to_socket_c(R, shift, &blocks(input))),
                want,
                "{name}"
            );
        }
        // No region in flight: only the shift.
        let none = Region {
            s0: 0,
            c0: 0,
            len: 0,
        };
        assert_eq!(
            pairs(&to_socket_c(none, shift, &blocks(&[(0x10, 0x20)]))),
            [(sh(0x10), sh(0x20))]
        );
    }

    #[test]
    fn from_socket_s_table() {
        let shift = Shift { spliced: 0x20 };
        let s0 = R.s0;
        // S's socket values; S's rcv_nxt is s0 - 0x20 as a socket value.
        let cases: &[Case] = &[
            // Bytes after the region, received out of order.
            ("after", &[(s0 - 0x10, s0)], &[(s0 + 0x310, s0 + 0x320)]),
            // A D-SACK of bytes before the region.
            (
                "d-sack before",
                &[(s0 - 0x40, s0 - 0x20)],
                &[(s0 - 0x20, s0)],
            ),
        ];
        for &(name, input, want) in cases {
            assert_eq!(
                pairs(&from_socket_s(R, shift, &blocks(input))),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn push_stops_at_four() {
        let mut b = SackBlocks::new();
        for i in 0..4 {
            assert!(b.push(SackBlock::new(i, i + 1)));
        }
        assert!(!b.push(SackBlock::new(9, 10)));
        assert_eq!(b.len(), 4);
        assert!(!b.is_empty());
        assert!(SackBlocks::new().is_empty());
    }
}
