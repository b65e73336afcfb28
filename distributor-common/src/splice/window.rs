//! Rescaling the TCP window field between two connections' window-scale
//! factors (RFC 7323 §2).
//!
//! The client and the backend each negotiated a window scale with the
//! gateway's sockets (C and S), independently. A window field forwarded
//! from one connection to the other must be re-encoded in the receiving
//! peer's scale: the true window is `raw << wscale_from` bytes, and the
//! field sent is `true >> wscale_to`.
//!
//! Rounding: always down, saturating at `0xFFFF`: the forwarded window
//! never offers more than the receiver really offered. A nonzero true
//! window smaller than `1 << wscale_to` therefore becomes `0`. That is the
//! deliberate choice: it is what the receiver's own TCP would advertise if
//! it used `wscale_to` (Linux's `tcp_select_window` rounds down the same
//! way), and the cost is bounded (the sender enters persist mode and
//! probes; the receiver's next window update, once it has at least one
//! scale unit free, reopens it). Rounding up to `1` would invite the
//! sender to send up to `(1 << wscale_to) - 1` bytes more than the
//! receiver can take; the receiver drops them, which costs a
//! retransmission timeout and looks like loss to congestion control.
//!
//! A window forwarded to the backend is also capped ([`capped`]): at most
//! what the client offered, and at most a slow start of the client's
//! connection ([`slow_start_cap`]). The backend's connection is warm (its
//! congestion window grew on earlier responses); without the cap, the
//! first response on a new client connection arrives at the backend's full
//! rate, in one burst per window. The client's receive-buffer autotuning
//! (Linux `tcp_rcv_space_adjust`) times a window's worth of data against
//! its round trip; a window that fills at once measures a round trip of
//! microseconds, and the buffer stays small for the rest of the connection
//! (measured: 0.26-1.4 MB against 24-33 MB when the same client is routed
//! to one backend). With the cap, the client sees the ramp a new connection
//! would give it.
//!
//! All values host order (the caller converts the 16-bit window field with
//! `u16::from_be`).

use super::seq::seq_gt;

/// The largest window shift RFC 7323 §2.3 allows; larger received values
/// are treated as 14.
pub const MAX_WSCALE: u8 = 14;

/// A received window-scale option value, clamped to [`MAX_WSCALE`] as RFC
/// 7323 §2.3 requires of the receiver.
#[must_use]
#[inline(always)]
pub const fn clamp_wscale(wscale: u8) -> u8 {
    if wscale > MAX_WSCALE {
        MAX_WSCALE
    } else {
        wscale
    }
}

/// The true window in bytes of a window field `raw` sent with scale
/// `wscale` (clamped to 14, so the result is below 2^30). Host order.
#[must_use]
#[inline(always)]
pub const fn true_window(raw: u16, wscale: u8) -> u32 {
    (raw as u32) << clamp_wscale(wscale)
}

/// The window field that offers at most `bytes` under scale `wscale`:
/// `bytes >> wscale`, rounded down, saturated at `0xFFFF`. Host order.
#[must_use]
#[inline(always)]
pub const fn encode_window(bytes: u32, wscale: u8) -> u16 {
    let field = bytes >> clamp_wscale(wscale);
    if field > 0xFFFF {
        0xFFFF
    } else {
        #[expect(clippy::cast_possible_truncation, reason = "checked <= 0xFFFF above")]
        let f = field as u16;
        f
    }
}

/// Re-encodes a window field `raw` received on a connection with scale
/// `wscale_from` for a connection with scale `wscale_to` (rounding down,
/// saturating; see the module docs for the zero-window edge). Host order.
#[must_use]
#[inline(always)]
pub const fn rescale(raw: u16, wscale_from: u8, wscale_to: u8) -> u16 {
    encode_window(true_window(raw, wscale_from), wscale_to)
}

/// The initial window of a new connection in bytes: RFC 6928's ten
/// segments of 1460 bytes, as Linux starts (`TCP_INIT_CWND`).
pub const INITIAL_WINDOW: u32 = 14_600;

/// The most a backend may have in flight toward a client connection that
/// has acknowledged `acked` bytes of spliced data so far: [`INITIAL_WINDOW`]
/// plus every byte acknowledged, saturating. This is slow start's growth
/// (RFC 5681 §3.1: each acknowledged byte lets two more go out, the window
/// doubles every round trip) for the client's path; the backend's own
/// congestion control still runs under it. Counting bytes sent instead
/// would double the window on every ACK, not every round trip.
#[must_use]
#[inline(always)]
pub fn slow_start_cap(acked: u64) -> u32 {
    u32::try_from(acked.saturating_add(u64::from(INITIAL_WINDOW))).unwrap_or(u32::MAX)
}

