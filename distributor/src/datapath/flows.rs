//! Reading the splice datapath's flow maps: what `distributor flows` prints.
//! Like `distributor stats`, it opens the pinned maps from any process on
//! the box, so the running instance needs no endpoint for it.
//!
//! The maps change while we iterate them (the control plane inserts and
//! deletes flows, the datapath consumes arms): the listing is a snapshot of
//! each entry, not of the three maps at one instant.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use aya::maps::{HashMap, MapData};
use distributor_common::flow::{self, Arm, BackendFlow, ClientFlow, FlowKey, flags, state};
use serde::Serialize;

use super::stats::{self, StatsError};

/// An address and port in network byte order (as in [`FlowKey`]), for
/// display.
#[must_use]
pub fn socket_addr(addr_be: u32, port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr_be)), u16::from_be(port_be))
}

/// The peer side of a flow key (client, or backend).
fn peer(key: &FlowKey) -> SocketAddrV4 {
    socket_addr(key.saddr, key.sport)
}

/// The gateway side of a flow key (virtual IP, or the gateway's
/// backend-side address).
fn gateway(key: &FlowKey) -> SocketAddrV4 {
    socket_addr(key.daddr, key.dport)
}

/// A region in flight, host order.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RegionRow {
    pub s0: u32,
    pub c0: u32,
    pub len: u32,
}

/// One client connection (a [`flow::FLOWS_C`] entry).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClientRow {
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub conn_id: u64,
    pub state: &'static str,
    pub bytes_spliced: u64,
    pub regions_done: u64,
    /// Bytes of completed regions the socket never saw (mod 2^32).
    pub shift: u32,
    /// The highest client-space sequence end spliced in the region in
    /// flight (meaningful while splicing).
    pub sent_end: u32,
    /// The region in flight, while splicing.
    pub region: Option<RegionRow>,
    /// The backend connection of the region in flight, while splicing:
    /// the backend's address...
    pub backend: Option<SocketAddrV4>,
    /// ...and the gateway's address on that connection.
    pub backend_gateway: Option<SocketAddrV4>,
}

impl ClientRow {
    #[must_use]
    pub fn new(key: &FlowKey, f: &ClientFlow) -> Self {
        let splicing = f.state == state::SPLICING;
        Self {
            client: peer(key),
            vip: gateway(key),
            conn_id: f.conn_id,
            // The kernel gave the key to a new connection, not yet
            // registered: the entry translates nothing any more.
            state: if f.flags & flags::SUPERSEDED == 0 {
                state::name(f.state)
            } else {
                "superseded"
            },
            bytes_spliced: f.bytes_spliced,
            regions_done: f.regions_done,
            shift: f.shift.spliced,
            sent_end: f.sent_end,
            region: splicing.then_some(RegionRow {
                s0: f.region.s0,
                c0: f.region.c0,
                len: f.region.len,
            }),
            backend: splicing.then(|| peer(&f.backend)),
            backend_gateway: splicing.then(|| gateway(&f.backend)),
        }
    }
}

/// One backend connection (a [`flow::FLOWS_S`] entry).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendRow {
    pub backend: SocketAddrV4,
    pub gateway: SocketAddrV4,
    pub state: &'static str,
    pub arm_id: u64,
    pub bytes_spliced: u64,
    /// Bytes of completed regions the socket never saw (mod 2^32).
    pub shift: u32,
}

impl BackendRow {
    #[must_use]
    pub fn new(key: &FlowKey, f: &BackendFlow) -> Self {
        Self {
            backend: peer(key),
            gateway: gateway(key),
            state: state::name(f.state),
            arm_id: f.arm_id,
            bytes_spliced: f.bytes_spliced,
            shift: f.shift.spliced,
        }
    }
}

/// One pending arm (an [`flow::ARMS`] entry): a request written to a
/// backend whose response's first segment has not arrived yet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ArmRow {
    pub backend: SocketAddrV4,
    pub gateway: SocketAddrV4,
    pub client: SocketAddrV4,
    pub id: u64,
}

impl ArmRow {
    #[must_use]
    pub fn new(key: &FlowKey, a: &Arm) -> Self {
        Self {
            backend: peer(key),
            gateway: gateway(key),
            client: peer(&a.client),
            id: a.id,
        }
    }
}

