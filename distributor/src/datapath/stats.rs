//! Reading the datapath's counters from the pinned maps: what `distributor
//! stats` prints. Works from any process on the box (same bpffs), so the
//! running instance needs no admin endpoint for it.

use std::{collections::BTreeMap, io, path::Path};

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use distributor_common::{
    Counters,
    flow::{self, counter},
    maps::{self, hook},
    reason,
    splice::relay,
};
use serde::{Serialize, ser::SerializeMap as _};

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
    /// The splice counters; `None` when the instance pins no `SPLICE_STATS`
    /// (one older than the splice datapath).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub splice: Option<SpliceStats>,
}

/// The splice counters ([`flow::SPLICE_STATS`]), summed over CPUs, in index
/// order. Serialized as one object: every counter by name, then
/// `"relay-reasons"`, an object of relay reason name -> responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceStats {
    /// `counter::name(i)` -> sum, for `i` in `0..counter::COUNT`.
    pub counters: Vec<(&'static str, u64)>,
    /// `relay::name(r)` -> sum, for `r` in `0..relay::COUNT`.
    pub relay_reasons: Vec<(&'static str, u64)>,
}

impl SpliceStats {
    /// From the per-index sums of the counter array (`counter::LEN`
    /// values; missing indexes count as zero).
    #[must_use]
    pub fn from_sums(sums: &[u64]) -> Self {
        let at = |i: u32| {
            usize::try_from(i)
                .ok()
                .and_then(|i| sums.get(i))
                .copied()
                .unwrap_or(0)
        };
        Self {
            counters: (0..counter::COUNT)
                .map(|c| (counter::name(c), at(c)))
                .collect(),
            relay_reasons: (0..relay::COUNT)
                .map(|r| (relay::name(r), at(counter::RELAY_BASE + r)))
                .collect(),
        }
    }
}

/// A map's entries in order (not a sorted `BTreeMap`: the counters read
/// best in index order).
struct Ordered<'a>(&'a [(&'static str, u64)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, n) in self.0 {
            map.serialize_entry(name, n)?;
        }
        map.end()
    }
}

impl Serialize for SpliceStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.counters.len() + 1))?;
        for (name, n) in &self.counters {
            map.serialize_entry(name, n)?;
        }
        map.serialize_entry("relay-reasons", &Ordered(&self.relay_reasons))?;
        map.end()
    }
}

/// Errors of reading the pinned maps (`distributor stats` and `distributor
/// flows`).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("no running distributor with pin dir {0} (is the datapath mode off?)")]
    NotRunning(String),
    #[error("cannot access pin dir {path}: {source}")]
    PinDir { path: String, source: io::Error },
    #[error("cannot open {path}: {source} (is distributor running with this pin directory?)")]
    Open { path: String, source: MapError },
    #[error("reading {map}: {source}")]
    Read { map: &'static str, source: MapError },
}

/// Fails with one clear line when `pin_dir` does not exist: no instance
/// with the datapath on runs with it (a stopped one removes it).
pub(super) fn check_pin_dir(pin_dir: &Path) -> Result<(), StatsError> {
    let not_running = || StatsError::NotRunning(pin_dir.display().to_string());
    match std::fs::metadata(pin_dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(not_running()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_running()),
        // Most often EACCES: bpffs is root-only.
        Err(source) => Err(StatsError::PinDir {
            path: pin_dir.display().to_string(),
            source,
        }),
    }
}

