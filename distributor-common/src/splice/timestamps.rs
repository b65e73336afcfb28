//! PAWS-safe mapping of TCP timestamps (RFC 7323) between unrelated
//! clocks. All values host order (the caller converts the option's
//! network-order words).
//!
//! The problem: a receiver drops any segment whose `TSval` is older than the
//! last one it accepted (PAWS, RFC 7323 §5), and the echo (`TSecr`) is the
//! sender's own clock value. Backends on different hosts, and the
//! gateway's own sockets, have clocks that differ by ~10^9 and may tick at
//! different rates (RFC 7323 allows 1 ms to 1 s per tick).
//!
//! The rule: each receiver (the client, and also the backend: see below)
//! sees one `TSval` stream that never goes backwards. For every *source*
//! clock feeding a receiver the datapath keeps a [`TsMap`], an offset
//! chosen when that source starts (or resumes) sending so that its first
//! mapped value is one above the highest `TSval` the receiver has been sent
//! so far (`last_sent`). Within one source, its own clock is monotonic, so
//! the mapped stream is. The datapath keeps `last_sent` per receiver as
//! [`ts_max`] of everything it sends.
//!
//! - Toward the client: a region's map is created from the backend's `TSval`
//!   on the first response segment ([`TsMap::continuing`]). Socket C's own
//!   segments while the region is in flight carry
//!   [`own_tsval_in_flight`] (never below `last_sent`); after the region,
//!   C's own map is re-based the same way the first time it would fall
//!   behind ([`TsMap::is_behind`]).
//! - Toward the backend, the same holds in the other direction: the
//!   backend's PAWS state was set by socket S's `TSvals`, and the forwarded
//!   client ACKs carry the client's clock, so a second map per region
//!   carries the client's `TSvals` into S's stream, and S's own segments
//!   follow the same clamp and re-base.
//!
//! Echoes: a `TSecr` is translated back through the map of the source whose
//! `TSval` it echoes. Because every map starts strictly above everything the
//! receiver saw before, the echoes of a map's values are exactly the
//! `TSecr` values `>= first` (sequence-space comparison, so the 32-bit clock
//! may wrap), as long as that map is the newest for its receiver. Older
//! echoes (the receiver has not yet accepted an in-order segment of this
//! source, e.g. duplicate ACKs after the first region segment was lost,
//! which echo C's `TSval`) cannot be translated; [`TsMap::to_source`] then
//! gives the source's first mapped value, an older value of the source's
//! own clock: RTT samples from it err long, never short.

use super::seq::{seq_ge, seq_lt, seq_max};

/// `a` older than `b` in the timestamp clock (RFC 7323 §5.2: compared as
/// 32-bit signed differences, so the clock may wrap). Host order.
#[must_use]
#[inline(always)]
pub const fn ts_lt(a: u32, b: u32) -> bool {
    seq_lt(a, b)
}

/// The newer of two timestamps (wrap-aware). Host order.
#[must_use]
#[inline(always)]
pub const fn ts_max(a: u32, b: u32) -> u32 {
    seq_max(a, b)
}

/// The `TSval` for a segment a gateway socket sends to its peer while a
/// region is in flight: its own mapped value `own`, but never below
/// `last_sent`, the highest `TSval` the peer has been sent (equal is
/// accepted by PAWS, which only drops strictly older values). Host order.
#[must_use]
#[inline(always)]
pub const fn own_tsval_in_flight(own: u32, last_sent: u32) -> u32 {
    ts_max(own, last_sent)
}

/// One source clock's mapping into a receiver's `TSval` stream:
/// `mapped = tsval + offset`. Host order, arithmetic modulo 2^32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsMap {
    /// Added to the source's `TSval` toward the receiver; subtracted from the
    /// receiver's `TSecr` toward the source.
    pub offset: u32,
    /// The first mapped value this map produced (`last_sent + 1` when it
    /// was created): `TSecr` values from here on echo this source.
    pub first: u32,
}
const _: () = assert!(size_of::<TsMap>() == 8);

impl TsMap {
    /// The map that leaves a clock unchanged (a socket's own clock before
    /// any region): offset zero, and every `TSecr` counts as its echo.
    #[must_use]
    #[inline(always)]
    pub const fn identity() -> Self {
        // `first` is irrelevant when the offset is zero (see `to_source`);
        // zero keeps the value defined.
        Self {
            offset: 0,
            first: 0,
        }
    }

