//! The configuration file (TOML), its defaults and its validation.
//!
//! `distributor check-config FILE` parses and validates without touching the
//! system; `distributor run --config FILE` does the same first.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    balance::Policy,
    rules::{KeySource, RuleConfig, RuleSet},
};

/// Default pin directory: `bpftool map dump pinned /sys/fs/bpf/distributor/NAME`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/distributor";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// The whole configuration file. Every section is optional; see
/// `distributor.example.toml` for an annotated example.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listener: ListenerConfig,
    pub admin: AdminConfig,
    pub access_log: AccessLogConfig,
    pub limits: LimitsConfig,
    pub timeouts: TimeoutsConfig,
    pub backend_connections: BackendConnectionsConfig,
    pub datapath: DatapathConfig,
    /// The pool for requests no rule matches.
    pub default_pool: Option<String>,
    pub pools: Vec<PoolConfig>,
    pub rules: Vec<RuleConfig>,
}

/// `[listener]`: where clients connect (the virtual IP).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: Option<SocketAddr>,
    /// Client connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Worker threads, each with its own event loop and its own listening
    /// socket (`SO_REUSEPORT`: the kernel spreads connections). 0: one per
    /// CPU.
    pub workers: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: None,
            max_connections: 10_000,
            workers: 0,
        }
    }
}

/// `[admin]`: Prometheus `/metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub address: Option<SocketAddr>,
}

/// `[access_log]`: one JSON object per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (appended), `"-"` for standard output, or `"off"`.
    pub path: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            path: "-".to_owned(),
        }
    }
}

/// `[limits]`: caps on what a client may send.
#[expect(
    clippy::struct_field_names,
    reason = "`max_` reads as a cap where the fields are set"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest request line (414 beyond).
    pub max_request_line: usize,
    /// Largest request head (431 beyond).
    pub max_head_bytes: usize,
    /// Most header fields (431 beyond).
    pub max_headers: usize,
    /// Largest request body (413 beyond). Bodies are read whole before the
    /// request goes to a backend, so a retry can resend them.
    pub max_body_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `[timeouts]`, in milliseconds.
#[expect(
    clippy::struct_field_names,
    reason = "the unit in every name, as the file shows it"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// From a request's first byte to its complete head (408 beyond: the
    /// slowloris defence).
    pub client_head_ms: u64,
    /// An idle keep-alive client connection is closed after this.
    pub client_idle_ms: u64,
    /// Reading a request body or writing a response: no progress for this
    /// long closes the connection. Also how long a closing connection that
    /// had bytes spliced keeps its flow entry while its last bytes wait
    /// for a reader who acknowledges nothing.
    pub client_io_ms: u64,
    /// Connecting to a backend (then the next server is tried).
    pub connect_ms: u64,
    /// From sending a request to the complete response head (504 beyond).
    pub response_head_ms: u64,
    /// A response body stalling this long aborts the client connection.
    pub response_body_idle_ms: u64,
    /// Idle pooled backend connections are closed after this.
    pub backend_idle_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            client_head_ms: 10_000,
            client_idle_ms: 60_000,
            client_io_ms: 30_000,
            connect_ms: 2_000,
            response_head_ms: 30_000,
            response_body_idle_ms: 30_000,
            backend_idle_ms: 30_000,
        }
    }
}

impl TimeoutsConfig {
    pub const fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// `[backend_connections]`: the per-server connection pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConnectionsConfig {
    /// Open connections per server, busy and idle together.
    pub max_per_server: usize,
    /// Idle connections kept per server.
    pub max_idle_per_server: usize,
}

impl Default for BackendConnectionsConfig {
    fn default() -> Self {
        Self {
            max_per_server: 512,
            max_idle_per_server: 128,
        }
    }
}

/// `[[pools]]`: a named set of servers and how to choose among them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default = "default_policy")]
    pub policy: Policy,
    /// What `consistent-hash` hashes (ignored by other policies).
    #[serde(default)]
    pub hash_key: Option<KeySource>,
    pub servers: Vec<ServerConfig>,
}

fn default_policy() -> Policy {
    Policy::LeastLoad
}

