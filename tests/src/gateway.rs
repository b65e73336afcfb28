//! distributor on the testbed's gateway.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{Daemon, Testbed, workspace_path};

/// The admin endpoint's port (on the gateway's 127.0.0.1).
pub const ADMIN_PORT: u16 = 9100;

/// The distributor binary: `$DISTRIBUTOR_BIN` (set by `cargo xtask test`),
/// else the workspace's debug build.
#[must_use]
pub fn distributor_bin() -> PathBuf {
    std::env::var_os("DISTRIBUTOR_BIN")
        .map_or_else(|| workspace_path("target/debug/distributor"), PathBuf::from)
}

impl Testbed {
    /// A configuration for this testbed: `mode` on all gateway interfaces,
    /// maps pinned in this testbed's own pin directory.
    #[must_use]
    pub fn distributor_config(&self, mode: &str) -> String {
        format!(
            "[datapath]\nmode = \"{mode}\"\ninterfaces = {:?}\npin_dir = \"{}\"\n",
            self.gateway_interfaces(),
            self.pin_dir().display()
        )
    }

    /// A proxy configuration: the listener on the virtual IP port 80, the
    /// admin endpoint on the gateway's loopback, the access log in the
    /// scratch folder, datapath `mode`, and `pools_and_rules` (TOML: the
    /// `default_pool` line, `[[pools]]` and `[[rules]]`).
    #[must_use]
    pub fn proxy_config(&self, mode: &str, pools_and_rules: &str) -> String {
        format!(
            // Top-level keys (default_pool) must come before any table.
            "{pools_and_rules}\n\n[listener]\naddress = \"{vip}:80\"\n\n\
             [admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
             [access_log]\npath = \"{log}\"\n\n{datapath}\n",
            vip = crate::VIP,
            admin = ADMIN_PORT,
            log = self.access_log_path().display(),
            datapath = self.distributor_config(mode),
        )
    }

    /// The pools and rules of the demo and the benchmark: b1 is the
    /// high-priority pool (cookie `tier=gold` or a user id `vip-*` in
    /// `X-User`), b2 and b3 take everything else; least-load in each.
    /// Needs three backends.
    #[must_use]
    pub fn two_pools_config(&self) -> String {
        self.two_pools_config_with("least-load")
    }

    /// [`Self::two_pools_config`] with `default_policy` in the default pool
    /// (`round-robin` makes consecutive requests change backends).
    #[must_use]
    pub fn two_pools_config_with(&self, default_policy: &str) -> String {
        let a = |i: usize| format!("{}:{}", self.backends[i].addr, self.backends[i].port);
        format!(
            r#"default_pool = "default"

[[pools]]
name = "priority"
policy = "least-load"
servers = [{{ address = "{b1}" }}]

[[pools]]
name = "default"
policy = "{default_policy}"
servers = [{{ address = "{b2}" }}, {{ address = "{b3}" }}]

[[rules]]
name = "gold-cookie"
pool = "priority"
when = {{ cookie = {{ name = "tier", equals = "gold" }} }}

[[rules]]
name = "vip-user"
pool = "priority"
when = {{ user = {{ from = "header", name = "x-user", regex = "^vip-" }} }}
"#,
            b1 = a(0),
            b2 = a(1),
            b3 = a(2)
        )
    }

