//! Map names and the key/value types stored in them.
//!
//! The names are the `static` names in `distributor-ebpf` and the file names
//! under the pin directory (`/sys/fs/bpf/distributor/<NAME>`). The kernel
//! keeps at most 15 characters of a map name.

/// Per-CPU hash: [`IfaceKey`] -> [`Counters`]. Packets and bytes each hook
/// saw, per interface.
pub const IFACE_STATS: &str = "IFACE_STATS";
/// Per-CPU array indexed by [`crate::reason`]: why the datapath passed a
/// packet to the stack untouched.
pub const REASONS: &str = "REASONS";

/// Capacity of [`IFACE_STATS`]: interfaces times hooks on one gateway.
pub const IFACE_STATS_MAX: u32 = 1024;

/// Where in the datapath a packet was counted.
pub mod hook {
    /// XDP on the receiving interface.
    pub const XDP_INGRESS: u32 = 0;
    /// TC (clsact/TCX) ingress.
    pub const TC_INGRESS: u32 = 1;
    /// TC (clsact/TCX) egress.
    pub const TC_EGRESS: u32 = 2;
    /// Number of hooks.
    pub const COUNT: u32 = 3;

    /// A short name for display.
    #[must_use]
    pub const fn name(hook: u32) -> &'static str {
        match hook {
            XDP_INGRESS => "xdp-ingress",
            TC_INGRESS => "tc-ingress",
            TC_EGRESS => "tc-egress",
            _ => "unknown",
        }
    }
}

/// Key of [`IFACE_STATS`]. Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceKey {
    /// Interface index in the gateway's network namespace.
    pub ifindex: u32,
    /// One of [`hook`].
    pub hook: u32,
}
const _: () = assert!(size_of::<IfaceKey>() == 8);

/// Value of [`IFACE_STATS`] (one per CPU). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames (XDP) or socket buffers (TC; a GRO/GSO super-packet counts once).
    pub packets: u64,
    /// Bytes from the Ethernet header on.
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counters>() == 16);

impl Counters {
    /// Adds `other` to `self` (summing the per-CPU values of one key).
    #[must_use]
    pub const fn sum(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with no padding (sizes asserted
    // above); every bit pattern is a valid value.
    unsafe impl aya::Pod for super::IfaceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_adds_both_fields() {
        let a = Counters {
            packets: 2,
            bytes: 100,
        };
        let b = Counters {
            packets: 3,
            bytes: 50,
        };
        assert_eq!(
            a.sum(b),
            Counters {
                packets: 5,
                bytes: 150
            }
        );
    }

    #[test]
    fn counters_sum_wraps_instead_of_panicking() {
        let a = Counters {
            packets: u64::MAX,
            bytes: 1,
        };
        let b = Counters {
            packets: 1,
            bytes: 1,
        };
        assert_eq!(
            a.sum(b),
            Counters {
                packets: 0,
                bytes: 2
            }
        );
    }

    #[test]
    fn hook_names_are_distinct() {
        let names: Vec<_> = (0..hook::COUNT).map(hook::name).collect();
        assert_eq!(names, ["xdp-ingress", "tc-ingress", "tc-egress"]);
        assert_eq!(hook::name(hook::COUNT), "unknown");
    }
}