/// Everything `distributor flows` shows, each list sorted by address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Flows {
    pub clients: Vec<ClientRow>,
    pub backends: Vec<BackendRow>,
    pub arms: Vec<ArmRow>,
}

impl Flows {
    /// The rows of the three maps' entries, sorted for stable output.
    #[must_use]
    pub fn from_entries(
        clients: impl IntoIterator<Item = (FlowKey, ClientFlow)>,
        backends: impl IntoIterator<Item = (FlowKey, BackendFlow)>,
        arms: impl IntoIterator<Item = (FlowKey, Arm)>,
    ) -> Self {
        let mut clients: Vec<_> = clients
            .into_iter()
            .map(|(k, f)| ClientRow::new(&k, &f))
            .collect();
        clients.sort_by_key(|r| (r.client, r.vip, r.conn_id));
        let mut backends: Vec<_> = backends
            .into_iter()
            .map(|(k, f)| BackendRow::new(&k, &f))
            .collect();
        backends.sort_by_key(|r| (r.backend, r.gateway, r.arm_id));
        let mut arms: Vec<_> = arms.into_iter().map(|(k, a)| ArmRow::new(&k, &a)).collect();
        arms.sort_by_key(|r| (r.backend, r.gateway, r.id));
        Self {
            clients,
            backends,
            arms,
        }
    }

    /// Tables for people.
    #[must_use]
    pub fn render(&self) -> String {
        // 21 = the longest "a.b.c.d:port".
        let mut out = String::new();
        let _ = writeln!(
            out,
            "client connections ({}): {}",
            flow::FLOWS_C,
            self.clients.len()
        );
        let _ = writeln!(
            out,
            "{:<21} {:<21} {:>8} {:<8} {:>14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  \
             backend <- gateway",
            "client",
            "vip",
            "conn_id",
            "state",
            "bytes_spliced",
            "regions",
            "shift",
            "s0",
            "c0",
            "len",
            "sent_end",
        );
        for r in &self.clients {
            let (s0, c0, len) = r.region.map_or_else(
                || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                |g| (g.s0.to_string(), g.c0.to_string(), g.len.to_string()),
            );
            let sent_end = if r.region.is_some() {
                r.sent_end.to_string()
            } else {
                "-".to_owned()
            };
            let backend = match (r.backend, r.backend_gateway) {
                (Some(b), Some(g)) => format!("{b} <- {g}"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<21} {:<21} {:>8} {:<8} {:>14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
                r.client.to_string(),
                r.vip.to_string(),
                r.conn_id,
                r.state,
                r.bytes_spliced,
                r.regions_done,
                r.shift,
                s0,
                c0,
                len,
                sent_end,
                backend,
            );
        }

        let _ = writeln!(
            out,
            "\nbackend connections ({}): {}",
            flow::FLOWS_S,
            self.backends.len()
        );
        let _ = writeln!(
            out,
            "{:<21} {:<21} {:<8} {:>10} {:>14} {:>10}",
            "backend", "gateway", "state", "arm_id", "bytes_spliced", "shift"
        );
        for r in &self.backends {
            let _ = writeln!(
                out,
                "{:<21} {:<21} {:<8} {:>10} {:>14} {:>10}",
                r.backend.to_string(),
                r.gateway.to_string(),
                r.state,
                r.arm_id,
                r.bytes_spliced,
                r.shift
            );
        }

        let _ = writeln!(out, "\npending arms ({}): {}", flow::ARMS, self.arms.len());
        let _ = writeln!(
            out,
            "{:<21} {:<21} {:<21} {:>10}",
            "backend", "gateway", "client", "id"
        );
        for r in &self.arms {
            let _ = writeln!(
                out,
                "{:<21} {:<21} {:<21} {:>10}",
                r.backend.to_string(),
                r.gateway.to_string(),
                r.client.to_string(),
                r.id
            );
        }
        out
    }
}

/// Every entry of the hash map pinned as `name` under `pin_dir`.
fn entries<V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<Vec<(FlowKey, V)>, StatsError> {
    let read_err = |source| StatsError::Read { map: name, source };
    let map: HashMap<MapData, FlowKey, V> =
        stats::open(pin_dir, name)?.try_into().map_err(read_err)?;
    // An entry deleted between the key walk and its lookup is skipped by
    // the iterator (KeyNotFound); any other error is real.
    map.iter().map(|e| e.map_err(read_err)).collect()
}

/// Reads the pinned flow maps under `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<Flows, StatsError> {
    stats::check_pin_dir(pin_dir)?;
    Ok(Flows::from_entries(
        entries::<ClientFlow>(pin_dir, flow::FLOWS_C)?,
        entries::<BackendFlow>(pin_dir, flow::FLOWS_S)?,
        entries::<Arm>(pin_dir, flow::ARMS)?,
    ))
}

