//! The splice datapath's flow maps at rest: when no client connection is
//! open, `FLOWS_C` and `ARMS` are empty and `FLOWS_S` holds one idle entry
//! per pooled idle backend connection, and nothing else. Every end-to-end
//! test that runs distributor in a datapath mode (`tc`, `xdp`) ends with
//! [`Testbed::assert_flow_baseline`]: a connection whose entries outlive it
//! is a leak.
//!
//! The maps are read twice, by `distributor flows --json` (aya, the
//! project's own reader) and by `bpftool map dump pinned` (the kernel's
//! view, through a reader that shares no code with ours), and both must
//! agree.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use distributor_common::flow;
use serde_json::Value;

use crate::{ADMIN_PORT, Testbed, bpftool_dump};

/// How long the maps may take to settle after the last client is done: a
/// connection's entries go when its task ends, a moment after the client's
/// last byte (longer on a lossy link, where a FIN may need a
/// retransmission).
const SETTLE: Duration = Duration::from_secs(10);

/// The rows of list `list` (`clients`, `backends`, `arms`) of a
/// `distributor flows --json` snapshot; empty when absent.
#[must_use]
pub fn flow_rows<'a>(flows: &'a Value, list: &str) -> &'a [Value] {
    flows[list].as_array().map_or(&[], Vec::as_slice)
}

