//! The contenders: a name, how to start one on the gateway, and where the
//! client sends its requests. distributor's datapath modes are variants
//! with their mode in [`Contender::distributor_mode`]; their per-packet
//! cost is measured from the kernel's program stats (`bpfstats`).

use anyhow::{Context as _, Result};
use distributor_tests::{Daemon, HaproxyOptions, Testbed};

/// Which backend the `routed` contender addresses (wrk hits one URL): b2,
/// a default-pool server, so every contender's default traffic lands on a
/// backend `routed` also loads.
const ROUTED_BACKEND: &str = "b2";

/// Threads or processes the userspace proxies get: one per core, as
/// distributor's worker threads default to on this machine.
pub const PROXY_THREADS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contender {
    /// No balancer: the client addresses one backend directly and the
    /// gateway only forwards (the path's physical limit).
    Routed,
    /// haproxy 2.6, `mode http`, `http-reuse always`, `balance leastconn`.
    Haproxy,
    /// The same with `option splice-response`.
    HaproxySplice,
    /// nginx as a reverse proxy with keep-alive upstreams, `least_conn`.
    NginxProxy,
    /// distributor with the datapath off: the control plane relays.
    DistributorRelay,
    /// distributor with the TC datapath: responses spliced in the kernel.
    DistributorSpliceTc,
    /// distributor with the XDP fast path in front of the TC datapath.
    DistributorSpliceXdp,
}

/// A started contender.
pub struct Running {
    /// The process serving the virtual IP (none for `routed`).
    pub daemon: Option<Daemon>,
    /// Scheme and host the client sends to: `http://203.0.113.1`.
    pub base_url: String,
}

impl Contender {
    /// The order they alternate in.
    pub const ALL: [Self; 7] = [
        Self::Routed,
        Self::Haproxy,
        Self::HaproxySplice,
        Self::NginxProxy,
        Self::DistributorRelay,
        Self::DistributorSpliceTc,
        Self::DistributorSpliceXdp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Haproxy => "haproxy",
            Self::HaproxySplice => "haproxy-splice",
            Self::NginxProxy => "nginx-proxy",
            Self::DistributorRelay => "distributor-relay",
            Self::DistributorSpliceTc => "distributor-splice-tc",
            Self::DistributorSpliceXdp => "distributor-splice-xdp",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// One line for the report.
    pub fn describe(self) -> String {
        match self {
            Self::Routed => format!(
                "no balancer: the client addresses {ROUTED_BACKEND} directly, the gateway \
                 forwards (kernel only); one backend, so small objects are bounded by its \
                 single nginx worker"
            ),
            Self::Haproxy => format!(
                "HAProxy, mode http, nbthread {PROXY_THREADS}, http-reuse always, balance \
                 leastconn, cookie rule, no logs"
            ),
            Self::HaproxySplice => {
                "as haproxy, plus option splice-response (bodies through kernel pipes)".to_owned()
            }
            Self::NginxProxy => format!(
                "nginx reverse proxy, worker_processes {PROXY_THREADS}, least_conn, upstream \
                 keepalive 256, map $cookie_tier, no access log"
            ),
            Self::DistributorRelay => {
                "distributor, datapath off (relay), least-load pools, cookie rule, access log \
                 off, 2 worker threads (one event loop and SO_REUSEPORT listener each)"
                    .to_owned()
            }
            Self::DistributorSpliceTc => {
                "distributor, datapath tc: responses framed by Content-Length spliced in the \
                 kernel (NAT + sequence translation on TC hooks), the rest relayed; otherwise \
                 as distributor-relay"
                    .to_owned()
            }
            Self::DistributorSpliceXdp => {
                "distributor, datapath xdp: as distributor-splice-tc, with the response data \
                 segments rewritten and redirected on XDP; on veth this needs the peers' tx \
                 checksumming off (set for this contender only, so the backends checksum \
                 and segment in software) and GRO on the client's end"
                    .to_owned()
            }
        }
    }

    /// The backends allowed to answer a request with or without the gold
    /// cookie.
    pub fn expected_backends(self, gold: bool) -> &'static [&'static str] {
        match self {
            Self::Routed => &[ROUTED_BACKEND],
            _ if gold => &["b1"],
            _ => &["b2", "b3"],
        }
    }

    /// Starts the contender on the gateway and waits until it serves.
    pub fn start(self, bed: &Testbed) -> Result<Running> {
        let vip = bed.vip_url("");
        let haproxy = |splice| {
            bed.start_haproxy(
                &bed.two_pool_peers(),
                HaproxyOptions {
                    threads: PROXY_THREADS,
                    splice,
                },
            )
        };
        // The peers' offloads as this contender needs them (veth defaults
        // for every other one).
        bed.xdp_peers(self == Self::DistributorSpliceXdp)?;
        let (daemon, base_url) = match self {
            Self::Routed => {
                let b = bed
                    .backend(ROUTED_BACKEND)
                    .context("the testbed lacks the routed backend")?;
                (None, b.url())
            }
            Self::Haproxy => (Some(haproxy(false)?), vip),
            Self::HaproxySplice => (Some(haproxy(true)?), vip),
            Self::NginxProxy => (
                Some(bed.start_nginx_proxy(&bed.two_pool_peers(), PROXY_THREADS)?),
                vip,
            ),
            Self::DistributorRelay | Self::DistributorSpliceTc | Self::DistributorSpliceXdp => {
                let mode = self.distributor_mode().unwrap_or("off");
                let config = access_log_off(bed, &bed.proxy_config(mode, &bed.two_pools_config()))?;
                (Some(bed.start_distributor(&config)?), vip)
            }
        };
        Ok(Running { daemon, base_url })
    }

    /// distributor's `[datapath] mode` for this contender (None: not
    /// distributor).
    pub fn distributor_mode(self) -> Option<&'static str> {
        match self {
            Self::DistributorRelay => Some("off"),
            Self::DistributorSpliceTc => Some("tc"),
            Self::DistributorSpliceXdp => Some("xdp"),
            Self::Routed | Self::Haproxy | Self::HaproxySplice | Self::NginxProxy => None,
        }
    }

    /// Whether the contender runs distributor's eBPF programs, whose cost
    /// per packet the run then reads from the kernel (`bpfstats`). Mode
    /// `off` loads none.
    pub fn has_datapath(self) -> bool {
        self.distributor_mode().is_some_and(|mode| mode != "off")
    }
}

/// The peers run without logs; distributor's per-request JSON access log
/// would otherwise be measured as part of its cost.
fn access_log_off(bed: &Testbed, config: &str) -> Result<String> {
    let line = format!("path = \"{}\"", bed.access_log_path().display());
    anyhow::ensure!(
        config.contains(&line),
        "the testbed's proxy config no longer has {line:?}"
    );
    Ok(config.replace(&line, "path = \"off\""))
}
