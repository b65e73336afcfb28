//! distributor: per-request HTTP/1.1 load balancing with responses spliced
//! in the kernel. This binary is the control plane and its CLI.

mod admin;
mod balance;
mod config;
mod datapath;
mod http;
mod instance;
mod proxy;
mod rules;
mod track;
mod upstream;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};
use tracing::{info, warn};

use crate::{
    config::{Config, DEFAULT_PIN_DIR, DatapathMode, TimeoutsConfig},
    datapath::Datapath,
    instance::InstanceLock,
    track::{AccessLog, Metrics},
    upstream::Upstreams,
};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Parse and validate a configuration file, then exit.
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Print the datapath's counters (read from the pinned maps).
    Stats {
        /// The pin directory of the running instance.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the connections the splice datapath tracks (read from the
    /// pinned flow maps): clients, backends, and requests armed for a
    /// splice.
    Flows {
        /// The pin directory of the running instance.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    match main_inner() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain; no backtrace for users.
            eprintln!("distributor: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_inner() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            // The main loop only handles signals, the admin endpoint and
            // housekeeping; the proxy runs on its own worker threads.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(run(config))
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Stats { pin_dir, json } => {
            let snapshot = datapath::stats::read(&pin_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print!("{}", snapshot.render());
            }
            Ok(())
        }
        Command::Flows { pin_dir, json } => {
            let flows = datapath::flows::read(&pin_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&flows)?);
            } else {
                print!("{}", flows.render());
            }
            Ok(())
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let _lock = InstanceLock::acquire(&config.datapath.pin_dir)?;
    // Registered before attaching, so a signal that arrives during start-up
    // still runs the clean-up below.
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;

    let mut datapath = match config.datapath.mode {
        DatapathMode::Off => None,
        _ => Some(Datapath::start(&config.datapath)?),
    };
    let logger = match datapath.as_mut() {
        Some(dp) => Some(spawn_ebpf_logger(dp)?),
        None => None,
    };
    // Both eBPF modes splice (`xdp` adds a fast path in front of TC).
    let splice = match datapath.as_mut() {
        Some(dp) => {
            let events = dp
                .take_events()
                .context("the eBPF object has no splice event ring")?;
            // A closing socket drains as patiently as a writing one.
            let drain = TimeoutsConfig::ms(config.timeouts.client_io_ms);
            Some(datapath::splice::Splice::start(
                dp.pin_dir(),
                events,
                drain,
            )?)
        }
        _ => None,
    };
    let mut tasks = JoinSet::new();
    let closing = splice.clone();
    let workers = match config.listener.address {
        Some(addr) => Some(start_proxy(&config, addr, &mut tasks, splice).await?),
        None => None,
    };
    info!(pid = std::process::id(), "distributor running");

    tokio::select! {
        _ = sigint.recv() => info!("SIGINT: stopping"),
        _ = sigterm.recv() => info!("SIGTERM: stopping"),
    }
    // Stop accepting and drop every connection task (their sockets close).
    if let Some(w) = workers {
        w.stop();
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Connections the datapath translated finish their close through it.
    if let Some(splice) = closing {
        let cut = splice.finish_closing().await;
        if cut > 0 {
            warn!(cut, "connections still closing at stop");
        }
    }
    if let Some(task) = logger {
        task.abort();
    }
    // Detach and unpin before the lock is released.
    drop(datapath);
    info!("stopped");
    Ok(())
}

/// Starts the listener on the virtual IP, the idle-connection reaper and the
/// admin endpoint.
async fn start_proxy(
    config: &Config,
    addr: std::net::SocketAddr,
    tasks: &mut JoinSet<()>,
    splice: Option<Arc<datapath::splice::Splice>>,
) -> anyhow::Result<proxy::Workers> {
    let metrics = Arc::new(Metrics::default());
    let upstreams = Arc::new(Upstreams::new(config));
    let access_log = AccessLog::start(&config.access_log.path)?;
    let shared = Arc::new(proxy::Shared::new(
        config,
        Arc::clone(&upstreams),
        Arc::clone(&metrics),
        access_log,
        splice,
    )?);
    let workers = proxy::Workers::start(
        addr,
        config.listener.workers,
        &shared,
        config.listener.max_connections,
    )
    .with_context(|| format!("listening on {addr} (listener.address)"))?;
    tasks.spawn(proxy::expire_idle(
        Arc::clone(&upstreams),
        config::TimeoutsConfig::ms(config.timeouts.backend_idle_ms),
    ));
    if let Some(admin_addr) = config.admin.address {
        let admin = admin::bind(admin_addr)
            .await
            .with_context(|| format!("listening on {admin_addr} (admin.address)"))?;
        tasks.spawn(admin::serve(admin, metrics, upstreams));
        info!(%admin_addr, "admin endpoint: GET /metrics");
    }
    info!(%addr, pools = config.pools.len(), rules = config.rules.len(), "listening");
    Ok(workers)
}

/// Forwards `aya-log` records from the datapath to our log. The logger owns
/// the log map's file descriptor: it must live as long as the programs.
fn spawn_ebpf_logger(dp: &mut Datapath) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let logger = aya_log::EbpfLogger::init(dp.ebpf_mut()).context("starting the eBPF logger")?;
    // SAFETY: the logger owns its ring buffer's file descriptor and keeps it
    // open, unchanged, until it is dropped together with the AsyncFd.
    let mut logger = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("polling the eBPF log ring: {e}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
