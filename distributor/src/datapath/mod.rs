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
    maps::{PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode},
};
use distributor_common::{
    Counters, flow,
    maps::{self, IFACES_MAX, hook, stats_index},
};
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
    #[error("interface {iface} does not exist in this network namespace")]
    NoInterface { iface: String },
    #[error("at most {IFACES_MAX} interfaces, {0} listed")]
    TooManyInterfaces(usize),
    #[error("labelling the interface counters: {0}")]
    Counters(String),
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
        // A set: naming an interface twice must not attach twice. Its order
        // is the counters' slot order. Resolved before anything is
        // created, so a missing interface leaves nothing behind.
        let ifaces: BTreeSet<&str> = config.interfaces.iter().map(String::as_str).collect();
        let ifindexes = ifindex_table(&ifaces)?;
        instance::ensure_bpffs(&config.pin_dir)?;
        let leftovers = instance::reset_pin_dir(&config.pin_dir)?;
        if !leftovers.is_empty() {
            warn!(
                pin_dir = %config.pin_dir.display(),
                ?leftovers,
                "removed pins left by an instance that did not stop cleanly"
            );
        }

        let ebpf = EbpfLoader::new()
            .override_global(maps::IFINDEXES, ifindexes.as_slice(), true)
            .load(OBJECT)?;
        // From here on, `Drop` cleans up whatever part of the start succeeded.
        let mut dp = Self {
            ebpf,
            pin_dir: config.pin_dir.clone(),
            interfaces: Vec::new(),
        };
        dp.label_counters(&ifindexes, config.mode)?;
        dp.attach(config.mode, ifaces)?;
        dp.pin()?;
        Ok(dp)
    }

    /// Names the entries of the interface counters that `mode` uses (all
    /// CPUs), before any program runs: `bpftool map dump` then shows which
    /// interface and hook each entry counts, and `distributor stats` lists
    /// no hook that is not attached.
    fn label_counters(
        &mut self,
        ifindexes: &[u32],
        mode: DatapathMode,
    ) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(maps::IFACE_STATS)
            .ok_or(DatapathError::MissingMap(maps::IFACE_STATS))?;
        let mut stats: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(map).map_err(|e| DatapathError::Counters(e.to_string()))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DatapathError::Counters(format!("{what}: {e}")))?;
        for (slot, &ifindex) in (0..).zip(ifindexes.iter().take_while(|&&i| i != 0)) {
            let hooks =
                (0..hook::COUNT).filter(|&h| h != hook::XDP_INGRESS || mode == DatapathMode::Xdp);
            for h in hooks {
                let values = PerCpuValues::try_from(vec![Counters::labelled(ifindex, h); cpus])
                    .map_err(|e| DatapathError::Counters(e.to_string()))?;
                stats
                    .set(stats_index(slot, h), values, 0)
                    .map_err(|e| DatapathError::Counters(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn attach(&mut self, mode: DatapathMode, ifaces: BTreeSet<&str>) -> Result<(), DatapathError> {
        if mode == DatapathMode::Xdp {
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
        info!(?mode, interfaces = ?self.interfaces, "datapath attached");
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

/// The datapath's interface table ([`maps::IFINDEXES`]): the indexes of
/// `ifaces` in order, then zeros.
fn ifindex_table(ifaces: &BTreeSet<&str>) -> Result<[u32; IFACES_MAX as usize], DatapathError> {
    let mut table = [0; IFACES_MAX as usize];
    if ifaces.len() > table.len() {
        return Err(DatapathError::TooManyInterfaces(ifaces.len()));
    }
    for (slot, iface) in table.iter_mut().zip(ifaces) {
        let no_such = || DatapathError::NoInterface {
            iface: (*iface).to_owned(),
        };
        let name = std::ffi::CString::new(*iface).map_err(|_| no_such())?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(no_such());
        }
        *slot = index;
    }
    Ok(table)
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