    /// The map for a source starting (or resuming) now with `TSval` `tsval`,
    /// for a receiver that has been sent up to `last_sent`: the source's
    /// `tsval` maps to `last_sent + 1`, strictly newer than anything the
    /// receiver saw (so its echoes are recognizable). Host order.
    ///
    /// An offset of zero is reserved for [`TsMap::identity`]: when it would
    /// come out zero, the source starts at `last_sent + 2` instead (still
    /// strictly newer, one tick later).
    #[must_use]
    #[inline(always)]
    pub const fn continuing(last_sent: u32, tsval: u32) -> Self {
        let first = last_sent.wrapping_add(1);
        let offset = first.wrapping_sub(tsval);
        if offset == 0 {
            Self {
                offset: 1,
                first: first.wrapping_add(1),
            }
        } else {
            Self { offset, first }
        }
    }

    /// The `TSval` toward the receiver for the source's `tsval`. Host order.
    #[must_use]
    #[inline(always)]
    pub const fn to_receiver(self, tsval: u32) -> u32 {
        tsval.wrapping_add(self.offset)
    }

    /// True when the receiver's `tsecr` echoes a value this map produced
    /// (`tsecr >= first`, wrap-aware), or the map is the identity. Host
    /// order.
    #[must_use]
    #[inline(always)]
    pub const fn is_echo(self, tsecr: u32) -> bool {
        self.offset == 0 || seq_ge(tsecr, self.first)
    }

    /// The `TSecr` toward the source for the receiver's `tsecr`: the
    /// source's own clock value `tsecr - offset` for an echo of this map,
    /// else the source's clock value of the map's first `TSval` (older than
    /// anything the receiver can echo later; see the module docs). Host
    /// order.
    #[must_use]
    #[inline(always)]
    pub const fn to_source(self, tsecr: u32) -> u32 {
        if self.is_echo(tsecr) {
            tsecr.wrapping_sub(self.offset)
        } else {
            self.first.wrapping_sub(self.offset)
        }
    }