/// Opens the map pinned as `name` under `pin_dir`.
pub(super) fn open(pin_dir: &Path, name: &str) -> Result<Map, StatsError> {
    let path = pin_dir.join(name);
    map_from_pin(&path).map_err(|source| StatsError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Opens the map pinned as `name` under `pin_dir`, or `None` if nothing is
/// pinned under that name.
fn open_optional(pin_dir: &Path, name: &str) -> Result<Option<Map>, StatsError> {
    let path = pin_dir.join(name);
    match map_from_pin(&path) {
        Ok(map) => Ok(Some(map)),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StatsError::Open {
            path: path.display().to_string(),
            source,
        }),
    }
}

pub(super) fn map_from_pin(path: &Path) -> Result<Map, MapError> {
    Map::from_map_data(MapData::from_pin(path)?)
}

/// Reads the pinned counters under `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<Snapshot, StatsError> {
    check_pin_dir(pin_dir)?;
    let stats: PerCpuArray<_, Counters> =
        open(pin_dir, maps::IFACE_STATS)?
            .try_into()
            .map_err(|source| StatsError::Read {
                map: maps::IFACE_STATS,
                source,
            })?;
    let read_err = |map| move |source| StatsError::Read { map, source };
    let mut interfaces = Vec::new();
    for index in 0..maps::IFACE_STATS_LEN {
        let per_cpu = stats.get(&index, 0).map_err(read_err(maps::IFACE_STATS))?;
        // The labels are the same on every CPU; a slot no interface uses
        // has none.
        let Some(first) = per_cpu.iter().next().filter(|c| c.ifindex != 0) else {
            continue;
        };
        let total = per_cpu.iter().skip(1).fold(*first, |a, c| a.sum(*c));
        interfaces.push(IfaceRow {
            ifindex: total.ifindex,
            name: if_name(total.ifindex),
            hook: hook::name(total.hook),
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
        splice: read_splice(pin_dir)?,
    })
}

/// The splice counters, or `None` if the instance pins none.
fn read_splice(pin_dir: &Path) -> Result<Option<SpliceStats>, StatsError> {
    let read_err = |source| StatsError::Read {
        map: flow::SPLICE_STATS,
        source,
    };
    let Some(map) = open_optional(pin_dir, flow::SPLICE_STATS)? else {
        return Ok(None);
    };
    let array: PerCpuArray<_, u64> = map.try_into().map_err(read_err)?;
    let sums = (0..counter::LEN)
        .map(|i| Ok(array.get(&i, 0).map_err(read_err)?.iter().sum()))
        .collect::<Result<Vec<u64>, StatsError>>()?;
    Ok(Some(SpliceStats::from_sums(&sums)))
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
        if let Some(splice) = &self.splice {
            let _ = writeln!(out, "\n{:<30} {:>14}", "splice", "count");
            for (name, n) in &splice.counters {
                let _ = writeln!(out, "{name:<30} {n:>14}");
            }
            let _ = writeln!(out, "\n{:<30} {:>14}", "relayed, by reason", "responses");
            for (name, n) in &splice.relay_reasons {
                let _ = writeln!(out, "{name:<30} {n:>14}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums() -> Vec<u64> {
        (0..u64::from(counter::LEN)).map(|i| i * 10).collect()
    }

    #[test]
    fn splice_json_names_every_counter_and_relay_reason() {
        let v = serde_json::to_value(SpliceStats::from_sums(&sums())).expect("json");
        let obj = v.as_object().expect("object");
        assert_eq!(obj.len(), usize::try_from(counter::COUNT).unwrap() + 1);
        for c in 0..counter::COUNT {
            assert_eq!(
                obj[counter::name(c)],
                u64::from(c) * 10,
                "{}",
                counter::name(c)
            );
        }
        let relay_reasons = obj["relay-reasons"].as_object().expect("relay-reasons");
        assert_eq!(relay_reasons.len(), usize::try_from(relay::COUNT).unwrap());
        for r in 0..relay::COUNT {
            let want = u64::from(counter::RELAY_BASE + r) * 10;
            assert_eq!(relay_reasons[relay::name(r)], want, "{}", relay::name(r));
        }
        assert_eq!(obj["spliced-bytes"], 10);
        // relay-head-incomplete is reason 0: the first after the counters.
        assert_eq!(
            relay_reasons["relay-head-incomplete"],
            u64::from(counter::RELAY_BASE) * 10
        );
    }

    #[test]
    fn short_counter_array_reads_as_zeros() {
        let s = SpliceStats::from_sums(&[7]);
        assert_eq!(s.counters[0], ("spliced-segments", 7));
        assert!(s.counters[1..].iter().all(|&(_, n)| n == 0));
        assert!(s.relay_reasons.iter().all(|&(_, n)| n == 0));
    }

    fn snapshot(splice: Option<SpliceStats>) -> Snapshot {
        Snapshot {
            interfaces: vec![IfaceRow {
                ifindex: 1,
                name: "lo".into(),
                hook: "tc-egress",
                packets: 3,
                bytes: 180,
            }],
            reasons: BTreeMap::from([("other", 2)]),
            splice,
        }
    }

    #[test]
    fn splice_is_omitted_when_not_pinned() {
        let v = serde_json::to_value(snapshot(None)).expect("json");
        assert!(v.get("splice").is_none(), "{v}");
        assert_eq!(v["reasons"]["other"], 2);
        assert!(!snapshot(None).render().contains("splice"));
    }

    #[test]
    fn splice_section_in_text_and_json() {
        let s = snapshot(Some(SpliceStats::from_sums(&sums())));
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["splice"]["regions-done"], 40);
        assert_eq!(
            v["splice"]["relay-reasons"]["relay-no-client"],
            u64::from(counter::RELAY_BASE + relay::RELAY_NO_CLIENT) * 10
        );
        let text = s.render();
        assert!(text.contains("\nsplice "), "{text}");
        let line = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} line in\n{text}"))
                .split_whitespace()
                .nth(1)
                .expect("value")
                .to_owned()
        };
        assert_eq!(line("no-peer-flow"), "90");
        let mismatch = relay::RELAY_MISMATCH;
        assert_eq!(
            line("relay-connection-mismatch"),
            (u64::from(counter::RELAY_BASE + mismatch) * 10).to_string()
        );
    }

    #[test]
    fn missing_pin_dir_is_one_clear_line() {
        let dir = Path::new("/nonexistent/distributor-test-pins");
        let e = check_pin_dir(dir).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "no running distributor with pin dir /nonexistent/distributor-test-pins \
             (is the datapath mode off?)"
        );
        assert!(matches!(read(dir), Err(StatsError::NotRunning(_))));
    }
}
