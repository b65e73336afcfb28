//! Map names and the key/value types stored in them.
//!
//! The names are the `static` names in `distributor-ebpf` and the file names
//! under the pin directory (`/sys/fs/bpf/distributor/<NAME>`). The kernel
//! keeps at most 15 characters of a map name.

/// Per-CPU array of [`Counters`], at [`stats_index`] of an interface's
/// slot and a hook: packets and bytes each hook saw, per interface. Each
/// entry names its interface and hook (the control plane writes them
/// before the programs attach), so `bpftool map dump` reads on its own.
pub const IFACE_STATS: &str = "IFACE_STATS";
/// Per-CPU array indexed by [`crate::reason`]: why the datapath passed a
/// packet to the stack untouched.
pub const REASONS: &str = "REASONS";

/// The datapath's table of interface indexes (a `.rodata` global the
/// loader fills): an interface's slot is its position there. Read-only
/// once loaded, so finding a slot costs a few compares and no map lookup.
pub const IFINDEXES: &str = "IFINDEXES";

/// Interfaces one gateway can attach to: the length of [`IFINDEXES`].
pub const IFACES_MAX: u32 = 32;

/// Length of [`IFACE_STATS`]: every slot times every hook.
pub const IFACE_STATS_LEN: u32 = IFACES_MAX * hook::COUNT;

/// Where the counters of interface slot `slot` and `hook` sit in
/// [`IFACE_STATS`].
#[must_use]
pub const fn stats_index(slot: u32, hook: u32) -> u32 {
    slot * hook::COUNT + hook
}

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

/// Value of [`IFACE_STATS`] (one per CPU). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Interface index in the gateway's network namespace; 0 for a slot
    /// no interface uses.
    pub ifindex: u32,
    /// One of [`hook`].
    pub hook: u32,
    /// Frames (XDP) or socket buffers (TC; a GRO/GSO super-packet counts once).
    pub packets: u64,
    /// Bytes from the Ethernet header on.
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counters>() == 24);

impl Counters {
    /// Zero counts, labelled.
    #[must_use]
    pub const fn labelled(ifindex: u32, hook: u32) -> Self {
        Self {
            ifindex,
            hook,
            packets: 0,
            bytes: 0,
        }
    }

    /// Adds the counts of `other` to `self`'s (summing the per-CPU values
    /// of one entry; the labels are `self`'s).
    #[must_use]
    pub const fn sum(self, other: Self) -> Self {
        Self {
            ifindex: self.ifindex,
            hook: self.hook,
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with no padding (size asserted
    // above); every bit pattern is a valid value.
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
            ..Counters::labelled(7, hook::TC_EGRESS)
        };
        let b = Counters {
            packets: 3,
            bytes: 50,
            ..Counters::default()
        };
        assert_eq!(
            a.sum(b),
            Counters {
                packets: 5,
                bytes: 150,
                ..Counters::labelled(7, hook::TC_EGRESS)
            }
        );
    }

    #[test]
    fn counters_sum_wraps_instead_of_panicking() {
        let a = Counters {
            packets: u64::MAX,
            bytes: 1,
            ..Counters::default()
        };
        let b = Counters {
            packets: 1,
            bytes: 1,
            ..Counters::default()
        };
        assert_eq!(
            a.sum(b),
            Counters {
                packets: 0,
                bytes: 2,
                ..Counters::default()
            }
        );
    }

    #[test]
    fn every_slot_and_hook_has_its_own_index() {
        let all: Vec<u32> = (0..IFACES_MAX)
            .flat_map(|slot| (0..hook::COUNT).map(move |h| stats_index(slot, h)))
            .collect();
        let expected: Vec<u32> = (0..IFACE_STATS_LEN).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn hook_names_are_distinct() {
        let names: Vec<_> = (0..hook::COUNT).map(hook::name).collect();
        assert_eq!(names, ["xdp-ingress", "tc-ingress", "tc-egress"]);
        assert_eq!(hook::name(hook::COUNT), "unknown");
    }
}
