//! The backends: pools of servers, the load each server carries, selection
//! within a pool, and each server's pool of keep-alive connections.
//!
//! Built once from the configuration into an immutable snapshot
//! ([`Upstreams`], shared behind an `Arc`); only the counters inside change.

pub mod connpool;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    balance::{self, Candidate, Selector},
    config::{BackendConnectionsConfig, Config, PoolConfig},
    rules::{KeySource, RequestView},
};

pub use connpool::{BackendConn, ConnPool};

/// One backend server.
#[derive(Debug)]
pub struct Server {
    /// `address` as text: the id in logs, metrics and the hash ring
    /// (shared, so a request record takes it without allocating).
    pub id: Arc<str>,
    pub address: SocketAddr,
    pub weight: u32,
    /// Requests sent to this server whose response is not finished, across
    /// all client connections: what least-load compares.
    in_flight: AtomicU64,
    /// Keep-alive connections to this server.
    pub conns: ConnPool,
}

impl Server {
    fn new(address: SocketAddr, weight: u32, limits: &BackendConnectionsConfig) -> Self {
        Self {
            id: address.to_string().into(),
            address,
            weight,
            in_flight: AtomicU64::new(0),
            conns: ConnPool::new(address, limits),
        }
    }

    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts one request in flight on a server until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Server>);

impl InFlight {
    #[must_use]
    pub fn new(server: &Arc<Server>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(server))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of servers with its selection policy.
#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub servers: Vec<Arc<Server>>,
    selector: Box<dyn Selector>,
    hash_key: Option<KeySource>,
}

impl Pool {
    /// Picks a server for `req`, skipping those in `tried` (servers that
    /// already failed to connect for this request).
    #[must_use]
    pub fn select(&self, req: &RequestView<'_>, tried: &[usize]) -> Option<usize> {
        let candidates: Vec<Candidate> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Candidate {
                weight: s.weight,
                in_flight: s.in_flight(),
                available: s.weight > 0 && !tried.contains(&i),
            })
            .collect();
        let key = self.hash_key.as_ref().and_then(|k| k.extract(req));
        self.selector.select(&candidates, key.as_deref())
    }
}

/// Every pool, and which one takes unmatched requests.
#[derive(Debug)]
pub struct Upstreams {
    pub pools: Vec<Pool>,
    by_name: HashMap<String, usize>,
    default_pool: usize,
}

impl Upstreams {
    /// Builds the pools of a validated configuration. A server listed in
    /// several pools is one [`Server`] (one load counter, one connection
    /// pool), so least-load sees all its requests.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let mut servers: HashMap<SocketAddr, Arc<Server>> = HashMap::new();
        let pools: Vec<Pool> = config
            .pools
            .iter()
            .map(|p| build_pool(p, &mut servers, &config.backend_connections))
            .collect();
        let by_name: HashMap<String, usize> = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.to_string(), i))
            .collect();
        let default_pool = config
            .default_pool_name()
            .and_then(|n| by_name.get(n).copied())
            .unwrap_or(0);
        Self {
            pools,
            by_name,
            default_pool,
        }
    }

    /// The pool called `name`, or the default pool.
    #[must_use]
    pub fn pool(&self, name: Option<&str>) -> &Pool {
        let i = name
            .and_then(|n| self.by_name.get(n).copied())
            .unwrap_or(self.default_pool);
        &self.pools[i]
    }

    /// Every distinct server.
    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        let mut seen = Vec::new();
        self.pools
            .iter()
            .flat_map(|p| p.servers.iter())
            .filter(move |s| {
                if seen.contains(&s.address) {
                    false
                } else {
                    seen.push(s.address);
                    true
                }
            })
    }
}

fn build_pool(
    p: &PoolConfig,
    servers: &mut HashMap<SocketAddr, Arc<Server>>,
    limits: &BackendConnectionsConfig,
) -> Pool {
    let members: Vec<Arc<Server>> = p
        .servers
        .iter()
        .map(|s| {
            Arc::clone(
                servers
                    .entry(s.address)
                    .or_insert_with(|| Arc::new(Server::new(s.address, s.weight, limits))),
            )
        })
        .collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.to_string()).collect();
    let weights: Vec<u32> = p.servers.iter().map(|s| s.weight).collect();
    Pool {
        name: p.name.as_str().into(),
        selector: balance::build(p.policy, &ids, &weights),
        servers: members,
        hash_key: p.hash_key.clone(),
    }
}