    /// Where [`Self::proxy_config`] puts the access log.
    #[must_use]
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    /// The access log's records so far.
    pub fn access_log(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("access log line {l:?}")))
            .collect()
    }

    /// The access log once it holds at least `n` records (a record is
    /// written when its exchange ends, which for a spliced response is the
    /// client's last ACK: it may trail the client by a moment). Waits at
    /// most 5 s, then returns what there is.
    pub fn access_log_at_least(&self, n: usize) -> Result<Vec<serde_json::Value>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let log = self.access_log()?;
            if log.len() >= n || std::time::Instant::now() >= deadline {
                return Ok(log);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `distributor flows --json` on this testbed's pins.
    pub fn flows(&self) -> Result<serde_json::Value> {
        let out = self.distributor_cli(&[
            "flows",
            "--json",
            "--pin-dir",
            &self.pin_dir().display().to_string(),
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "distributor flows: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("flows json")
    }

    /// `GET /metrics` from the admin endpoint.
    pub fn metrics(&self) -> Result<String> {
        self.gateway.run(
            "curl",
            &[
                "-sf",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{ADMIN_PORT}/metrics"),
            ],
        )
    }

    /// `http://<virtual IP>` + `path`.
    #[must_use]
    pub fn vip_url(&self, path: &str) -> String {
        format!("http://{}{path}", crate::VIP)
    }

    /// Starts `distributor run` in the gateway namespace with `config` and
    /// waits until its maps are pinned (datapath modes) or it has logged
    /// that it runs.
    pub fn start_distributor(&self, config: &str) -> Result<Daemon> {
        let n = rand::random::<u32>();
        let path = self.write_file(&format!("distributor-{n}.toml"), config)?;
        let mut cmd = self.gateway.command(&distributor_bin().to_string_lossy());
        cmd.arg("run").arg("--config").arg(&path);
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        let mut daemon = Daemon::spawn(
            "distributor",
            cmd,
            self.dir.join(format!("distributor-{n}.log")),
        )?;
        let log = daemon.log.clone();
        daemon.wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("distributor running"))
        })?;
        Ok(daemon)
    }

    /// Runs the distributor CLI in the gateway namespace (exit status not
    /// checked).
    pub fn distributor_cli(&self, args: &[&str]) -> Result<Output> {
        self.gateway
            .command(&distributor_bin().to_string_lossy())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .context("running distributor")
    }

    /// `distributor stats --json` for this testbed's pin directory.
    pub fn distributor_stats(&self) -> Result<serde_json::Value> {
        let pin_dir = self.pin_dir();
        let out =
            self.distributor_cli(&["stats", "--json", "--pin-dir", &pin_dir.to_string_lossy()])?;
        anyhow::ensure!(
            out.status.success(),
            "distributor stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).context("parsing distributor stats --json")
    }
}

/// `bpftool map dump pinned PATH` as JSON.
pub fn bpftool_dump(path: &std::path::Path) -> Result<serde_json::Value> {
    serde_json::from_slice(&bpftool_dump_raw(path, true)?).context("parsing bpftool output")
}

/// The output of `bpftool [--json] map dump pinned PATH`.
pub fn bpftool_dump_raw(path: &std::path::Path, json: bool) -> Result<Vec<u8>> {
    let mut cmd = Command::new("bpftool");
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .args(["map", "dump", "pinned"])
        .arg(path)
        .output()
        .context("running bpftool")?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool map dump pinned {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// The kernel id of the map pinned at `path`.
pub fn pinned_map_id(path: &std::path::Path) -> Result<u64> {
    let out = Command::new("bpftool")
        .args(["--json", "map", "show", "pinned"])
        .arg(path)
        .output()
        .context("running bpftool")?;
    anyhow::ensure!(out.status.success(), "no map pinned at {}", path.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["id"].as_u64().context("map without id")
}

/// `bpftool prog show` entries of the loaded programs that use map
/// `map_id`: exactly the programs of the instance that created the map
/// (the kernel frees a program once its links and file descriptors are
/// gone).
fn programs_with_map(map_id: u64) -> Result<Vec<serde_json::Value>> {
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .context("running bpftool")?;
    anyhow::ensure!(out.status.success(), "bpftool prog show failed");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["map_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| id.as_u64() == Some(map_id)))
        })
        .cloned()
        .collect())
}

/// Names of the loaded programs that use map `map_id` (see
/// [`programs_with_map`]), sorted.
pub fn programs_using_map(map_id: u64) -> Result<Vec<String>> {
    let mut names: Vec<String> = programs_with_map(map_id)?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Ids of the loaded programs that use map `map_id` (see
/// [`programs_with_map`]).
pub fn program_ids_using_map(map_id: u64) -> Result<std::collections::BTreeSet<u64>> {
    Ok(programs_with_map(map_id)?
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}