/// One server of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub address: SocketAddr,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Which hooks carry the datapath.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathMode {
    /// XDP on ingress splicing response segments (the fast path), TC on
    /// ingress and egress for everything else.
    Xdp,
    /// TC on ingress and egress; TC splices.
    Tc,
    /// No eBPF at all: the control plane relays every byte.
    #[default]
    Off,
}

/// `[datapath]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatapathConfig {
    pub mode: DatapathMode,
    /// Interfaces of the gateway the programs attach to (client side and
    /// backend side).
    pub interfaces: Vec<String>,
    /// bpffs directory for the pinned maps.
    pub pin_dir: PathBuf,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            mode: DatapathMode::default(),
            interfaces: Vec::new(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates a configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_datapath()?;
        self.validate_proxy()
    }

    /// The pool for requests no rule matches: `default_pool`, or the only
    /// pool when there is one.
    #[must_use]
    pub fn default_pool_name(&self) -> Option<&str> {
        match (&self.default_pool, self.pools.as_slice()) {
            (Some(name), _) => Some(name),
            (None, [only]) => Some(&only.name),
            _ => None,
        }
    }

    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        if self.listener.address.is_none() {
            if !self.pools.is_empty() || !self.rules.is_empty() {
                return invalid(
                    "listener.address",
                    "pools are configured but no listener address".to_owned(),
                );
            }
            return Ok(());
        }
        if self.pools.is_empty() {
            return invalid(
                "pools",
                "at least one [[pools]] is needed to serve requests".to_owned(),
            );
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if pool.name.is_empty() {
                return invalid("pools.name", format!("pools[{i}] has an empty name"));
            }
            if self.pools[..i].iter().any(|p| p.name == pool.name) {
                return invalid(
                    "pools.name",
                    format!("pool {:?} is defined twice", pool.name),
                );
            }
            if pool.servers.is_empty() {
                return invalid(
                    "pools.servers",
                    format!("pool {:?} has no servers", pool.name),
                );
            }
            if pool.servers.iter().all(|s| s.weight == 0) {
                return invalid(
                    "pools.servers.weight",
                    format!("pool {:?}: every server has weight 0", pool.name),
                );
            }
            for (j, s) in pool.servers.iter().enumerate() {
                if pool.servers[..j].iter().any(|t| t.address == s.address) {
                    return invalid(
                        "pools.servers.address",
                        format!("pool {:?} lists {} twice", pool.name, s.address),
                    );
                }
            }
            if pool.policy == Policy::ConsistentHash && pool.hash_key.is_none() {
                return invalid(
                    "pools.hash_key",
                    format!(
                        "pool {:?}: policy consistent-hash needs a hash_key",
                        pool.name
                    ),
                );
            }
        }
        let known = |name: &str| self.pools.iter().any(|p| p.name == name);
        match self.default_pool_name() {
            None => {
                return invalid(
                    "default_pool",
                    "several pools: name the one for requests no rule matches".to_owned(),
                );
            }
            Some(name) if !known(name) => {
                return invalid("default_pool", format!("no pool is called {name:?}"));
            }
            Some(_) => {}
        }
        let rules = RuleSet::compile(&self.rules).map_err(|e| ConfigError::Invalid {
            field: "rules",
            problem: e.to_string(),
        })?;
        for name in rules.pools_referenced() {
            if !known(name) {
                return invalid("rules.pool", format!("no pool is called {name:?}"));
            }
        }
        let l = &self.limits;
        if l.max_headers == 0 || l.max_head_bytes < 64 || l.max_request_line < 16 {
            return invalid(
                "limits",
                "limits are too small to parse any request".to_owned(),
            );
        }
        if self.backend_connections.max_per_server == 0 {
            return invalid(
                "backend_connections.max_per_server",
                "must be at least 1".to_owned(),
            );
        }
        Ok(())
    }

    fn validate_datapath(&self) -> Result<(), ConfigError> {
        let d = &self.datapath;
        if d.mode != DatapathMode::Off && d.interfaces.is_empty() {
            return Err(ConfigError::Invalid {
                field: "datapath.interfaces",
                problem: "must name at least one interface unless datapath.mode = \"off\""
                    .to_owned(),
            });
        }
        let max = distributor_common::maps::IFACES_MAX as usize;
        if d.interfaces.len() > max {
            return Err(ConfigError::Invalid {
                field: "datapath.interfaces",
                problem: format!(
                    "{} interfaces listed; the datapath counts at most {max}",
                    d.interfaces.len()
                ),
            });
        }
        for (i, name) in d.interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 including the terminating NUL.
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(ConfigError::Invalid {
                    field: "datapath.interfaces",
                    problem: format!("{name:?} is not a valid interface name"),
                });
            }
            if d.interfaces[..i].contains(name) {
                return Err(ConfigError::Invalid {
                    field: "datapath.interfaces",
                    problem: format!("{name:?} is listed twice"),
                });
            }
        }
        if !d.pin_dir.is_absolute() {
            return Err(ConfigError::Invalid {
                field: "datapath.pin_dir",
                problem: format!("{} is not an absolute path", d.pin_dir.display()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_missing_fields() {
        let c = Config::parse("[datapath]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(c.datapath.mode, DatapathMode::Off);
        assert_eq!(c.datapath.pin_dir, Path::new(DEFAULT_PIN_DIR));
        assert_eq!(c.datapath.interfaces, ["eth0"]);
    }

    #[test]
    fn off_mode_needs_no_interfaces() {
        let c = Config::parse("[datapath]\nmode = \"off\"\n").unwrap();
        assert_eq!(c.datapath.mode, DatapathMode::Off);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[datapath]\nmode = \"xdp\"\n", "datapath.interfaces"),
            ("[datapath]\ninterfaces = [\"a\", \"a\"]\n", "listed twice"),
            (
                "[datapath]\ninterfaces = [\"a-name-longer-than-15\"]\n",
                "not a valid interface name",
            ),
            (
                "[datapath]\ninterfaces = [\"a\"]\npin_dir = \"rel\"\n",
                "datapath.pin_dir",
            ),
            ("[datapath]\nmode = \"fast\"\n", "mode"),
            ("[datapath]\ninterfaces = [\"a\"]\ntypo = 1\n", "typo"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn interfaces_fit_the_datapath_counters() {
        let list = |n: u32| {
            let names: Vec<String> = (0..n).map(|i| format!("\"e{i}\"")).collect();
            format!("[datapath]\ninterfaces = [{}]\n", names.join(", "))
        };
        let max = distributor_common::maps::IFACES_MAX;
        let c = Config::parse(&list(max)).expect("as many as the datapath counts");
        assert_eq!(c.datapath.interfaces.len(), max as usize);
        let err = Config::parse(&list(max + 1)).unwrap_err().to_string();
        assert!(err.contains("at most 32"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_annotated_example_is_valid() {
        let c = Config::parse(include_str!("../../distributor.example.toml"))
            .unwrap_or_else(|e| panic!("distributor.example.toml: {e}"));
        assert_eq!(c.pools.len(), 3);
        assert_eq!(c.rules.len(), 4);
        assert_eq!(c.default_pool_name(), Some("default"));
    }

    #[test]
    fn proxy_errors_name_the_field() {
        let pools = "[listener]\naddress = \"203.0.113.1:80\"\n";
        let cases = [
            (pools.to_owned(), "pools"),
            (
                format!("{pools}[[pools]]\nname = \"a\"\nservers = []\n"),
                "has no servers",
            ),
            (
                format!(
                    "{pools}[[pools]]\nname = \"a\"\nservers = [{{ address = \"192.0.2.1:80\" }}]\n\
                     [[pools]]\nname = \"b\"\nservers = [{{ address = \"192.0.2.2:80\" }}]\n"
                ),
                "default_pool",
            ),
            (
                format!(
                    "{pools}[[pools]]\nname = \"a\"\nservers = [{{ address = \"192.0.2.1:80\" }}]\n\
                     [[rules]]\nname = \"r\"\npool = \"nope\"\nwhen = {{ path = {{ prefix = \"/\" }} }}\n"
                ),
                "no pool is called \"nope\"",
            ),
            (
                format!(
                    "{pools}[[pools]]\nname = \"a\"\npolicy = \"consistent-hash\"\n\
                     servers = [{{ address = \"192.0.2.1:80\" }}]\n"
                ),
                "hash_key",
            ),
            (
                format!(
                    "{pools}[[pools]]\nname = \"a\"\nservers = [{{ address = \"nonsense\" }}]\n"
                ),
                "address",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }
}
