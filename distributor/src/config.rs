//! The configuration file (TOML), its defaults and its validation.
//!
//! `distributor check-config FILE` parses and validates without touching the
//! system; `distributor run --config FILE` does the same first.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub datapath: DatapathConfig,
}

/// Which hooks carry the datapath.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathMode {
    /// XDP on ingress, TC on egress.
    #[default]
    Xdp,
    /// TC on ingress and egress.
    Tc,
    /// No eBPF at all: the control plane relays every byte.
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
        let d = &self.datapath;
        if d.mode != DatapathMode::Off && d.interfaces.is_empty() {
            return Err(ConfigError::Invalid {
                field: "datapath.interfaces",
                problem: "must name at least one interface unless datapath.mode = \"off\""
                    .to_owned(),
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
        assert_eq!(c.datapath.mode, DatapathMode::Xdp);
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
            ("[datapath]\n", "datapath.interfaces"),
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
}
