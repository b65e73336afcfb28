//! The contenders: a name, how to start one on the gateway, and where the
//! client sends its requests. A later datapath (distributor with `xdp` or
//! `tc` splicing) is one more variant here: `proxy_config("xdp", ...)` in
//! [`Contender::start`], and its per-packet cost in
//! [`datapath_ns_per_packet`].

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
    pub const ALL: [Self; 6] = [
        Self::Routed,
        Self::Haproxy,
        Self::HaproxySplice,
        Self::NginxProxy,
        Self::DistributorRelay,
        Self::DistributorSpliceTc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Haproxy => "haproxy",
            Self::HaproxySplice => "haproxy-splice",
            Self::NginxProxy => "nginx-proxy",
            Self::DistributorRelay => "distributor-relay",
            Self::DistributorSpliceTc => "distributor-splice-tc",
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
            Self::DistributorRelay => {
                let config =
                    access_log_off(bed, &bed.proxy_config("off", &bed.two_pools_config()))?;
                (Some(bed.start_distributor(&config)?), vip)
            }
            Self::DistributorSpliceTc => {
                let config = access_log_off(bed, &bed.proxy_config("tc", &bed.two_pools_config()))?;
                (Some(bed.start_distributor(&config)?), vip)
            }
        };
        Ok(Running { daemon, base_url })
    }
}

/// HOOK(splice datapath): the eBPF datapath's cost in nanoseconds per
/// packet, from the kernel's `bpf_stats` (`run_time_ns / run_cnt` of the
/// programs the contender attached, sampled around the run, with
/// `kernel.bpf_stats_enabled=1`). No contender has a datapath yet.
pub fn datapath_ns_per_packet(_contender: Contender) -> Option<f64> {
    None
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