#[cfg(test)]
mod tests {
    use distributor_common::splice::seq::{Region, Shift};
    use serde_json::json;

    use super::*;

    /// A key as the datapath stores it: network byte order.
    fn key(peer: [u8; 4], peer_port: u16, gw: [u8; 4], gw_port: u16) -> FlowKey {
        FlowKey::ingress(
            u32::from_ne_bytes(peer),
            u32::from_ne_bytes(gw),
            peer_port.to_be(),
            gw_port.to_be(),
        )
    }

    #[test]
    fn network_order_keys_print_as_addresses() {
        let cases = [
            ([198, 51, 100, 2], 41234, "198.51.100.2:41234"),
            ([10, 0, 0, 1], 80, "10.0.0.1:80"),
            ([255, 255, 255, 255], 65535, "255.255.255.255:65535"),
            ([0, 0, 0, 0], 0, "0.0.0.0:0"),
            ([1, 2, 3, 4], 0x0102, "1.2.3.4:258"),
        ];
        for (ip, port, want) in cases {
            let k = key(ip, port, [203, 0, 113, 1], 80);
            assert_eq!(peer(&k).to_string(), want);
            assert_eq!(gateway(&k).to_string(), "203.0.113.1:80");
        }
        // The raw bytes as bpftool shows them for 192.0.2.6:80.
        let addr = u32::from_ne_bytes([0xc0, 0x00, 0x02, 0x06]);
        let port = u16::from_ne_bytes([0x00, 0x50]);
        assert_eq!(socket_addr(addr, port).to_string(), "192.0.2.6:80");
    }