/// Polls `probe` every 50 ms until it gives `Some`, for at most `limit`;
/// `None` when the time ran out.
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum over all label sets of metric `distributor_<name>` in a `/metrics`
/// text.
fn metric_sum_in(text: &str, name: &str) -> u64 {
    let labelled = format!("distributor_{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&labelled))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The `(backend, gateway)` addresses of a `bpftool --json map dump` entry
/// keyed by a [`flow::FlowKey`]: the raw key bytes, addresses and ports
/// in network order (peer address, gateway address, peer port, gateway
/// port).
fn bpftool_key(entry: &Value) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let bytes: Vec<u8> = entry["key"]
        .as_array()?
        .iter()
        .map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    if bytes.len() != size_of::<flow::FlowKey>() {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    let port = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    Some((
        SocketAddrV4::new(addr(0), port(8)),
        SocketAddrV4::new(addr(4), port(10)),
    ))
}

/// One reading of everything the baseline is about.
struct Snapshot {
    /// `distributor flows --json`.
    flows: Value,
    /// `bpftool --json map dump pinned` of `FLOWS_C`, `FLOWS_S`, `ARMS`.
    dumps: [(&'static str, Vec<Value>); 3],
    /// The pool's idle and open backend connections (`/metrics`); both 0
    /// when distributor runs without a proxy (no admin endpoint, no pool).
    idle: u64,
    open: u64,
}

impl Snapshot {
    fn dump(&self, name: &str) -> &[Value] {
        self.dumps
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[], |(_, d)| d.as_slice())
    }

    /// The `(backend, gateway)` pairs of `FLOWS_S` as `distributor flows`
    /// shows them.
    fn flows_backends(&self) -> BTreeSet<(SocketAddrV4, SocketAddrV4)> {
        flow_rows(&self.flows, "backends")
            .iter()
            .filter_map(|b| {
                let addr = |f: &str| b[f].as_str()?.parse::<SocketAddrV4>().ok();
                Some((addr("backend")?, addr("gateway")?))
            })
            .collect()
    }

    /// The `(backend, gateway)` pairs of `FLOWS_S` as `bpftool` shows them.
    fn bpftool_backends(&self) -> BTreeSet<(SocketAddrV4, SocketAddrV4)> {
        self.dump(flow::FLOWS_S)
            .iter()
            .filter_map(bpftool_key)
            .collect()
    }

    /// What keeps the maps from the baseline; empty at the baseline.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for list in ["clients", "arms"] {
            let n = flow_rows(&self.flows, list).len();
            if n != 0 {
                p.push(format!("distributor flows: {n} {list} (want none)"));
            }
        }
        if self.idle != self.open {
            p.push(format!(
                "pool: {} backend connections open, {} idle (one is still busy)",
                self.open, self.idle
            ));
        }
        let rows = flow_rows(&self.flows, "backends");
        if rows.len() as u64 != self.idle {
            p.push(format!(
                "distributor flows: {} backends, the pool has {} idle connections",
                rows.len(),
                self.idle
            ));
        }
        for b in rows.iter().filter(|b| b["state"] != "idle") {
            p.push(format!("distributor flows: backend not idle: {b}"));
        }
        for name in [flow::FLOWS_C, flow::ARMS] {
            let n = self.dump(name).len();
            if n != 0 {
                p.push(format!("bpftool: {name} has {n} entries (want none)"));
            }
        }
        let s = self.dump(flow::FLOWS_S);
        if s.len() as u64 != self.idle {
            p.push(format!(
                "bpftool: {} has {} entries, the pool has {} idle connections",
                flow::FLOWS_S,
                s.len(),
                self.idle
            ));
        }
        for e in s {
            if bpftool_key(e).is_none() {
                p.push(format!(
                    "bpftool: {} key not understood: {e}",
                    flow::FLOWS_S
                ));
            }
            // With BTF, bpftool also shows the value's fields.
            let state = &e["formatted"]["value"]["state"];
            if state.is_u64() && state.as_u64() != Some(u64::from(flow::state::IDLE)) {
                p.push(format!("bpftool: {} entry not idle: {e}", flow::FLOWS_S));
            }
        }
        let (ours, kernels) = (self.flows_backends(), self.bpftool_backends());
        if ours != kernels {
            p.push(format!(
                "{}: distributor flows shows {ours:?}, bpftool {kernels:?}",
                flow::FLOWS_S
            ));
        }
        p
    }
}

impl Testbed {
    /// Sum of gauge or counter `distributor_<name>` in `/metrics` over all
    /// its label sets (e.g. all servers).
    #[must_use]
    pub fn metric_sum(&self, name: &str) -> u64 {
        metric_sum_in(&self.metrics().expect("metrics"), name)
    }

    /// The gateway's TCP sockets as (local, peer) pairs, in any state but
    /// `TIME-WAIT` and `LISTEN` (a pooled connection the backend closed is
    /// `CLOSE-WAIT` until the pool notices).
    #[must_use]
    pub fn gateway_sockets(&self) -> BTreeSet<(SocketAddrV4, SocketAddrV4)> {
        let out = self
            .gateway
            .run(
                "ss",
                &["-Htan", "exclude", "time-wait", "exclude", "listening"],
            )
            .expect("ss");
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // State Recv-Q Send-Q Local Peer
                let local = f.get(3)?.parse().ok()?;
                let peer = f.get(4)?.parse().ok()?;
                Some((local, peer))
            })
            .collect()
    }

    /// The gateway's sockets that are closing and waiting on their peer
    /// (LAST-ACK, FIN-WAIT-1, CLOSING): `ss` lines. One that stays there
    /// resends a FIN its peer does not accept (a translation that ended
    /// too early).
    pub fn gateway_sockets_closing(&self) -> Vec<String> {
        self.gateway
            .run(
                "ss",
                &[
                    "-Htan",
                    "state",
                    "last-ack",
                    "state",
                    "fin-wait-1",
                    "state",
                    "closing",
                ],
            )
            .expect("ss")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the admin endpoint listens (distributor runs a proxy).
    fn admin_listening(&self) -> bool {
        let port = format!(":{ADMIN_PORT}");
        self.gateway
            .run("ss", &["-Htln", "sport", "=", &port])
            .expect("ss")
            .lines()
            .any(|l| !l.trim().is_empty())
    }

    fn flow_snapshot(&self, proxy: bool) -> Snapshot {
        let dump = |name: &'static str| {
            let v = bpftool_dump(&self.pin_dir().join(name))
                .unwrap_or_else(|e| panic!("bpftool dump of {name}: {e:#}"));
            (name, v.as_array().cloned().unwrap_or_default())
        };
        let flows = self.flows().expect("distributor flows");
        let dumps = [dump(flow::FLOWS_C), dump(flow::FLOWS_S), dump(flow::ARMS)];
        let (idle, open) = if proxy {
            let text = self.metrics().expect("metrics");
            (
                metric_sum_in(&text, "backend_connections_idle"),
                metric_sum_in(&text, "backend_connections_open"),
            )
        } else {
            (0, 0)
        };
        Snapshot {
            flows,
            dumps,
            idle,
            open,
        }
    }

    /// Asserts the flow maps are at rest: no client connection registered
    /// (`FLOWS_C` empty), no arm (`ARMS` empty), and exactly one idle
    /// `FLOWS_S` entry for each idle pooled backend connection, each for a
    /// socket the gateway still has. Read with `distributor flows` and
    /// with `bpftool`, which must agree. Waits (10 s at most) for the last
    /// connections' entries to go, and (10 s more at most) for every
    /// gateway socket to finish its close.
    ///
    /// Call it while distributor runs in a datapath mode (`tc` or `xdp`),
    /// once every client is done and its connections closed. Without a
    /// proxy (no admin endpoint) there is no pool: `FLOWS_S` must be empty
    /// too. With `mode = "off"` there are no flow maps: this panics rather
    /// than pass without looking (don't call it there).
    pub fn assert_flow_baseline(&self) {
        for name in [flow::FLOWS_C, flow::FLOWS_S, flow::ARMS] {
            let path = self.pin_dir().join(name);
            assert!(
                path.exists(),
                "no flow map pinned at {}: the baseline needs distributor running in a \
                 datapath mode",
                path.display()
            );
        }
        let proxy = self.admin_listening();
        let settled = poll(SETTLE, || {
            let snap = self.flow_snapshot(proxy);
            snap.problems().is_empty().then_some(snap)
        });
        let snap = settled.unwrap_or_else(|| {
            let snap = self.flow_snapshot(proxy);
            let dumps: Vec<String> = snap
                .dumps
                .iter()
                .map(|(name, d)| format!("{name}: {:#}", Value::Array(d.clone())))
                .collect();
            panic!(
                "flow maps not at baseline {SETTLE:?} after the clients were done:\n  {}\n\
                 distributor flows: {:#}\nbpftool:\n{}\npool: idle {} open {}\n\
                 gateway connections: {:?}",
                snap.problems().join("\n  "),
                snap.flows,
                dumps.join("\n"),
                snap.idle,
                snap.open,
                self.gateway_sockets()
            )
        });
        let stuck = poll(SETTLE, || {
            let left = self.gateway_sockets_closing();
            left.is_empty().then_some(())
        });
        assert!(
            stuck.is_some(),
            "gateway sockets still closing {SETTLE:?} after the clients were done: {:#?}",
            self.gateway_sockets_closing()
        );
        let conns = self.gateway_sockets();
        for (backend, gw) in snap.flows_backends() {
            assert!(
                conns.contains(&(gw, backend)),
                "{} holds {gw} -> {backend}, which the gateway no longer has: {:#}\n{conns:?}",
                flow::FLOWS_S,
                snap.flows
            );
        }
    }
}
