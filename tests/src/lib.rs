//! The namespace testbed shared by the demo, the end-to-end tests and the
//! benchmark.
//!
//! One [`Testbed`] is a client namespace, a gateway namespace and N backend
//! namespaces, each backend on its own host address, joined by veth links:
//!
//! ```text
//!  client ns               gateway ns                       backend ns (one per backend)
//!  eth0 198.51.100.2 ---- c0 198.51.100.1
//!                          lo 203.0.113.1 (virtual IP)
//!                          b1 192.0.2.5/30 -------------- eth0 192.0.2.6   nginx "b1"
//!                          b2 192.0.2.9/30 -------------- eth0 192.0.2.10  nginx "b2"
//!                          ...
//! ```
//!
//! Only documentation address ranges are used, and only inside namespaces the
//! testbed creates. Names carry the creating process id and a counter, so
//! parallel tests never collide, and a run that was killed leaves names that
//! the next run recognises (dead pid) and removes. Everything is torn down on
//! drop, also when a test panics.

mod backend;
mod baseline;
mod client;
mod gateway;
mod netns;
mod peers;
mod process;
pub mod progtest;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};

pub use crate::{
    backend::{Backend, Object},
    baseline::{flow_rows, poll},
    client::{Request, Response},
    gateway::ADMIN_PORT,
    gateway::{
        bpftool_dump, bpftool_dump_raw, distributor_bin, pinned_map_id, program_ids_using_map,
        programs_using_map,
    },
    netns::Netns,
    peers::{HaproxyOptions, PeerPools},
    process::Daemon,
};

/// Prefix of every namespace the testbed creates.
pub const NS_PREFIX: &str = "dist-";

/// Counters a splice must leave at zero at its endpoints: a segment
/// dropped for a bad checksum, for an old timestamp (PAWS), or for a bad
/// SACK block.
pub const NSTAT_SPLICE_ZERO: [&str; 3] =
    ["TcpInCsumErrors", "TcpExtPAWSEstab", "TcpExtTCPSACKDiscard"];
/// The gateway's address on the client side.
pub const GATEWAY_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The virtual IP the balancer serves on (on the gateway's loopback).
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The gateway's client-side interface.
pub const CLIENT_IFACE: &str = "c0";

/// What to build.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Number of backends (1..=60).
    pub backends: usize,
    /// Object sizes every backend serves at `/obj/<size>`, random content
    /// that differs per backend (so a body's sha256 also says who sent it).
    pub object_sizes: Vec<usize>,
    /// Extra nginx directives for the `server` block of some backends, by
    /// name (`b1`, ...): e.g. `limit_rate 64k;` to make one slow.
    pub backend_directives: Vec<(String, String)>,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        Self {
            backends: 3,
            object_sizes: vec![1024, 64 * 1024],
            backend_directives: Vec::new(),
        }
    }
}

/// A running testbed. Dropping it stops every process in its namespaces and
/// deletes them.
pub struct Testbed {
    /// Unique id of this testbed: `<pid>-<n>`.
    pub id: String,
    pub client: Netns,
    pub gateway: Netns,
    pub backends: Vec<Backend>,
    /// Scratch folder (configs, logs, nginx roots); removed on drop.
    pub dir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    /// Builds the namespaces, links and routes, and starts one nginx per
    /// backend.
    pub fn new(config: &TestbedConfig) -> Result<Self> {
        anyhow::ensure!(
            (1..=60).contains(&config.backends),
            "backends must be 1..=60, not {}",
            config.backends
        );
        netns::remove_stale()?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("distributor-testbed-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        // From here on, Drop undoes whatever part of the set-up succeeded.
        let mut bed = Self {
            client: Netns::create(&format!("{NS_PREFIX}{id}-cli"))?,
            gateway: Netns::create(&format!("{NS_PREFIX}{id}-gw"))?,
            backends: Vec::new(),
            id,
            dir,
        };
        bed.wire_client()?;
        for i in 1..=config.backends {
            let name = format!("b{i}");
            let extra: String = config
                .backend_directives
                .iter()
                .filter(|(b, _)| *b == name)
                .map(|(_, d)| d.as_str())
                .collect();
            let backend = Backend::create(&bed, i, &config.object_sizes, &extra)?;
            bed.backends.push(backend);
        }
        for b in &mut bed.backends {
            b.wait_ready()?;
        }
        Ok(bed)
    }

    fn wire_client(&self) -> Result<()> {
        let gw = &self.gateway;
        let cli = &self.client;
        gw.ip(&[
            "link",
            "add",
            "name",
            CLIENT_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &cli.name,
        ])?;
        gw.ip(&[
            "addr",
            "add",
            &format!("{GATEWAY_CLIENT_ADDR}/24"),
            "dev",
            CLIENT_IFACE,
        ])?;
        gw.ip(&["link", "set", "dev", CLIENT_IFACE, "up"])?;
        gw.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        cli.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        cli.ip(&["link", "set", "dev", "eth0", "up"])?;
        cli.ip(&[
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_CLIENT_ADDR.to_string(),
        ])?;
        Ok(())
    }

    /// A pools config: one pool "all" of every backend, round robin, so
    /// consecutive requests on one connection switch backends.
    #[must_use]
    pub fn round_robin_config(&self) -> String {
        let servers: Vec<String> = self
            .backends
            .iter()
            .map(|b| format!("{{ address = \"{}:{}\" }}", b.addr, b.port))
            .collect();
        format!(
            "default_pool = \"all\"\n\n[[pools]]\nname = \"all\"\npolicy = \"round-robin\"\n\
             servers = [{}]\n",
            servers.join(", ")
        )
    }

    /// A testbed for a test: needs root (says how to run otherwise) and
    /// panics if it cannot be built.
    #[must_use]
    pub fn for_test(config: &TestbedConfig) -> Self {
        assert!(
            is_root(),
            "these tests need root: run them with `cargo xtask test`"
        );
        Self::new(config).expect("building the testbed")
    }

    /// The counters of [`NSTAT_SPLICE_ZERO`] that are not zero, on the
    /// client and every backend, keyed `who:name`.
    #[must_use]
    pub fn nstat_splice_errors(&self) -> std::collections::BTreeMap<String, u64> {
        self.nstat_nonzero(&NSTAT_SPLICE_ZERO)
    }

    /// The `nstat` counters among `names` that are not zero, on the client
    /// and every backend, keyed `who:name`.
    #[must_use]
    pub fn nstat_nonzero(&self, names: &[&str]) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        let endpoints = std::iter::once(("client", &self.client))
            .chain(self.backends.iter().map(|b| (b.name.as_str(), &b.ns)));
        for (who, ns) in endpoints {
            let counters = ns.nstat().expect("nstat");
            for name in names {
                let v = counters.get(*name).copied().unwrap_or(0);
                if v != 0 {
                    out.insert(format!("{who}:{name}"), v);
                }
            }
        }
        out
    }

