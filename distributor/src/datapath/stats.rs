//! Reading the datapath's counters from the pinned maps: what `distributor
//! stats` prints. Works from any process on the box (same bpffs), so the
//! running instance needs no admin endpoint for it.

use std::{collections::BTreeMap, path::Path};

use aya::maps::{Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use distributor_common::{
    Counters, IfaceKey,
    maps::{self, hook},
    reason,
};
use serde::Serialize;

/// One row: an interface and hook, summed over CPUs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IfaceRow {
    pub ifindex: u32,
    /// Interface name in this network namespace, if it resolves.
    pub name: String,
    pub hook: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything `distributor stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub interfaces: Vec<IfaceRow>,
    /// Reason name -> packets, summed over CPUs.
    pub reasons: BTreeMap<&'static str, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot open {path}: {source} (is distributor running with this pin directory?)")]
    Open { path: String, source: MapError },
    #[error("reading {map}: {source}")]
    Read { map: &'static str, source: MapError },
}

fn open(pin_dir: &Path, name: &str) -> Result<Map, StatsError> {
    let path = pin_dir.join(name);
    let open_err = |source| StatsError::Open {
        path: path.display().to_string(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(open_err)?;
    Map::from_map_data(data).map_err(open_err)
}

/// Reads the pinned counters under `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<Snapshot, StatsError> {
    let stats: PerCpuHashMap<_, IfaceKey, Counters> = open(pin_dir, maps::IFACE_STATS)?
        .try_into()
        .map_err(|source| StatsError::Read {
            map: maps::IFACE_STATS,
            source,
        })?;
    let read_err = |map| move |source| StatsError::Read { map, source };
    let mut interfaces = Vec::new();
    for entry in &stats {
        let (key, per_cpu) = entry.map_err(read_err(maps::IFACE_STATS))?;
        let total = per_cpu.iter().fold(Counters::default(), |a, c| a.sum(*c));
        interfaces.push(IfaceRow {
            ifindex: key.ifindex,
            name: if_name(key.ifindex),
            hook: hook::name(key.hook),
            packets: total.packets,
            bytes: total.bytes,
        });
    }
    interfaces.sort_by(|a, b| (a.ifindex, a.hook).cmp(&(b.ifindex, b.hook)));

    let reasons_map: PerCpuArray<_, u64> = open(pin_dir, maps::REASONS)?
        .try_into()
        .map_err(read_err(maps::REASONS))?;
    let mut reasons = BTreeMap::new();
    for r in 0..reason::COUNT {
        let per_cpu = reasons_map.get(&r, 0).map_err(read_err(maps::REASONS))?;
        reasons.insert(reason::name(r), per_cpu.iter().sum());
    }
    Ok(Snapshot {
        interfaces,
        reasons,
    })
}

/// The name of interface `ifindex` in this network namespace, or `#N`.
fn if_name(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return format!("#{ifindex}");
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

impl Snapshot {
    /// A table for people.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:<12} {:>14} {:>16}",
            "interface", "ifindex", "hook", "packets", "bytes"
        );
        for r in &self.interfaces {
            let _ = writeln!(
                out,
                "{:<16} {:>7} {:<12} {:>14} {:>16}",
                r.name, r.ifindex, r.hook, r.packets, r.bytes
            );
        }
        let _ = writeln!(
            out,
            "\n{:<30} {:>14}",
            "passed to the stack, by reason", "packets"
        );
        for (name, n) in &self.reasons {
            let _ = writeln!(out, "{name:<30} {n:>14}");
        }
        out
    }
}
