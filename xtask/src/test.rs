//! `cargo xtask test`: every check in one run, one summary line at the end.
//!
//! Steps: fmt check, clippy on the workspace, clippy on the eBPF crate for
//! its target, host unit tests, then the netns end-to-end tests (root). Each
//! lint step counts as one test; each libtest test counts as one.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::{bootstrap, build_distributor, cargo, step, workspace};

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(name.to_owned());
        }
    }

    /// Prints the failures and the summary line; errors if anything failed.
    fn finish(self) -> Result<()> {
        if !self.failed.is_empty() {
            eprintln!("\nfailed:");
            for name in &self.failed {
                eprintln!("  {name}");
            }
        }
        println!("{} passed, {} failed", self.passed, self.failed.len());
        anyhow::ensure!(self.failed.is_empty(), "{} failed", self.failed.len());
        Ok(())
    }
}

pub fn lint_only() -> Result<()> {
    let tools = bootstrap::ensure(&[])?;
    let mut tally = Tally::default();
    lint(&tools, &mut tally);
    tally.finish()
}

pub fn run(filter: Option<&str>) -> Result<()> {
    anyhow::ensure!(
        crate::is_root(),
        "`cargo xtask test` runs eBPF programs in network namespaces and needs root"
    );
    let packages = [bootstrap::TESTBED, bootstrap::TESTS].concat();
    let tools = bootstrap::ensure(&packages)?;
    let mut tally = Tally::default();
    if filter.is_none() {
        lint(&tools, &mut tally);
        step("host unit tests");
        let mut cmd = cargo();
        cmd.args([
            "test",
            "--workspace",
            "--exclude",
            "distributor-ebpf",
            "--exclude",
            "distributor-tests",
        ]);
        libtest("unit tests", &mut cmd, &mut tally);
    }

    let bin = build_distributor(false)?;
    step("end-to-end tests in network namespaces");
    let mut cmd = cargo();
    cmd.args(["test", "--package", "distributor-tests", "--"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.env("DISTRIBUTOR_BIN", &bin);
    libtest("netns tests", &mut cmd, &mut tally);
    tally.finish()
}

fn lint(tools: &bootstrap::Tools, tally: &mut Tally) {
    step("cargo fmt --check");
    let ok = cargo()
        .args(["fmt", "--all", "--check"])
        .status()
        .is_ok_and(|s| s.success());
    tally.record("lint: cargo fmt --check", ok);

    step("clippy: workspace (host)");
    let ok = cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "distributor-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .status()
        .is_ok_and(|s| s.success());
    tally.record("lint: clippy workspace", ok);

    step("clippy: distributor-ebpf (bpfel-unknown-none)");
    // Run from the crate's folder so its .cargo/config.toml (target,
    // build-std) applies, on the pinned nightly.
    let ok = Command::new("rustup")
        .args([
            "run",
            &tools.toolchain,
            "cargo",
            "clippy",
            "--release",
            "--",
        ])
        .args(["-D", "warnings"])
        .current_dir(workspace().join("distributor-ebpf"))
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .env("PATH", prepend_path(&tools.linker_bin))
        .status()
        .is_ok_and(|s| s.success());
    tally.record("lint: clippy distributor-ebpf", ok);
}

fn prepend_path(dir: &std::path::Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
        .unwrap_or(path)
}

/// Runs a libtest command, streaming its output, and records every
/// `test NAME ... ok|FAILED` line. A command that fails without any failed
/// test (a build error) counts as one failure named `what`.
fn libtest(what: &str, cmd: &mut Command, tally: &mut Tally) {
    let child = cmd.stdout(Stdio::piped()).spawn();
    let mut child = match child.with_context(|| format!("starting {what}")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            tally.record(what, false);
            return;
        }
    };
    let before = tally.failed.len();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test ")
                && let Some((name, verdict)) = rest.rsplit_once(" ... ")
            {
                match verdict.trim() {
                    "ok" => tally.record(name, true),
                    v if v.starts_with("FAILED") => tally.record(name, false),
                    _ => {}
                }
            }
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    if !ok && tally.failed.len() == before {
        tally.record(what, false);
    }
}