    /// True when the source's `tsval`, mapped, would be older than
    /// `last_sent`: the caller then re-bases with [`TsMap::continuing`]
    /// (a socket's own clock after a region whose source ran faster).
    /// Host order.
    #[must_use]
    #[inline(always)]
    pub const fn is_behind(self, tsval: u32, last_sent: u32) -> bool {
        ts_lt(self.to_receiver(tsval), last_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuing_table() {
        // (last_sent, source tsval, expected offset)
        let cases: &[(u32, u32, u32)] = &[
            (1000, 1000, 1),
            (1000, 1001, 1), // offset 0 is the identity's: one tick later
            (1000, 5, 996),
            (5, 1000, 5u32.wrapping_sub(999)),
            (0xFFFF_FFFF, 7, 0xFFFF_FFF9),
            (0xFFFF_FFF0, 0xFFFF_FFF0, 1),
        ];
        for &(last, ts, off) in cases {
            let m = TsMap::continuing(last, ts);
            assert_eq!(m.offset, off, "last {last:#x} ts {ts:#x}");
            assert_eq!(m.to_receiver(ts), m.first);
            assert_ne!(m.offset, 0);
            assert!(ts_lt(last, m.to_receiver(ts)));
            assert_eq!(m.to_source(m.to_receiver(ts)), ts);
        }
    }

    #[test]
    fn echoes_and_fallback() {
        let m = TsMap::continuing(0xFFFF_FFF0, 100);
        assert_eq!(m.first, 0xFFFF_FFF1);
        // Echoes of mapped values, across the wrap of the receiver's clock.
        for ts in [100_u32, 101, 200, 100 + 0x40] {
            let mapped = m.to_receiver(ts);
            assert!(m.is_echo(mapped));
            assert_eq!(m.to_source(mapped), ts);
        }
        // An echo of something sent before the map: the source's first.
        assert!(!m.is_echo(0xFFFF_FFF0));
        assert!(!m.is_echo(0x8000_0000));
        assert_eq!(m.to_source(0xFFFF_FFF0), 100);
        // The identity map translates everything unchanged.
        let id = TsMap::identity();
        for x in [0, 1, 0x8000_0000, 0xFFFF_FFFF] {
            assert!(id.is_echo(x));
            assert_eq!(id.to_source(x), x);
            assert_eq!(id.to_receiver(x), x);
        }
    }

    #[test]
    fn own_segments_never_go_back() {
        assert_eq!(own_tsval_in_flight(10, 20), 20);
        assert_eq!(own_tsval_in_flight(30, 20), 30);
        assert_eq!(
            own_tsval_in_flight(5, 0xFFFF_FFF0),
            5,
            "5 is after the wrap"
        );
        assert_eq!(own_tsval_in_flight(0xFFFF_FFF0, 5), 5);
    }

    /// One receiver (the client), fed by the gateway's socket C and by
    /// regions from three backends whose clocks are ~10^9 apart (the last
    /// one wraps), ticking at different rates. The client's PAWS check (no
    /// `TSval` older than the last accepted) never fires, every echo of a
    /// region segment reaches its backend as that backend's own clock
    /// value, and C gets its own values back.
    #[test]
    fn three_backends_stay_monotonic() {
        struct Clock {
            now: u32,
            rate: u32,
        }
        impl Clock {
            fn tick(&mut self) -> u32 {
                self.now = self.now.wrapping_add(self.rate);
                self.now
            }
        }
        for (c_start, starts) in [
            (5_000_u32, [1_000_000_000_u32, 2_000_000_000, 3_000_000_000]),
            (3_000_000_000, [4_000_000_000, 1_000, 2_000_000_000]),
            (0xFFFF_FF00, [0xFFFF_FFF0, 0x7FFF_FFF0, 0]),
        ] {
            let mut c_clock = Clock {
                now: c_start,
                rate: 1,
            };
            let mut backends = [
                Clock {
                    now: starts[0],
                    rate: 1,
                },
                Clock {
                    now: starts[1],
                    rate: 10,
                },
                Clock {
                    now: starts[2],
                    rate: 1000,
                },
            ];
            let mut c_map = TsMap::identity();
            let mut last_sent = c_clock.now;
            let mut client_seen: Vec<u32> = vec![last_sent];
            // What the client would echo: the last TSval it accepted.
            let send = |ts: u32, last_sent: &mut u32, seen: &mut Vec<u32>| {
                let prev = *seen.last().unwrap();
                assert!(!ts_lt(ts, prev), "PAWS: {ts:#x} after {prev:#x}");
                seen.push(ts);
                *last_sent = ts_max(*last_sent, ts);
            };
            for round in 0..3 {
                for (b, backend) in backends.iter_mut().enumerate() {
                    // C's own segments (relayed bytes, ACKs) first.
                    for _ in 0..3 {
                        let own = c_clock.tick();
                        if c_map.is_behind(own, last_sent) {
                            c_map = TsMap::continuing(last_sent, own);
                        }
                        let ts = c_map.to_receiver(own);
                        send(ts, &mut last_sent, &mut client_seen);
                        // The client echoes it; C must get its own value.
                        assert_eq!(c_map.to_source(ts), own, "round {round}");
                    }
                    // A region from backend b.
                    let first_ts = backend.tick();
                    let map = TsMap::continuing(last_sent, first_ts);
                    // Before the client accepted anything of the region it
                    // echoes C's value: the backend gets its first TSval.
                    assert_eq!(map.to_source(last_sent), first_ts);
                    let mut ts_b = first_ts;
                    for seg in 0..50 {
                        if seg > 0 {
                            ts_b = backend.tick();
                        }
                        let ts = map.to_receiver(ts_b);
                        send(ts, &mut last_sent, &mut client_seen);
                        assert_eq!(map.to_source(ts), ts_b, "backend {b} seg {seg}");
                        if seg % 10 == 0 {
                            // C's pure ACK while the region is in flight.
                            let own = c_map.to_receiver(c_clock.tick());
                            let ts = own_tsval_in_flight(own, last_sent);
                            send(ts, &mut last_sent, &mut client_seen);
                        }
                    }
                }
            }
            assert!(client_seen.len() > 400);
        }
    }
}
