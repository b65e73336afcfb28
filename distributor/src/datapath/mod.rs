//! The eBPF datapath: loads the object built by `build.rs`, attaches its
//! programs to the gateway's interfaces, pins its maps and owns the map
//! handles. Dropping a [`Datapath`] detaches everything and removes the pins.

pub mod closing;
pub mod flows;
pub mod sockets;
pub mod splice;
pub mod stats;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Mutex, MutexGuard, PoisonError},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use distributor_common::{flow, maps};
use tracing::{info, warn};

use crate::{
    config::{DatapathConfig, DatapathMode},
    instance,
};

/// Locks `m`, also after a thread panicked holding it: the datapath's
/// shared state (map handles, waiters, closing sockets) stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The eBPF object, 8-byte aligned as the ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/distributor"));

/// Program names, as in `distributor-ebpf/src/main.rs`.
const PROG_XDP: &str = "dist_xdp";
const PROG_TC_IN: &str = "dist_tc_in";
const PROG_TC_OUT: &str = "dist_tc_out";

/// The maps we pin (the log ring buffer and the programs' scratch maps
/// stay private; so does the event ring buffer, which only this process
/// reads).
const PINNED_MAPS: [&str; 6] = [
    maps::IFACE_STATS,
    maps::REASONS,
    flow::FLOWS_C,
    flow::FLOWS_S,
    flow::ARMS,
    flow::SPLICE_STATS,
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error(
        "attaching {name} to interface {iface}: {source} \
         (does the interface exist in this network namespace, and is another \
         XDP/TC program already attached to it?)"
    )]
    Attach {
        name: &'static str,
        iface: String,
        source: aya::programs::ProgramError,
    },
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error(transparent)]
    Instance(#[from] instance::InstanceError),
}

/// A loaded and attached datapath.
pub struct Datapath {
    // Field order is drop order: links (inside `ebpf`) go before the pins
    // are removed in `Drop`.
    ebpf: Ebpf,
    pin_dir: PathBuf,
    interfaces: Vec<String>,
}

impl Datapath {
    /// Loads the programs, attaches them as `config.mode` says and pins the
    /// maps under `config.pin_dir`. The caller holds the instance lock, so
    /// anything already in the pin directory is a crashed instance's.
    pub fn start(config: &DatapathConfig) -> Result<Self, DatapathError> {
        instance::ensure_bpffs(&config.pin_dir)?;
        let leftovers = instance::reset_pin_dir(&config.pin_dir)?;
        if !leftovers.is_empty() {
            warn!(
                pin_dir = %config.pin_dir.display(),
                ?leftovers,
                "removed pins left by an instance that did not stop cleanly"
            );
        }

        let ebpf = EbpfLoader::new().load(OBJECT)?;
        // From here on, `Drop` cleans up whatever part of the start succeeded.
        let mut dp = Self {
            ebpf,
            pin_dir: config.pin_dir.clone(),
            interfaces: Vec::new(),
        };
        dp.attach(config)?;
        dp.pin()?;
        Ok(dp)
    }

    fn attach(&mut self, config: &DatapathConfig) -> Result<(), DatapathError> {
        // A set: naming an interface twice must not attach twice.
        let ifaces: BTreeSet<&str> = config.interfaces.iter().map(String::as_str).collect();

        if config.mode == DatapathMode::Xdp {
            let prog: &mut Xdp = self.program(PROG_XDP)?;
            prog.load().map_err(|source| DatapathError::Program {
                name: PROG_XDP,
                source,
            })?;
            for iface in &ifaces {
                // bpf_link attach: the kernel detaches it when our last file
                // descriptor closes, so a crash cannot leave it behind.
                prog.attach(iface, XdpMode::default())
                    .map_err(|source| DatapathError::Attach {
                        name: PROG_XDP,
                        iface: (*iface).to_owned(),
                        source,
                    })?;
            }
        }

        // TC on both hooks in both modes: in `xdp` mode the XDP program
        // splices the bulk of a response and passes everything else to TC
        // ingress.
        let tc = [
            (PROG_TC_OUT, TcAttachType::Egress),
            (PROG_TC_IN, TcAttachType::Ingress),
        ];
        for (name, attach_type) in tc {
            let prog: &mut SchedClassifier = self.program(name)?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
            for iface in &ifaces {
                // TCX link (kernel >= 6.6): no qdisc needed, detached on exit.
                prog.attach(iface, attach_type)
                    .map_err(|source| DatapathError::Attach {
                        name,
                        iface: (*iface).to_owned(),
                        source,
                    })?;
            }
        }
        self.interfaces = ifaces.into_iter().map(str::to_owned).collect();
        info!(mode = ?config.mode, interfaces = ?self.interfaces, "datapath attached");
        Ok(())
    }

    fn program<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, DatapathError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let prog = self.ebpf.program_mut(name).ok_or(DatapathError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?;
        prog.try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    fn pin(&self) -> Result<(), DatapathError> {
        for name in PINNED_MAPS {
            let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            let path = self.pin_dir.join(name);
            map.pin(&path).map_err(|source| DatapathError::Pin {
                name,
                path: path.clone(),
                source,
            })?;
        }
        info!(pin_dir = %self.pin_dir.display(), maps = ?PINNED_MAPS, "maps pinned");
        Ok(())
    }

    /// The splice event ring buffer (taken once; the control plane reads
    /// it).
    pub fn take_events(&mut self) -> Option<aya::maps::Map> {
        self.ebpf.take_map(flow::EVENTS)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self.pin_dir
    }

    /// The eBPF object, for the logger.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Links detach when `ebpf` drops right after this; the pins would
        // keep the maps alive, so remove them now.
        match instance::remove_pin_dir(&self.pin_dir) {
            Ok(removed) => info!(pin_dir = %self.pin_dir.display(), ?removed, "pins removed"),
            Err(e) => warn!("removing pins: {e}"),
        }
        info!(interfaces = ?self.interfaces, "datapath detached");
    }
}
