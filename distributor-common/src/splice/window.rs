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
//! All values host order (the caller converts the 16-bit window field with
//! `u16::from_be`).

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
}