    fn sample() -> Flows {
        let backend_key = key([192, 0, 2, 6], 80, [192, 0, 2, 5], 40000);
        let splicing = ClientFlow {
            conn_id: 7,
            bytes_spliced: 3000,
            regions_done: 2,
            backend: backend_key,
            region: Region {
                s0: 1000,
                c0: 5000,
                len: 1500,
            },
            state: state::SPLICING,
            shift: Shift { spliced: 3000 },
            sent_end: 5700,
            ..ClientFlow::default()
        };
        let idle = ClientFlow {
            conn_id: 3,
            // Stale region fields of a completed region: not shown.
            region: Region {
                s0: 1,
                c0: 2,
                len: 3,
            },
            backend: backend_key,
            ..ClientFlow::default()
        };
        let backend = BackendFlow {
            arm_id: 42,
            bytes_spliced: 4500,
            client: key([198, 51, 100, 2], 41234, [203, 0, 113, 1], 80),
            state: state::SPLICING,
            shift: Shift { spliced: 4500 },
            ..BackendFlow::default()
        };
        let arm = Arm {
            id: 43,
            client: key([198, 51, 100, 9], 50000, [203, 0, 113, 1], 80),
            ..Arm::default()
        };
        Flows::from_entries(
            [
                (key([198, 51, 100, 9], 50000, [203, 0, 113, 1], 80), idle),
                (
                    key([198, 51, 100, 2], 41234, [203, 0, 113, 1], 80),
                    splicing,
                ),
            ],
            [(backend_key, backend)],
            [(key([192, 0, 2, 7], 80, [192, 0, 2, 5], 40001), arm)],
        )
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).expect("json");
        let want = json!({
            "clients": [
                {
                    "client": "198.51.100.2:41234",
                    "vip": "203.0.113.1:80",
                    "conn_id": 7,
                    "state": "splicing",
                    "bytes_spliced": 3000,
                    "regions_done": 2,
                    "shift": 3000,
                    "sent_end": 5700,
                    "region": {"s0": 1000, "c0": 5000, "len": 1500},
                    "backend": "192.0.2.6:80",
                    "backend_gateway": "192.0.2.5:40000",
                },
                {
                    "client": "198.51.100.9:50000",
                    "vip": "203.0.113.1:80",
                    "conn_id": 3,
                    "state": "idle",
                    "bytes_spliced": 0,
                    "regions_done": 0,
                    "shift": 0,
                    "sent_end": 0,
                    "region": null,
                    "backend": null,
                    "backend_gateway": null,
                },
            ],
            "backends": [{
                "backend": "192.0.2.6:80",
                "gateway": "192.0.2.5:40000",
                "state": "splicing",
                "arm_id": 42,
                "bytes_spliced": 4500,
                "shift": 4500,
            }],
            "arms": [{
                "backend": "192.0.2.7:80",
                "gateway": "192.0.2.5:40001",
                "client": "198.51.100.9:50000",
                "id": 43,
            }],
        });
        assert_eq!(v, want);
    }

    #[test]
    fn rows_sort_by_address_not_by_network_order_bytes() {
        // 10.0.0.2 < 10.0.0.10 < 10.0.1.1 numerically; as little-endian
        // integers of the network-order bytes they would sort otherwise.
        let f = Flows::from_entries(
            [
                (
                    key([10, 0, 1, 1], 1, [1, 1, 1, 1], 80),
                    ClientFlow::default(),
                ),
                (
                    key([10, 0, 0, 10], 1, [1, 1, 1, 1], 80),
                    ClientFlow::default(),
                ),
                (
                    key([10, 0, 0, 2], 256, [1, 1, 1, 1], 80),
                    ClientFlow::default(),
                ),
                (
                    key([10, 0, 0, 2], 2, [1, 1, 1, 1], 80),
                    ClientFlow::default(),
                ),
            ],
            [],
            [],
        );
        let order: Vec<String> = f.clients.iter().map(|r| r.client.to_string()).collect();
        assert_eq!(
            order,
            ["10.0.0.2:2", "10.0.0.2:256", "10.0.0.10:1", "10.0.1.1:1"]
        );
    }

    #[test]
    fn text_shows_each_section() {
        let text = sample().render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "client connections (FLOWS_C): 2");
        assert!(lines[1].starts_with("client "), "{text}");
        let fields: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "198.51.100.2:41234",
                "203.0.113.1:80",
                "7",
                "splicing",
                "3000",
                "2",
                "3000",
                "1000",
                "5000",
                "1500",
                "5700",
                "192.0.2.6:80",
                "<-",
                "192.0.2.5:40000",
            ]
        );
        let fields: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "198.51.100.9:50000",
                "203.0.113.1:80",
                "3",
                "idle",
                "0",
                "0",
                "0",
                "-",
                "-",
                "-",
                "-",
                "-"
            ]
        );
        assert!(
            text.contains("\nbackend connections (FLOWS_S): 1\n"),
            "{text}"
        );
        assert!(text.contains("\npending arms (ARMS): 1\n"), "{text}");
        // Columns line up: every client row starts its vip column where the
        // header does.
        let vip_col = lines[1].find("vip").expect("vip header");
        assert_eq!(&lines[2][vip_col..vip_col + 14], "203.0.113.1:80");
    }

    #[test]
    fn empty_maps_print_headers_only() {
        let text = Flows::from_entries([], [], []).render();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[0], "client connections (FLOWS_C): 0");
        assert_eq!(lines[2], "backend connections (FLOWS_S): 0");
        assert_eq!(lines[4], "pending arms (ARMS): 0");
        let v = serde_json::to_value(Flows::from_entries([], [], [])).expect("json");
        assert_eq!(v, json!({"clients": [], "backends": [], "arms": []}));
    }

    #[test]
    fn a_superseded_entry_says_so() {
        let f = ClientFlow {
            conn_id: 9,
            flags: flags::SUPERSEDED | flags::TIMESTAMPS,
            ..ClientFlow::default()
        };
        let k = key([198, 51, 100, 2], 41234, [203, 0, 113, 1], 80);
        assert_eq!(ClientRow::new(&k, &f).state, "superseded");
        let live = ClientFlow {
            flags: flags::TIMESTAMPS,
            ..f
        };
        assert_eq!(ClientRow::new(&k, &live).state, "idle");
    }

    #[test]
    fn missing_pin_dir_is_one_clear_line() {
        let e = read(Path::new("/nonexistent/distributor-test-pins")).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "no running distributor with pin dir /nonexistent/distributor-test-pins \
             (is the datapath mode off?)"
        );
    }
}
