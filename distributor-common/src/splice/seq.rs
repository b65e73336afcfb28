//! TCP sequence-space arithmetic and the region/shift model of the splice
//! datapath. Every value here is a sequence or acknowledgement number in
//! **host byte order** (the caller converts with `u32::from_be`); all
//! arithmetic wraps modulo 2^32.
//!
//! Names: *backend space* is the sequence space of the bytes the backend
//! sends (socket S's receive space); *client space* is the space of the
//! bytes the client receives (socket C's send space). "Wire" values are the
//! numbers on the wire (what the backend and the client use); "socket"
//! values are what the gateway's own sockets C and S use, which never
//! count spliced bytes.
//!
//! Three layers, applied in this order:
//! 1. [`Region`] maps the bytes of the response in flight between the two
//!    wire spaces, and *collapses*/*expands* it out of the sockets' view
//!    while it is in flight.
//! 2. [`Shift`] removes the bytes of every *completed* region from a
//!    socket's view (one `Shift` per socket: S is pooled and serves many
//!    clients, C receives regions from many backend connections).
//! 3. The socket sees the result.

/// `a < b` in sequence space (RFC 9293 §3.4, RFC 7323): true when `b` is
/// less than 2^31 ahead of `a`. Host order.
#[must_use]
#[inline(always)]
pub const fn seq_lt(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() < 0
}

/// `a <= b` in sequence space. Host order.
#[must_use]
#[inline(always)]
pub const fn seq_le(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() <= 0
}

/// `a > b` in sequence space. Host order.
#[must_use]
#[inline(always)]
pub const fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

/// `a >= b` in sequence space. Host order.
#[must_use]
#[inline(always)]
pub const fn seq_ge(a: u32, b: u32) -> bool {
    seq_le(b, a)
}

/// The later of two sequence numbers. Host order.
#[must_use]
#[inline(always)]
pub const fn seq_max(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) { b } else { a }
}

/// Where a backend segment's payload lies relative to a [`Region`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clip {
    /// Nothing to splice: no payload (a control segment: pure ACK, window
    /// update, keepalive, FIN, RST), or every byte precedes the region (a
    /// retransmission of bytes S received before it). Goes to S, with its
    /// SEQ through [`Region::collapse_backend`].
    Before,
    /// Every byte is inside the region: the whole segment is spliced with
    /// sequence number `client_seq` (client space, host order).
    Inside {
        /// The segment's sequence number in client space.
        client_seq: u32,
    },
    /// Only payload bytes `[skip, skip + take)` are inside the region; they
    /// map to client space starting at `client_seq`. The `skip` bytes
    /// before precede the region (`skip > 0` only on a retransmission
    /// that merged old bytes with new ones); the bytes after `skip + take`
    /// follow its end (the backend sent more than the response it
    /// announced).
    ///
    /// The caller can trim the tail (shorten the packet), but cannot
    /// cheaply cut the head off in XDP/TC: sending the segment whole with
    /// sequence number `client_seq - skip` is acceptable to the client and
    /// its TCP discards the leading `skip` bytes as already received *only
    /// if the client has acknowledged `c0`*, otherwise drop it (the backend
    /// retransmits) or fall back.
    Straddles {
        /// Payload bytes before the region.
        skip: u32,
        /// Payload bytes inside the region.
        take: u32,
        /// Client-space sequence number of the first byte inside.
        client_seq: u32,
    },
    /// Every payload byte follows the region's end. Goes to S, with its SEQ
    /// through [`Region::collapse_backend`].
    After,
}

/// One response in flight: backend space `[s0, s0 + len)` maps onto client
/// space `[c0, c0 + len)`. Host byte order throughout.
///
/// The fields are public so the region can live in a map value; the
/// functions below never panic for any field values, but they are only
/// meaningful for `len <= MAX_LEN` (use [`Region::new`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First backend-space sequence number of the response (S's `rcv_nxt`
    /// when the region was armed). Host order.
    pub s0: u32,
    /// First client-space sequence number of the response (C's `snd_nxt`
    /// when the region was armed). Host order.
    pub c0: u32,
    /// Response length in bytes (head and body).
    pub len: u32,
}
const _: () = assert!(size_of::<Region>() == 12);