/// The bytes of spliced data a client connection has acknowledged: all
/// `spliced` into it less what is still in flight in the region (from its
/// acknowledgement `ack` to `sent_end`, client sequence space, wrapping).
/// Retransmitted bytes count twice in `spliced`, so this can run ahead by
/// what was retransmitted; the cap stays an upper bound.
#[must_use]
#[inline(always)]
pub const fn acked(spliced: u64, sent_end: u32, ack: u32) -> u64 {
    // An ACK beyond `sent_end` (not possible from a correct client) counts
    // nothing as in flight.
    if seq_gt(ack, sent_end) {
        spliced
    } else {
        spliced.saturating_sub(sent_end.wrapping_sub(ack) as u64)
    }
}

/// Re-encodes a window field `raw` received with scale `wscale_from` for a
/// connection with scale `wscale_to`, offering at most `limit` bytes but
/// never less than one unit of `wscale_to` for the limit's sake (rounding
/// down and saturating as [`rescale`]). The result is zero only when the
/// client's own window rounds to zero: a zero window reopens with the
/// client's next window update, a cap that rounded to zero would not
/// (`14_600 >> 14` is 0). Host order.
#[must_use]
#[inline(always)]
pub const fn capped(raw: u16, wscale_from: u8, limit: u32, wscale_to: u8) -> u16 {
    let window = rescale(raw, wscale_from, wscale_to);
    let cap = encode_open(limit, wscale_to);
    if window < cap { window } else { cap }
}

/// [`encode_window`], but at least one unit for a nonzero `bytes`. Host
/// order.
#[must_use]
#[inline(always)]
pub const fn encode_open(bytes: u32, wscale: u8) -> u16 {
    let field = encode_window(bytes, wscale);
    if field == 0 && bytes != 0 { 1 } else { field }
}

