//! Why the datapath let a packet go to the kernel stack untouched (Cilium's
//! `DROP_*` idea, for passes): every arriving packet the datapath declines
//! is counted in [`crate::maps::REASONS`] under exactly one of these, at TC
//! ingress (where every mode makes its last decision: XDP passes on what it
//! does not splice), and `distributor stats` prints them by name. Packets
//! the datapath splices or translates are not counted here.

/// Not IPv4 (ARP, IPv6, ...).
pub const PASS_NOT_IPV4: u32 = 0;
/// IPv4 but not TCP.
pub const PASS_NOT_TCP: u32 = 1;
/// TCP, but no flow of ours: routed traffic or a socket of the gateway.
pub const PASS_NO_FLOW: u32 = 2;
/// Headers shorter than they claim: left for the stack to reject.
pub const PASS_TRUNCATED: u32 = 3;
/// IPv4 with options or a fragment: never rewritten.
pub const PASS_IP_OPTIONS_OR_FRAGMENT: u32 = 4;
/// A packet on an interface with no counter slot (not one the loader
/// listed): counted here instead.
pub const ERR_UNCOUNTED_IFACE: u32 = 5;
/// A SYN: handshakes are never translated (flows are registered once
/// established, and a SYN on a known key opens a new connection).
pub const PASS_HANDSHAKE: u32 = 6;
/// Number of reasons (the length of the reasons array).
pub const COUNT: u32 = 7;

/// A short name for display, stable for scripts.
#[must_use]
pub const fn name(reason: u32) -> &'static str {
    match reason {
        PASS_NOT_IPV4 => "pass-not-ipv4",
        PASS_NOT_TCP => "pass-not-tcp",
        PASS_NO_FLOW => "pass-no-flow",
        PASS_TRUNCATED => "pass-truncated",
        PASS_IP_OPTIONS_OR_FRAGMENT => "pass-ip-options-or-fragment",
        ERR_UNCOUNTED_IFACE => "error-uncounted-interface",
        PASS_HANDSHAKE => "pass-handshake",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_unique_name() {
        let names: Vec<_> = (0..COUNT).map(name).collect();
        for (i, n) in names.iter().enumerate() {
            assert_ne!(*n, "unknown", "reason {i} has no name");
            assert_eq!(names.iter().filter(|m| *m == n).count(), 1, "{n} twice");
        }
        assert_eq!(name(COUNT), "unknown");
    }
}