    /// Asserts every response: status 200, a known backend, and the body's
    /// length and sha256 against the object of `sizes[i]` that backend
    /// serves.
    pub fn check_bodies(&self, responses: &[Response], sizes: &[usize]) {
        assert_eq!(responses.len(), sizes.len());
        for (r, size) in responses.iter().zip(sizes) {
            assert_eq!(r.status, 200, "{}", r.url);
            let backend = self
                .backend(r.backend())
                .unwrap_or_else(|| panic!("{}: unknown backend {:?}", r.url, r.backend()));
            let obj = backend.object(*size).expect("object");
            assert_eq!(r.body.len(), *size, "{} from {}", r.url, r.backend());
            assert_eq!(
                r.sha256(),
                obj.sha256,
                "{} from {}: body differs",
                r.url,
                r.backend()
            );
        }
    }

    /// Readies the peers for the `xdp` datapath mode's fast path, which
    /// redirects frames between veth links before any skb exists (`true`),
    /// or puts back the veth defaults (`false`):
    /// - tx checksumming off on the client and the backends, so frames carry
    ///   full checksums as they do from a NIC (an offloaded checksum is only
    ///   the pseudo-header sum, completed by no one after a redirect);
    /// - GRO on the client's end: a veth receives redirected frames only
    ///   with NAPI on (GRO or an XDP program of its own).
    pub fn xdp_peers(&self, ready: bool) -> Result<()> {
        let (tx, gro) = if ready { ("off", "on") } else { ("on", "off") };
        self.client
            .run("ethtool", &["-K", "eth0", "tx", tx, "gro", gro])?;
        for b in &self.backends {
            b.ns.run("ethtool", &["-K", "eth0", "tx", tx])?;
        }
        Ok(())
    }

    /// The gateway's interface names: the client side first, then one per
    /// backend.
    #[must_use]
    pub fn gateway_interfaces(&self) -> Vec<String> {
        std::iter::once(CLIENT_IFACE.to_owned())
            .chain(self.backends.iter().map(|b| b.gateway_iface.clone()))
            .collect()
    }

    /// A bpffs pin directory unique to this testbed.
    #[must_use]
    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/distributor-test-{}", self.id))
    }

    /// Writes `text` to `name` in the scratch folder and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The backend called `name` (`b1`, `b2`, ...).
    #[must_use]
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for b in &mut self.backends {
            b.stop();
        }
        for ns in std::iter::once(&self.client)
            .chain(std::iter::once(&self.gateway))
            .chain(self.backends.iter().map(|b| &b.ns))
        {
            ns.destroy();
        }
        if std::env::var_os("DISTRIBUTOR_KEEP_TESTBED_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A counter of the `splice` section of `distributor stats --json` (0 when
/// absent).
#[must_use]
pub fn splice_counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["splice"][name].as_u64().unwrap_or(0)
}

/// Hex sha256 of `data`.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(data);
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether we run as root (the testbed needs it).
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Path of a file under the workspace root.
#[must_use]
pub fn workspace_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(rel), |root| root.join(rel))
}