/// The bytes S's request offers the backend while its response is armed:
/// what the client's window left for it when the control plane armed it
/// (`client_window`), capped by the slow start of the client's path
/// (`acked` bytes so far), and never below [`INITIAL_WINDOW`]. The floor
/// matters: before the region starts no client ACK reaches the backend, so
/// a window closed here would stay closed (the backend's probes reach S,
/// whose answers carry this offer again). At worst the client drops what
/// its window cannot take and the backend sends it again, as without the
/// cap.
#[must_use]
#[inline(always)]
pub fn armed_offer(client_window: u32, acked: u64) -> u32 {
    client_window.min(slow_start_cap(acked)).max(INITIAL_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (raw, from, to, expected)
        let cases: &[(u16, u8, u8, u16)] = &[
            (0, 0, 0, 0),
            (0, 14, 0, 0),
            (0, 0, 14, 0),
            (1000, 7, 7, 1000),
            (1000, 7, 0, 0xFFFF),     // 128000 bytes: saturates
            (511, 7, 0, 65408),       // 65408 bytes still fit
            (0xFFFF, 0, 7, 511),      // 65535 >> 7, rounded down
            (128, 0, 7, 1),           // exactly one unit
            (127, 0, 7, 0),           // less than one unit: zero (see docs)
            (1, 14, 0, 16384),        // fits unscaled
            (4, 14, 0, 0xFFFF),       // 65536: saturates
            (0xFFFF, 14, 14, 0xFFFF), // the largest window
            (0xFFFF, 15, 14, 0xFFFF), // 15 is clamped to 14
            (3, 2, 1, 6),
            (3, 1, 2, 1), // 6 bytes -> one unit of 4, rounded down
        ];
        for &(raw, from, to, want) in cases {
            assert_eq!(rescale(raw, from, to), want, "{raw} <<{from} >>{to}");
        }
    }

    #[test]
    fn every_shift_pair_rounds_down_and_saturates() {
        let raws = [
            0_u16, 1, 2, 3, 127, 128, 255, 1000, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF,
        ];
        for from in 0..=MAX_WSCALE {
            for to in 0..=MAX_WSCALE {
                for raw in raws {
                    let truth = u64::from(raw) << from;
                    let out = rescale(raw, from, to);
                    let offered = u64::from(out) << to;
                    // Never more than the receiver offered.
                    assert!(
                        offered <= truth,
                        "{raw} <<{from} >>{to}: {offered} > {truth}"
                    );
                    if out < 0xFFFF {
                        // Rounded down by less than one unit.
                        assert!(truth - offered < 1 << to, "{raw} <<{from} >>{to}");
                    } else {
                        assert!(truth >= 0xFFFF << to, "saturated only when needed");
                    }
                    // Zero stays zero; nonzero becomes zero only below one
                    // unit of the receiving scale.
                    assert_eq!(out == 0, truth < 1 << to, "{raw} <<{from} >>{to}");
                }
            }
        }
    }

    #[test]
    fn same_scale_is_identity() {
        for ws in 0..=MAX_WSCALE {
            for raw in [0_u16, 1, 0x1234, 0xFFFF] {
                assert_eq!(rescale(raw, ws, ws), raw);
            }
        }
    }

    #[test]
    fn oversized_scales_are_clamped() {
        assert_eq!(clamp_wscale(200), 14);
        assert_eq!(true_window(0xFFFF, 255), 0xFFFF << 14);
        assert_eq!(encode_window(u32::MAX, 255), 0xFFFF);
        assert_eq!(encode_window(u32::MAX, 0), 0xFFFF);
    }

    #[test]
    fn slow_start_grows_by_what_was_acknowledged() {
        assert_eq!(slow_start_cap(0), 14_600);
        assert_eq!(slow_start_cap(2896), 17_496);
        // Saturates instead of wrapping.
        assert_eq!(slow_start_cap(u64::from(u32::MAX)), u32::MAX);
        assert_eq!(slow_start_cap(u64::MAX), u32::MAX);
        // Round trips of a full window each: 14600 in flight, all of it
        // acknowledged lets 29200 out, then 58400.
        let mut acked_so_far = 0_u64;
        let mut windows = [0_u32; 3];
        for w in &mut windows {
            *w = slow_start_cap(acked_so_far);
            acked_so_far += u64::from(*w);
        }
        assert_eq!(windows, [14_600, 29_200, 58_400]);
    }

    #[test]
    fn acked_is_spliced_less_in_flight() {
        // 2896 spliced, the client acknowledged 1448 of them.
        assert_eq!(acked(2896, 5_002_896, 5_001_448), 1448);
        // Everything acknowledged.
        assert_eq!(acked(2896, 5_002_896, 5_002_896), 2896);
        // Across the wrap of the sequence space.
        assert_eq!(acked(10_000, 0x0000_0100, 0xFFFF_FF00), 10_000 - 0x200);
        // An acknowledgement beyond what was sent counts nothing in flight.
        assert_eq!(acked(2896, 5_002_896, 5_003_000), 2896);
        // Never below zero.
        assert_eq!(acked(100, 5_002_896, 5_000_000), 0);
    }

    #[test]
    fn capped_offers_the_smaller_and_rounds_down() {
        // (raw, from, limit, to, expected)
        let cases: &[(u16, u8, u32, u8, u16)] = &[
            // 0x200 << 7 = 65536 bytes, under a cap of 17496: 17496 >> 9.
            (0x200, 7, 17_496, 9, 34),
            // Under the cap: the plain rescale.
            (0x1000, 2, 17_496, 0, 0x4000),
            (0x200, 7, u32::MAX, 9, 0x80),
            // A cap below one unit of the receiving scale: one unit, not a
            // window closed for good.
            (0x200, 7, 511, 9, 1),
            (0x200, 7, 14_600, 14, 1),
            // The client's own window below one unit: zero (it reopens).
            (1, 7, 14_600, 9, 0),
            // The client's zero window stays zero.
            (0, 7, 1 << 20, 9, 0),
            // Saturation still applies to the cap.
            (0xFFFF, 14, u32::MAX, 0, 0xFFFF),
        ];
        for &(raw, from, limit, to, want) in cases {
            assert_eq!(
                capped(raw, from, limit, to),
                want,
                "{raw} <<{from} min {limit} >>{to}"
            );
        }
        for from in 0..=MAX_WSCALE {
            for to in 0..=MAX_WSCALE {
                for raw in [0_u16, 1, 0x80, 0x1234, 0xFFFF] {
                    assert_eq!(capped(raw, from, u32::MAX, to), rescale(raw, from, to));
                    let limit = 40_000;
                    let out = capped(raw, from, limit, to);
                    let offered = u64::from(out) << to;
                    // No more than the limit, or one unit when the limit is
                    // below one unit.
                    assert!(
                        offered <= u64::from(limit).max(1 << to),
                        "{raw} <<{from} >>{to}"
                    );
                    // Never more than the client offered; zero only when it
                    // rounds to zero.
                    assert!(out <= rescale(raw, from, to));
                    assert_eq!(out == 0, rescale(raw, from, to) == 0);
                }
            }
        }
    }

    #[test]
    fn armed_offer_is_floored_at_the_initial_window() {
        // The client's window, under the slow start.
        assert_eq!(armed_offer(16_000, 2896), 16_000);
        // The slow start, under the client's window.
        assert_eq!(armed_offer(1 << 20, 2896), 17_496);
        // A closed or tiny client window: the initial window, not zero.
        assert_eq!(armed_offer(0, 0), INITIAL_WINDOW);
        assert_eq!(armed_offer(100, 1 << 30), INITIAL_WINDOW);
        // Far past the slow start: the client's window.
        assert_eq!(armed_offer(1 << 20, 1 << 40), 1 << 20);
        assert_eq!(encode_open(INITIAL_WINDOW, 14), 1);
        assert_eq!(encode_open(0, 14), 0);
        assert_eq!(encode_open(INITIAL_WINDOW, 9), 28);
    }
}
