//! Cgroups through cgroupfs (no systemd), v1 and v2: where a container's cgroup lives, creating
//! it, writing `linux.resources` into it, moving processes in, freezing, statistics, removal.
//!
//! Every function works only on the paths it is given (mountinfo and /proc/self/cgroup text, the
//! directories in [`Cgroup::paths`]), so unit tests point it at a temporary directory with fake
//! control files. [`Cgroup`] is serialisable so the runtime can keep it in the container state.

mod convert;
mod device_filter;
mod devices;
mod fs;
mod paths;
pub mod stats;
mod v1;
mod v2;

use crate::spec::LinuxResources;
use crate::syscall::bpf::Bpf;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed line in /proc/self/mountinfo: {line:?}")]
    Mountinfo { line: String },
    #[error("malformed line in /proc/self/cgroup: {line:?}")]
    ProcSelfCgroup { line: String },
    #[error("no cgroup filesystem is mounted in this mount namespace: mount cgroup2 (or the v1 controllers) under /sys/fs/cgroup")]
    NoCgroupMounts,
    #[error("/proc/self/cgroup has no entry for the {hierarchy} hierarchy, so a relative cgroupsPath cannot be placed in it: use an absolute linux.cgroupsPath")]
    OwnCgroupUnknown { hierarchy: String },
    #[error("this process's {hierarchy} cgroup {cgroup} is outside the mounted part of the hierarchy ({mount_root}): use an absolute linux.cgroupsPath")]
    OutsideMount {
        hierarchy: String,
        cgroup: String,
        mount_root: String,
    },
    #[error("invalid linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("linux.cgroupsPath {path:?} has systemd's \"slice:prefix:name\" form, but the systemd cgroup driver is not available (no systemd runs here): use a cgroupfs path such as \"/kapsel/<id>\"")]
    Systemd { path: String },
    #[error("cgroup controller {controller} is not mounted on this host: cannot apply {field}")]
    NotMounted { controller: String, field: String },
    #[error("cgroup v2 controller {controller} is not enabled for {path} (enable it in the parent's cgroup.subtree_control): cannot apply {field}")]
    NotEnabled {
        controller: String,
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{field} is not supported: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("{field}: invalid value {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("cannot lower the memory limit of {path} to {limit} bytes: the cgroup already uses {usage} bytes")]
    MemoryLimitTooLow {
        path: PathBuf,
        limit: i64,
        usage: u64,
    },
    #[error("the kernel refused the eBPF device program ({insns} instructions) for cgroup {path}: {source}{hint}; verifier log: {log}")]
    DeviceProgramLoad {
        path: PathBuf,
        insns: usize,
        #[source]
        source: io::Error,
        hint: &'static str,
        log: String,
    },
    #[error("{op} failed for the eBPF device program of cgroup {path}: {source}")]
    DeviceProgram {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cgroup {path} did not reach the {wanted} state within {timeout:?} (last seen: {seen})"
    )]
    FreezeTimeout {
        path: PathBuf,
        wanted: &'static str,
        seen: String,
        timeout: Duration,
    },
}

impl CgroupError {
    /// The errno behind a failed read, write or removal.
    fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Remove { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Where one container's cgroup lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cgroup {
    pub v2: bool,
    /// v1: controller name ("memory", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio",
    /// "pids", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc", "name=systemd")
    /// -> the absolute directory of this container's cgroup in that hierarchy; only mounted
    /// hierarchies appear. Co-mounted controllers (cpu,cpuacct) share a directory.
    /// v2: one entry with key "" -> the absolute directory.
    pub paths: BTreeMap<String, PathBuf>,
}

/// How long freeze and thaw wait for the kernel before giving up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long destroy keeps retrying a cgroup that is still busy with exiting tasks.
const REMOVE_TIMEOUT: Duration = Duration::from_millis(500);

impl Cgroup {
    /// Resolves where the container's cgroup lives, following runc's cgroupsPath rules for the
    /// cgroupfs driver: an absolute `cgroups_path` is relative to each hierarchy's mount root, a
    /// relative one lies below the calling process's own cgroup (from `proc_self_cgroup`), and
    /// `None` (or "") means the relative path `id`. ".." that would climb out of that base, a
    /// path naming the base itself, and the systemd "slice:prefix:name" form are refused.
    pub fn resolve(
        mountinfo: &str,
        proc_self_cgroup: &str,
        cgroups_path: Option<&str>,
        id: &str,
    ) -> Result<Cgroup, CgroupError> {
        paths::resolve(mountinfo, proc_self_cgroup, cgroups_path, id)
    }