impl Region {
    /// The longest region: 2^30 bytes. TCP windows are at most 2^30 bytes
    /// (RFC 7323 §2.3), so every segment the backend can have in flight is
    /// within 2^30 of the region's edges; with `len <= 2^30` the region
    /// plus a window on either side fits in half the sequence space, and
    /// every "before/inside/after" decision is unambiguous. Longer
    /// responses are relayed.
    pub const MAX_LEN: u32 = 1 << 30;

    /// A region, or `None` when `len` exceeds [`Region::MAX_LEN`]. Host
    /// order.
    #[must_use]
    #[inline(always)]
    pub const fn new(s0: u32, c0: u32, len: u32) -> Option<Self> {
        if len > Self::MAX_LEN {
            None
        } else {
            Some(Self { s0, c0, len })
        }
    }

    /// One past the last backend-space byte of the region. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn s_end(self) -> u32 {
        self.s0.wrapping_add(self.len)
    }

    /// One past the last client-space byte of the region. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn c_end(self) -> u32 {
        self.c0.wrapping_add(self.len)
    }

    /// Which payload bytes of a backend segment (sequence number `seq`,
    /// `payload_len` bytes; host order) are inside the region. A FIN is not
    /// payload: the caller handles FIN separately (it belongs to S).
    #[must_use]
    #[inline(always)]
    pub const fn clip(self, seq: u32, payload_len: u32) -> Clip {
        if payload_len == 0 {
            return Clip::Before;
        }
        if self.len == 0 {
            return if seq_lt(seq, self.s0) {
                Clip::Before
            } else {
                Clip::After
            };
        }
        let end = seq.wrapping_add(payload_len);
        if seq_le(end, self.s0) {
            return Clip::Before;
        }
        if seq_ge(seq, self.s_end()) {
            return Clip::After;
        }
        // Overlaps: intersect [seq, end) with [s0, s_end).
        let first = seq_max(seq, self.s0);
        let last = if seq_lt(self.s_end(), end) {
            self.s_end()
        } else {
            end
        };
        let skip = first.wrapping_sub(seq);
        let take = last.wrapping_sub(first);
        let client_seq = self.c0.wrapping_add(first.wrapping_sub(self.s0));
        if skip == 0 && take == payload_len {
            Clip::Inside { client_seq }
        } else {
            Clip::Straddles {
                skip,
                take,
                client_seq,
            }
        }
    }

    /// The client-space position of backend-space position `seq`, for
    /// `seq` in `[s0, s0 + len]` (the end included: it is a position, such
    /// as the sequence number just after the last byte); `None` outside.
    /// Host order. For a segment's bytes use [`Region::clip`].
    #[must_use]
    #[inline(always)]
    pub const fn to_client_seq(self, seq: u32) -> Option<u32> {
        let off = seq.wrapping_sub(self.s0);
        if off <= self.len {
            Some(self.c0.wrapping_add(off))
        } else {
            None
        }
    }

    /// The backend-space acknowledgement for a client acknowledgement
    /// number `ack` in `[c0, c0 + len]`: `s0 + (ack - c0)`; `None`
    /// outside (an ACK of C's own bytes before the region, or of bytes
    /// after it). Host order. Applies to the ACK field of a client segment
    /// forwarded to the backend.
    #[must_use]
    #[inline(always)]
    pub const fn to_backend_ack(self, ack: u32) -> Option<u32> {
        let off = ack.wrapping_sub(self.c0);
        if off <= self.len {
            Some(self.s0.wrapping_add(off))
        } else {
            None
        }
    }

    /// True when client acknowledgement `ack` covers the whole region (the
    /// region is DONE). Host order.
    #[must_use]
    #[inline(always)]
    pub const fn is_acked(self, ack: u32) -> bool {
        seq_ge(ack, self.c_end())
    }

    /// S's view of a backend-space wire position while the region is in
    /// flight: positions before `s0` unchanged, positions in
    /// `[s0, s0 + len]` collapse to `s0`, positions after move back by
    /// `len`. Host order.
    ///
    /// Applies to: the SEQ field of every backend segment delivered to S
    /// (pure ACKs, window updates, keepalives, FIN, RST, bytes after the
    /// region), before [`Shift::s_ingress_seq`]. It is exactly what
    /// [`Shift::s_ingress_seq`] gives once the region is complete and its
    /// length added to the shift, so nothing jumps at DONE.
    #[must_use]
    #[inline(always)]
    pub const fn collapse_backend(self, seq: u32) -> u32 {
        collapse(seq, self.s0, self.len)
    }

    /// C's view of a client-space wire position while the region is in
    /// flight (as [`Region::collapse_backend`], for the client space).
    /// Host order.
    ///
    /// Applies to: the ACK field of every client segment delivered to C,
    /// and the edges of the client's SACK blocks delivered to C, before
    /// [`Shift::c_ingress_ack`].
    #[must_use]
    #[inline(always)]
    pub const fn collapse_client(self, ack: u32) -> u32 {
        collapse(ack, self.c0, self.len)
    }

    /// The wire SEQ field for a segment C sends while the region is in
    /// flight, from C's value after [`Shift::c_egress_seq`]: C's `snd_nxt`
    /// is still `c0`, but the client has been sent up to `sent_end` (the
    /// highest client-space end the datapath has spliced, in
    /// `[c0, c0 + len]`), and a segment with SEQ below the client's
    /// `rcv_nxt` window edge is answered with a duplicate ACK and its ACK
    /// information discarded. So `c0` becomes `sent_end`; values before
    /// `c0` (C retransmitting its own earlier bytes) stay; values after
    /// (C's own new bytes, which the control plane must not write while a
    /// region is in flight) move by `len`, as after DONE. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn expand_client(self, seq: u32, sent_end: u32) -> u32 {
        if seq == self.c0 {
            sent_end
        } else if seq_lt(seq, self.c0) {
            seq
        } else {
            seq.wrapping_add(self.len)
        }
    }

    /// The wire ACK field for a segment S sends while the region is in
    /// flight, from S's value after [`Shift::s_egress_ack`]: S's `rcv_nxt`
    /// is still `s0`, but the backend has been told (through translated
    /// client ACKs) up to `acked_end` (in `[s0, s0 + len]`). Sending `s0`
    /// would be an old or duplicate ACK to the backend (three of them
    /// trigger a spurious fast retransmit), so `s0` becomes `acked_end`;
    /// values after `s0` (bytes S received after the region) move by
    /// `len`. Host order. Also for the edges of S's own SACK blocks.
    #[must_use]
    #[inline(always)]
    pub const fn expand_backend(self, ack: u32, acked_end: u32) -> u32 {
        if ack == self.s0 {
            acked_end
        } else if seq_lt(ack, self.s0) {
            ack
        } else {
            ack.wrapping_add(self.len)
        }
    }

    /// The wire edge of a SACK block S sends while the region is in flight,
    /// from S's value after [`Shift::s_egress_ack`]: edges up to `s0` stay
    /// (a D-SACK of bytes before the region), edges after `s0` (bytes S
    /// received after the region) move by `len`. Unlike
    /// [`Region::expand_backend`], `s0` itself is not advanced: a block
    /// must never claim region bytes the client has not acknowledged.
    /// Host order.
    #[must_use]
    #[inline(always)]
    pub const fn expand_backend_edge(self, edge: u32) -> u32 {
        if seq_le(edge, self.s0) {
            edge
        } else {
            edge.wrapping_add(self.len)
        }
    }
}