    /// [`Cgroup::resolve`] with this process's /proc/self/mountinfo and /proc/self/cgroup.
    pub fn for_host(cgroups_path: Option<&str>, id: &str) -> Result<Cgroup, CgroupError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
                path: PathBuf::from(path),
                source,
            })
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Cgroup::resolve(&mountinfo, &own, cgroups_path, id)
    }

    /// Creates every directory (with its parents). v1: every cpuset level with empty
    /// cpuset.cpus/mems gets its parent's, so tasks can join. v2: each ancestor enables in its
    /// cgroup.subtree_control the controllers it has, so the leaf gets them all.
    pub fn create(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        if self.v2 {
            for dir in self.dirs() {
                v2::enable_controllers(dir)?;
            }
        } else if let Some(dir) = self.paths.get("cpuset") {
            v1::init_cpuset(dir)?;
        }
        Ok(())
    }

    /// Writes every `res` field the hierarchy supports. `update` is `runtime update`: the same
    /// writes, except that device rules are left alone unless the update names some (v1 never
    /// rewrites them: that would deny a running container its devices for a moment; runc's
    /// update cannot change them either), and v2 honours memory.checkBeforeUpdate. On v2 the
    /// device rules become an eBPF program loaded and attached through `bpf`. A field whose
    /// controller is not mounted (v1) or not enabled (v2) is an error naming the field; kernel
    /// memory limits are ignored with a warning.
    pub fn apply(
        &self,
        bpf: &dyn Bpf,
        res: &LinuxResources,
        update: bool,
    ) -> Result<(), CgroupError> {
        if self.v2 {
            v2::apply(bpf, self.v2_dir()?, res, update)
        } else {
            v1::apply(self, res, update)
        }
    }

    /// Moves `pid` into the cgroup: every v1 hierarchy (name=systemd included) or the v2 directory.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        // cgroup.procs reads 0 as "the writer": never move the runtime itself by mistake.
        if pid <= 0 {
            return Err(CgroupError::Invalid {
                field: "pid".to_string(),
                value: pid.to_string(),
                reason: "must be a process id above 0".to_string(),
            });
        }
        for dir in self.dirs() {
            let mut attempts = 0;
            loop {
                match fs::write(dir, "cgroup.procs", &pid.to_string()) {
                    Ok(()) => break,
                    // A task still being forked (TASK_NEW) is refused with EINVAL for a moment.
                    Err(e) if e.errno() == Some(libc::EINVAL) && attempts < 5 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(30));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The v2 directory as an O_PATH descriptor, for a child born into it (clone3
    /// CLONE_INTO_CGROUP). None on v1, or (with a debug line) when it cannot be opened: the
    /// caller then moves the process with [`Cgroup::add_process`].
    pub fn open_v2_dir(&self) -> Option<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.paths.get("").filter(|_| self.v2)?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| tracing::debug!("open {}: {e}", dir.display()))
            .ok()
    }

    /// Whether [`Cgroup::join_self`] can be used instead of [`Cgroup::add_process`]: v1 only.
    pub fn can_join_self(&self) -> bool {
        !self.v2
    }

    /// v1: moves the calling thread (the only thread of a freshly forked container process)
    /// into every hierarchy by writing "0" to `tasks`. The kernel moves a thread that names
    /// itself without taking the global threadgroup lock, whose write side waits for an RCU
    /// grace period: from the parent, `cgroup.procs` costs 5-14 ms per container on this kind of
    /// machine, from the child about 0.1 ms. The caller must be single-threaded and still see
    /// the host's cgroup mounts (before pivot_root, outside a new user namespace).
    pub fn join_self(&self) -> Result<(), CgroupError> {
        if self.v2 {
            return Err(CgroupError::Invalid {
                field: "cgroup".to_string(),
                value: "v2".to_string(),
                reason: "a process joins a v2 cgroup through cgroup.procs".to_string(),
            });
        }
        for dir in self.dirs() {
            fs::write(dir, "tasks", "0")?;
        }
        Ok(())
    }

    /// Freezes every task of the cgroup and waits (up to 2s) until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        if self.v2 {
            v2::set_frozen(self.v2_dir()?, true)
        } else {
            v1::set_frozen(self.v1_dir("freezer", "pause")?, true)
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        if self.v2 {
            v2::set_frozen(self.v2_dir()?, false)
        } else {
            v1::set_frozen(self.v1_dir("freezer", "resume")?, false)
        }
    }

    /// Whether the cgroup is frozen; false when there is no freezer or no cgroup (any more).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        if self.v2 {
            Ok(fs::keyed_value(self.v2_dir()?, "cgroup.events", "frozen")? == Some(1))
        } else {
            match self.paths.get("freezer") {
                Some(dir) => {
                    Ok(fs::read_optional(dir, "freezer.state")?
                        .is_some_and(|s| s.trim() == "FROZEN"))
                }
                None => Ok(false),
            }
        }
    }

    /// Every pid in the cgroup and its sub-cgroups, sorted; empty when the cgroup is gone.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        const PREFERRED: &[&str] = &["", "pids", "freezer", "memory", "cpu", "devices"];
        let dir = PREFERRED
            .iter()
            .find_map(|k| self.paths.get(*k))
            .or_else(|| self.paths.values().next());
        let mut pids = Vec::new();
        if let Some(dir) = dir {
            collect_pids(dir, &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Removes the container's directories, deepest first with any sub-cgroups created inside,
    /// retrying EBUSY for up to 500ms while exiting tasks leave. Missing directories are fine;
    /// the parents are never removed.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            remove_tree(dir)?;
        }
        Ok(())
    }

    /// Statistics in the shape `runc events --stats` prints as its "data".
    pub fn stats(&self) -> Result<stats::Stats, CgroupError> {
        if self.v2 {
            stats::collect_v2(self.v2_dir()?)
        } else {
            stats::collect_v1(&self.paths)
        }
    }

    /// How many tasks the OOM killer killed in the cgroup (v1 memory.oom_control or v2
    /// memory.events "oom_kill"); `None` where the kernel does not count them.
    pub fn oom_kills(&self) -> Option<u64> {
        let (dir, file) = if self.v2 {
            (self.v2_dir().ok()?, "memory.events")
        } else {
            (self.paths.get("memory")?.as_path(), "memory.oom_control")
        };
        fs::keyed_value(dir, file, "oom_kill").ok().flatten()
    }

    /// The distinct directories (co-mounted v1 controllers share one), in a stable order.
    fn dirs(&self) -> Vec<&Path> {
        let unique: BTreeSet<&Path> = self.paths.values().map(PathBuf::as_path).collect();
        unique.into_iter().collect()
    }

    /// The v2 directory; only a hand-built (or hand-edited) Cgroup can lack it.
    fn v2_dir(&self) -> Result<&Path, CgroupError> {
        self.paths
            .get("")
            .map(PathBuf::as_path)
            .ok_or_else(|| CgroupError::InvalidPath {
                path: String::new(),
                reason: "a cgroup v2 Cgroup needs its directory under the key \"\"".to_string(),
            })
    }

    /// The v1 directory of `controller`, or an error saying `field` cannot be applied.
    fn v1_dir(&self, controller: &str, field: &str) -> Result<&Path, CgroupError> {
        self.paths
            .get(controller)
            .map(PathBuf::as_path)
            .ok_or_else(|| CgroupError::NotMounted {
                controller: controller.to_string(),
                field: field.to_string(),
            })
    }
}

/// The sub-cgroups of `dir` (an empty list once it is gone).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let read_error = |source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        if entry.file_type().map_err(read_error)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) -> Result<(), CgroupError> {
    if let Some(text) = fs::read_optional(dir, "cgroup.procs")? {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, pids)?;
    }
    Ok(())
}

/// rmdir of `dir` after its sub-cgroups; cgroupfs removes a directory with its control files.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    let mut delay = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