/// `x` before `start` unchanged, in `[start, start + len]` -> `start`,
/// after -> `x - len`.
#[inline(always)]
const fn collapse(x: u32, start: u32, len: u32) -> u32 {
    if seq_le(x, start) {
        x
    } else if x.wrapping_sub(start) <= len {
        start
    } else {
        x.wrapping_sub(len)
    }
}

/// The bytes spliced past one socket in completed regions (mod 2^32).
///
/// The gateway's sockets never see spliced bytes, so the datapath adds the
/// count back on the socket's egress and subtracts it on its ingress. One
/// `Shift` per socket: S's counts every region spliced from its backend
/// connection (whichever clients they went to), C's every region spliced
/// into its client connection (whichever backends they came from). Which
/// fields, exactly:
///
/// | packet | field | socket | function |
/// |---|---|---|---|
/// | backend -> S | SEQ | S receive side | [`Shift::s_ingress_seq`]: `seq - spliced` |
/// | S -> backend | ACK, SACK block edges | S receive side | [`Shift::s_egress_ack`]: `ack + spliced` |
/// | C -> client | SEQ | C send side | [`Shift::c_egress_seq`]: `seq + spliced` |
/// | client -> C | ACK, SACK block edges | C send side | [`Shift::c_ingress_ack`]: `ack - spliced` |
///
/// The other fields are untouched by the shift: the ACK of backend -> S
/// and the SEQ of S -> backend (S's send space: requests the control plane
/// writes, never spliced), likewise the SEQ of client -> C and the ACK of
/// C -> client. While a region is in flight, apply the [`Region`]'s
/// collapse (ingress, before the shift) or expand (egress, after it) too.
/// Host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shift {
    /// Bytes spliced in completed regions, modulo 2^32.
    pub spliced: u32,
}
const _: () = assert!(size_of::<Shift>() == 4);

impl Shift {
    /// No bytes spliced yet.
    #[must_use]
    #[inline(always)]
    pub const fn new() -> Self {
        Self { spliced: 0 }
    }

    /// The shift after a region of `len` bytes completed (DONE).
    #[must_use]
    #[inline(always)]
    pub const fn add(self, len: u32) -> Self {
        Self {
            spliced: self.spliced.wrapping_add(len),
        }
    }

    /// Backend -> S, SEQ field: `seq - spliced`. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn s_ingress_seq(self, seq: u32) -> u32 {
        seq.wrapping_sub(self.spliced)
    }

    /// S -> backend, ACK field and S's SACK block edges: `ack + spliced`.
    /// Host order.
    #[must_use]
    #[inline(always)]
    pub const fn s_egress_ack(self, ack: u32) -> u32 {
        ack.wrapping_add(self.spliced)
    }

    /// C -> client, SEQ field: `seq + spliced`. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn c_egress_seq(self, seq: u32) -> u32 {
        seq.wrapping_add(self.spliced)
    }

    /// Client -> C, ACK field and the client's SACK block edges:
    /// `ack - spliced`. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn c_ingress_ack(self, ack: u32) -> u32 {
        ack.wrapping_sub(self.spliced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_wrap() {
        // (a, b, a < b)
        let cases = [
            (0_u32, 1_u32, true),
            (1, 0, false),
            (5, 5, false),
            (0xFFFF_FFFF, 0, true),
            (0xFFFF_FF00, 0x100, true),
            (0x100, 0xFFFF_FF00, false),
            (0, 0x7FFF_FFFF, true),
            (0, 0x8000_0001, false),
        ];
        for (a, b, lt) in cases {
            assert_eq!(seq_lt(a, b), lt, "{a:#x} < {b:#x}");
            assert_eq!(seq_gt(b, a), lt, "{b:#x} > {a:#x}");
            assert_eq!(seq_ge(a, b), !lt, "{a:#x} >= {b:#x}");
            assert_eq!(seq_le(b, a), !lt || a == b, "{b:#x} <= {a:#x}");
        }
        assert!(seq_le(7, 7) && seq_ge(7, 7));
        assert_eq!(seq_max(0xFFFF_FFF0, 0x10), 0x10);
        assert_eq!(seq_max(0x10, 0xFFFF_FFF0), 0x10);
    }

    #[test]
    fn new_caps_the_length() {
        assert!(Region::new(0, 0, Region::MAX_LEN).is_some());
        assert!(Region::new(0, 0, Region::MAX_LEN + 1).is_none());
    }

    /// The wrap-around region of the brief: backend space wraps inside it,
    /// client space does not.
    const R: Region = Region {
        s0: 0xFFFF_FF00,
        c0: 0x1000_0000,
        len: 0x300,
    };
    /// Client space wraps inside it.
    const RC: Region = Region {
        s0: 0x0000_1000,
        c0: 0xFFFF_FFF0,
        len: 0x100,
    };

    #[test]
    fn clip_table() {
        use Clip::{After, Before, Inside, Straddles};
        let s0 = R.s0;
        let cases: &[(&str, Region, u32, u32, Clip)] = &[
            ("first segment", R, s0, 100, Inside { client_seq: R.c0 }),
            (
                "across the wrap",
                R,
                0xFFFF_FFF0,
                0x20,
                Inside {
                    client_seq: 0x1000_00F0,
                },
            ),
            (
                "last byte",
                R,
                0x1FF,
                1,
                Inside {
                    client_seq: 0x1000_02FF,
                },
            ),
            (
                "exactly the region",
                R,
                s0,
                0x300,
                Inside { client_seq: R.c0 },
            ),
            ("ends at s0", R, s0.wrapping_sub(10), 10, Before),
            ("long before", R, 0x8000_0000, 1000, Before),
            ("starts at end", R, 0x200, 10, After),
            ("after", R, 0x5000, 10, After),
            (
                "straddles start",
                R,
                s0.wrapping_sub(4),
                10,
                Straddles {
                    skip: 4,
                    take: 6,
                    client_seq: R.c0,
                },
            ),
            (
                "straddles end",
                R,
                0x1F0,
                0x20,
                Straddles {
                    skip: 0,
                    take: 0x10,
                    client_seq: 0x1000_02F0,
                },
            ),
            (
                "covers all",
                R,
                s0.wrapping_sub(1),
                0x302,
                Straddles {
                    skip: 1,
                    take: 0x300,
                    client_seq: R.c0,
                },
            ),
            ("pure ack inside", R, 0x100, 0, Before),
            ("pure ack before", R, s0.wrapping_sub(1), 0, Before),
            ("pure ack at end", R, 0x200, 0, Before),
            (
                "client space wraps",
                RC,
                0x1010,
                0x20,
                Inside { client_seq: 0 },
            ),
            (
                "empty region",
                Region {
                    s0: 5,
                    c0: 9,
                    len: 0,
                },
                5,
                10,
                After,
            ),
        ];
        for &(name, region, seq, len, want) in cases {
            assert_eq!(region.clip(seq, len), want, "{name}");
        }
    }

    #[test]
    fn clip_agrees_with_byte_by_byte_mapping() {
        // Every byte of every segment near the edges either maps through
        // to_client_seq (and is counted in take) or does not.
        for start in 0..0x40_u32 {
            for len in 0..0x30_u32 {
                let seq = R.s0.wrapping_sub(0x20).wrapping_add(start);
                let inside: Vec<u32> = (0..len)
                    .filter(|i| {
                        let b = seq.wrapping_add(*i);
                        b.wrapping_sub(R.s0) < R.len
                    })
                    .collect();
                match R.clip(seq, len) {
                    Clip::Before | Clip::After => assert!(inside.is_empty()),
                    Clip::Inside { client_seq } => {
                        assert_eq!(inside.len(), len as usize);
                        assert_eq!(Some(client_seq), R.to_client_seq(seq));
                    }
                    Clip::Straddles {
                        skip,
                        take,
                        client_seq,
                    } => {
                        assert_eq!(inside.first().copied(), Some(skip));
                        assert_eq!(inside.len(), take as usize);
                        assert_eq!(Some(client_seq), R.to_client_seq(seq.wrapping_add(skip)));
                    }
                }
            }
        }
    }

    #[test]
    fn seq_and_ack_translation_table() {
        // (region, backend seq, client seq or None)
        let seqs: &[(Region, u32, Option<u32>)] = &[
            (R, R.s0, Some(R.c0)),
            (R, 0, Some(0x1000_0100)),
            (R, 0x200, Some(0x1000_0300)),
            (R, 0x201, None),
            (R, R.s0.wrapping_sub(1), None),
            (RC, 0x1010, Some(0)),
            (RC, 0x1100, Some(0xF0)),
        ];
        for &(r, s, c) in seqs {
            assert_eq!(r.to_client_seq(s), c, "seq {s:#x}");
            if let Some(c) = c {
                // Round trip through the ACK direction.
                assert_eq!(r.to_backend_ack(c), Some(s), "ack {c:#x}");
            }
        }
        // ACKs outside [c0, c0 + len].
        assert_eq!(R.to_backend_ack(R.c0.wrapping_sub(1)), None);
        assert_eq!(R.to_backend_ack(R.c_end().wrapping_add(1)), None);
        assert_eq!(RC.to_backend_ack(0xFFFF_FFEF), None);
        assert!(!R.is_acked(R.c_end().wrapping_sub(1)));
        assert!(R.is_acked(R.c_end()));
        assert!(RC.is_acked(0xF0) && RC.is_acked(0x1000));
        assert!(!RC.is_acked(0xFFFF_FFF0));
    }

    #[test]
    fn collapse_and_expand_table() {
        let (s0, c0) = (R.s0, R.c0);
        // (input, collapse_backend)
        for (x, want) in [
            (s0.wrapping_sub(5), s0.wrapping_sub(5)),
            (s0, s0),
            (0x10, s0),
            (0x200, s0),
            (0x201, s0.wrapping_add(1)),
            (0x300, s0.wrapping_add(0x100)),
        ] {
            assert_eq!(R.collapse_backend(x), want, "backend {x:#x}");
        }
        for (x, want) in [
            (c0 - 1, c0 - 1),
            (c0, c0),
            (c0 + 0x300, c0),
            (c0 + 0x301, c0 + 1),
        ] {
            assert_eq!(R.collapse_client(x), want, "client {x:#x}");
        }
        // C's own segment during the region: snd_nxt (c0) becomes the
        // highest sequence the client has been sent.
        assert_eq!(R.expand_client(c0, c0 + 0x120), c0 + 0x120);
        assert_eq!(R.expand_client(c0 - 3, c0 + 0x120), c0 - 3);
        assert_eq!(R.expand_client(c0 + 2, c0 + 0x120), c0 + 0x302);
        // S's own ACK during the region: rcv_nxt (s0) becomes the highest
        // ACK forwarded to the backend.
        assert_eq!(R.expand_backend(s0, 0x80), 0x80);
        assert_eq!(
            R.expand_backend(s0.wrapping_sub(9), 0x80),
            s0.wrapping_sub(9)
        );
        assert_eq!(R.expand_backend(s0.wrapping_add(4), 0x80), 0x204);
        // expand after collapse is the identity outside the region.
        for x in [s0.wrapping_sub(100), 0x201, 0x5000] {
            assert_eq!(R.expand_backend(R.collapse_backend(x), 0), x);
        }
    }

    /// The brief's consistency claim, simulated: a backend connection (S)
    /// serves a relayed response, a spliced region, then another relayed
    /// response and a FIN; a client connection (C) gets the region between
    /// its own bytes. The sockets' sequence spaces stay contiguous, with
    /// the region in flight, at DONE and after, including across 2^32.
    #[test]
    fn sockets_stay_consistent_across_a_region() {
        for (s_isn, c_isn, prior) in [
            (0xFFFF_FE00_u32, 0x1000_u32, 0x100_u32),
            (0x10, 0xFFFF_FF80, 0x40),
            (0x7FFF_FFF0, 0x8000_0000, 0),
        ] {
            // Earlier regions already went past both sockets.
            let s_shift = Shift { spliced: prior };
            let c_shift = Shift {
                spliced: prior.wrapping_mul(3),
            };
            // Wire positions of the region start: S's rcv_nxt and C's
            // snd_nxt as sockets, shifted onto the wire.
            let s_rcv_nxt = s_isn.wrapping_add(0x80); // socket value
            let c_snd_nxt = c_isn.wrapping_add(0x200); // socket value
            let s0 = s_shift.s_egress_ack(s_rcv_nxt);
            let c0 = c_shift.c_egress_seq(c_snd_nxt);
            let r = Region::new(s0, c0, 0x300).unwrap();

            // In flight: a backend pure ACK at the backend's snd_nxt (mid
            // region) reaches S at S's rcv_nxt.
            let mid = s0.wrapping_add(0x180);
            assert_eq!(s_shift.s_ingress_seq(r.collapse_backend(mid)), s_rcv_nxt);
            // S's own ACK (rcv_nxt) leaves as the last forwarded ACK.
            assert_eq!(r.expand_backend(s_shift.s_egress_ack(s_rcv_nxt), mid), mid);
            // A client ACK mid region reaches C as C's snd_nxt (all of C's
            // own bytes acknowledged, nothing more).
            assert_eq!(
                c_shift.c_ingress_ack(r.collapse_client(c0.wrapping_add(0x100))),
                c_snd_nxt
            );
            // C's own pure ACK leaves with the highest sequence sent.
            let sent_end = c0.wrapping_add(0x180);
            assert_eq!(
                r.expand_client(c_shift.c_egress_seq(c_snd_nxt), sent_end),
                sent_end
            );
            // The backend's FIN right after the response, before DONE.
            let fin = r.s_end();
            let fin_at_s = s_shift.s_ingress_seq(r.collapse_backend(fin));
            assert_eq!(fin_at_s, s_rcv_nxt);

            // DONE: the region's length joins both shifts.
            let s_after = s_shift.add(r.len);
            let c_after = c_shift.add(r.len);
            assert_eq!(s_after.s_ingress_seq(fin), fin_at_s, "no jump at DONE");
            // Next relayed response from the backend, 0x50 bytes.
            assert_eq!(s_after.s_ingress_seq(r.s_end()), s_rcv_nxt);
            assert_eq!(
                s_after.s_ingress_seq(r.s_end().wrapping_add(0x50)),
                s_rcv_nxt.wrapping_add(0x50)
            );
            // S acknowledges it: the backend sees its own numbering.
            assert_eq!(
                s_after.s_egress_ack(s_rcv_nxt.wrapping_add(0x50)),
                r.s_end().wrapping_add(0x50)
            );
            // C writes its own bytes next: they follow the region on the
            // wire, and the client's ACK of them maps back.
            assert_eq!(c_after.c_egress_seq(c_snd_nxt), r.c_end());
            assert_eq!(
                c_after.c_ingress_ack(r.c_end().wrapping_add(7)),
                c_snd_nxt.wrapping_add(7)
            );
        }
    }

    #[test]
    fn shift_wraps() {
        let s = Shift::new().add(0xFFFF_FFF0).add(0x20);
        assert_eq!(s.spliced, 0x10);
        assert_eq!(s.s_ingress_seq(5), 0xFFFF_FFF5);
        assert_eq!(s.s_egress_ack(0xFFFF_FFF5), 5);
        assert_eq!(s.c_egress_seq(0xFFFF_FFF8), 8);
        assert_eq!(s.c_ingress_ack(8), 0xFFFF_FFF8);
    }
}
