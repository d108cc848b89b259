//! The OCI runtime spec (config.json, runtime-spec 1.2) of a container, built from the image
//! config and the `kapsel run` options with Docker's defaults:
//!
//! - process: args = entrypoint + cmd (the image's, overridden as Docker does: `--entrypoint`
//!   also drops the image's Cmd), env = PATH (if the image has none) + HOSTNAME + TERM=xterm
//!   with `-t` + the image's env + `-e`, cwd = `-w` > image WorkingDir > `/`, the user resolved
//!   in the rootfs's /etc/passwd and /etc/group ([`super::user`]), Docker's 14 capabilities,
//!   RLIMIT_NOFILE = kapseld's own limits (see [`default_rlimits`]), `--ulimit`s;
//! - the default mounts (/proc, /dev, /dev/pts, /dev/shm 64 MiB, /dev/mqueue, /sys ro, cgroup
//!   ro), /etc/hostname, /etc/hosts and /etc/resolv.conf bound from the container's directory,
//!   `--tmpfs`, `-v`, and `/sbin/kapsel-init` with `--init`;
//! - linux: namespaces pid, ipc, uts, mount, network (none with `--network host`), cgroup on a
//!   cgroup v2 host (Docker's default there; v1 hosts share the host's as Docker does),
//!   cgroupsPath `/kapsel/<id>`, resources (device rules, memory, swap, cpu shares 1024, quota,
//!   cpuset, pids), masked and read-only paths, Docker's default seccomp profile
//!   ([`super::seccomp_default`]), the two sysctls Docker sets in a network namespace of the
//!   container's own (unprivileged ports from 0, ping for every group);
//! - `--privileged`: every capability, no masked or read-only paths, no seccomp, /sys and the
//!   cgroup mount writable, every host device.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::options::{
    parse_signal, Bind, BindSource, NetworkMode, OptionsError, RunOptions, SeccompOpt,
};
use super::seccomp_default::{self, ProfileError};
use super::user::{self, UserError};
use crate::oci::ImageConfig;

/// The PATH a container gets when its image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts the init binary in the container.
pub const INIT_PATH: &str = "/sbin/kapsel-init";

/// The OCI runtime-spec version written.
pub const OCI_VERSION: &str = "1.2.0";

/// What `generate` needs beyond the image and the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecContext {
    /// The container id (its first 12 characters are the default hostname).
    pub id: String,
    /// The container's root filesystem as kapseld can read it (mounted snapshot or unpacked
    /// tree), for /etc/passwd and /etc/group. The spec's `root.path` is always `rootfs`, the
    /// bundle's.
    pub rootfs: PathBuf,
    /// `<root>/containers/<id>`: holds `hostname`, `hosts`, `resolv.conf`
    /// ([`prepare_container_dir`]), bound onto /etc in the container.
    pub container_dir: PathBuf,
    /// The `kapsel-init` binary for `--init`.
    pub init_binary: Option<PathBuf>,
    /// The volumes the container mounts, as [`volumes_needed`] listed them, with the
    /// directories behind them.
    pub volumes: Vec<VolumeSource>,
}

/// A volume the container needs: `-v NAME:/path` (`name` set), `-v /path` or an image
/// `Volumes` path (anonymous: `name` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNeed {
    pub name: Option<String>,
    pub destination: String,
    pub read_only: bool,
}

/// A volume mounted into the container: `source` is its `_data` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// The volumes of a container made from `img` with `opts`: the user's `-v NAME:/path` and
/// `-v /path` in order, then one anonymous volume per image `Volumes` path no user mount
/// (`-v`, `--tmpfs`) covers.
pub fn volumes_needed(img: &ImageConfig, opts: &RunOptions) -> Result<Vec<VolumeNeed>, SpecError> {
    let binds = opts.binds()?;
    let mut out: Vec<VolumeNeed> = binds
        .iter()
        .filter_map(|b| {
            let name = match &b.source {
                BindSource::Host(_) => return None,
                BindSource::Volume(n) => Some(n.clone()),
                BindSource::Anonymous => None,
            };
            Some(VolumeNeed {
                name,
                destination: b.destination.clone(),
                read_only: b.read_only,
            })
        })
        .collect();
    let covered = |dest: &str| {
        binds
            .iter()
            .map(|b| b.destination.as_str())
            .chain(
                opts.tmpfs
                    .iter()
                    .map(|t| t.split_once(':').map_or(t.as_str(), |(p, _)| p)),
            )
            .any(|d| Path::new(d) == Path::new(dest))
    };
    let cfg = img.config.clone().unwrap_or_default();
    for path in cfg.volumes.iter().flatten().map(|(p, _)| p.as_str()) {
        if path.starts_with('/') && path != "/" && !covered(path) {
            out.push(VolumeNeed {
                name: None,
                destination: path.to_string(),
                read_only: false,
            });
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(
        "no command specified: the image has no Entrypoint or Cmd; give a command after the \
         image name"
    )]
    NoCommand,
    #[error(
        "--init: kapseld found no kapsel-init binary: install it next to kapseld \
         (scripts/build-release.sh builds it, static)"
    )]
    NoInitBinary,
    #[error("invalid -v {bind}: bind source path does not exist: {path}")]
    BindSource {
        bind: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("--security-opt seccomp={path}: read the profile: {source}")]
    SeccompRead {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("--security-opt seccomp: the profile is not JSON: {0}")]
    SeccompJson(#[source] serde_json::Error),
    #[error("--security-opt seccomp: {0}")]
    SeccompProfile(#[from] ProfileError),
    #[error("--security-opt seccomp: the profile is not valid linux.seccomp: {0}")]
    SeccompShape(#[source] serde_json::Error),
    #[error("--security-opt seccomp: {0}")]
    SeccompCompile(#[source] kapsel_runtime::seccomp::SeccompError),
    #[error(
        "--ulimit {name}: hard limit {hard} is above kapseld's own hard limit {max}, and \
         kapseld lacks CAP_SYS_RESOURCE to raise it; ask for at most {max}"
    )]
    UlimitAboveHost { name: String, hard: u64, max: u64 },
    #[error("--privileged: list the host's devices in /dev: {0}")]
    HostDevices(#[source] io::Error),
    #[error("--network host: read the host's hostname: {0}")]
    HostHostname(#[source] io::Error),
}

/// Facts about the host the spec depends on; read once per `generate`.
#[derive(Debug, Clone, Copy)]
struct Host {
    cgroup2: bool,
    swap_accounting: bool,
    /// CPU slots (`/sys/devices/system/cpu/possible`), for the masked `thermal_throttle` paths.
    cpus: u32,
}

impl Host {
    fn probe() -> Host {
        let cgroup2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let swap_accounting =
            cgroup2 || Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|l| cpu_slots(&l))
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| n.get() as u32)
            })
            .unwrap_or(1);
        Host {
            cgroup2,
            swap_accounting,
            cpus,
        }
    }
}

/// Whether this host limits memory+swap (cgroup v2, or v1 with memory.memsw.*): without it,
/// a swap limit must not be sent to the runtime.
pub fn swap_accounting() -> bool {
    Host::probe().swap_accounting
}

/// The `kapsel-init` installed next to the running binary (kapseld), for
/// [`SpecContext::init_binary`].
pub fn find_init_binary() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.with_file_name("kapsel-init");
    path.is_file().then_some(path)
}

/// The container's hostname: `--hostname`, the host's with `--network host`, else the first 12
/// characters of the id (Docker's rule).
pub fn hostname(opts: &RunOptions, id: &str) -> Result<String, SpecError> {
    if let Some(h) = &opts.hostname {
        return Ok(h.clone());
    }
    if opts.network == NetworkMode::Host {
        return std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .map_err(SpecError::HostHostname);
    }
    Ok(id.chars().take(12).collect())
}

/// The process arguments Docker would run, without `--init`.
pub fn command(img: &ImageConfig, opts: &RunOptions) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = entrypoint_and_cmd(img, opts);
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The container's Entrypoint and Cmd: the options' over the image's; `--entrypoint` resets
/// the image's Cmd too (Docker's rule).
pub fn entrypoint_and_cmd(img: &ImageConfig, opts: &RunOptions) -> (Vec<String>, Vec<String>) {
    let cfg = img.config.clone().unwrap_or_default();
    match &opts.entrypoint {
        Some(e) => (e.clone(), opts.cmd.clone().unwrap_or_default()),
        None => (
            cfg.entrypoint.unwrap_or_default(),
            opts.cmd.clone().or(cfg.cmd).unwrap_or_default(),
        ),
    }
}

/// PATH, HOSTNAME, TERM, then the image's env and the options', a later `KEY=` replacing an
/// earlier one in place and a bare `KEY` removing it.
pub fn environment(img: &ImageConfig, opts: &RunOptions, hostname: &str) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    let image_env = img
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    for e in image_env.iter().chain(&opts.env) {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        let pos = env
            .iter()
            .position(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) == key);
        match (e.contains('='), pos) {
            (true, Some(i)) => env[i] = e.clone(),
            (true, None) => env.push(e.clone()),
            (false, Some(i)) => {
                env.remove(i);
            }
            (false, None) => {}
        }
    }
    env
}

/// The signal `kapsel stop` sends first: `--stop-signal`, else the image's StopSignal, else
/// SIGTERM (also when the image's value is not a signal).
pub fn stop_signal(img: &ImageConfig, opts: &RunOptions) -> Signal {
    opts.stop_signal
        .as_deref()
        .or(img.config.as_ref().and_then(|c| c.stop_signal.as_deref()))
        .and_then(parse_signal)
        .unwrap_or(Signal::SIGTERM)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": typ, "source": source, "options": options })
}

/// Docker's default mounts.
fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys = if privileged {
        vec!["nosuid", "noexec", "nodev"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup = if privileged {
        vec!["nosuid", "noexec", "nodev", "relatime"]
    } else {
        vec!["ro", "nosuid", "noexec", "nodev", "relatime"]
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount("/sys", "sysfs", "sysfs", &sys),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &cgroup),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        ),
    ]
}

/// Docker's masked paths (a tmpfs or /dev/null over them).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's masked paths on a host with `cpus` possible CPUs: [`MASKED_PATHS`] and each CPU's
/// `thermal_throttle` directory (Docker 28, against thermal side channels). The runtime skips
/// the ones this kernel does not have.
pub fn masked_paths(cpus: u32) -> Vec<String> {
    MASKED_PATHS
        .iter()
        .map(|p| p.to_string())
        .chain((0..cpus).map(|i| format!("/sys/devices/system/cpu/cpu{i}/thermal_throttle")))
        .collect()
}

/// The number of CPU slots in a sysfs CPU list such as `0-3,6` (the highest index + 1).
fn cpu_slots(list: &str) -> Option<u32> {
    list.trim()
        .split(',')
        .map(|part| part.rsplit('-').next()?.trim().parse::<u32>().ok())
        .try_fold(0u32, |max, last| Some(max.max(last? + 1)))
}

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's device cgroup rules: nothing but mknod of anything, and the usual character
/// devices (null, zero, full, random, urandom, tty, console, ptmx, the ptys, tun).
fn device_rules() -> Vec<Value> {
    let mut rules = vec![
        json!({ "allow": false, "access": "rwm" }),
        json!({ "allow": true, "type": "c", "access": "m" }),
        json!({ "allow": true, "type": "b", "access": "m" }),
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        let mut r = json!({ "allow": true, "type": "c", "major": major, "access": "rwm" });
        if let Some(m) = minor {
            r["minor"] = json!(m);
        }
        rules.push(r);
    }
    rules
}

/// Every character and block device under the host's /dev, as `--privileged` gives them (the
/// runtime's own /dev/pts, /dev/shm, /dev/mqueue, /dev/fd, /dev/ptmx and the console are left
/// to it).
fn host_devices() -> io::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                ) {
                    dirs.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if matches!(name.as_ref(), "console" | "ptmx") {
                continue;
            }
            let rdev = md.rdev();
            out.push(json!({
                "path": path,
                "type": typ,
                "major": libc::major(rdev),
                "minor": libc::minor(rdev),
                "fileMode": md.mode() & 0o7777,
                "uid": md.uid(),
                "gid": md.gid(),
            }));
        }
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(out)
}

/// `--tmpfs PATH[:opts]`: Docker's defaults noexec, nosuid, nodev, each undone by its opposite.
fn tmpfs_mount(spec: &str) -> Value {
    let (path, user) = match spec.split_once(':') {
        Some((p, o)) => (p, o),
        None => (spec, ""),
    };
    let mut options: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for o in user.split(',').filter(|o| !o.is_empty()) {
        let opposite = match o {
            "exec" => Some("noexec"),
            "noexec" => Some("exec"),
            "suid" => Some("nosuid"),
            "nosuid" => Some("suid"),
            "dev" => Some("nodev"),
            "nodev" => Some("dev"),
            "ro" => Some("rw"),
            "rw" => Some("ro"),
            _ => None,
        };
        if let Some(op) = opposite {
            options.retain(|x| x != op);
        }
        if !options.iter().any(|x| x == o) {
            options.push(o.to_string());
        }
    }
    json!({ "destination": path, "type": "tmpfs", "source": "tmpfs", "options": options })
}

/// The mount of a host bind (`None` for a volume: those come from `SpecContext::volumes`).
fn bind_mount(b: &Bind, raw: &str) -> Result<Option<Value>, SpecError> {
    let Some(host) = b.host_path() else {
        return Ok(None);
    };
    std::fs::metadata(host).map_err(|source| SpecError::BindSource {
        bind: raw.to_string(),
        path: host.to_string(),
        source,
    })?;
    let mut options = vec!["rbind", "rprivate"];
    if b.read_only {
        options.push("ro");
    }
    Ok(Some(json!({
        "destination": b.destination,
        "type": "bind",
        "source": host,
        "options": options,
    })))
}

/// The rlimits a container gets by default: RLIMIT_NOFILE at kapseld's own soft and hard
/// limits. Docker gives dockerd's limits (1048576 under its systemd unit); on a host where the
/// daemon may not raise a hard limit (no CAP_SYS_RESOURCE, as on the Kapsel CI machine) a
/// larger fixed value would make every container fail, so the daemon's own are the default.
pub fn default_rlimits() -> Vec<(String, u64, u64)> {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => vec![("RLIMIT_NOFILE".to_string(), soft, hard)],
        Err(_) => Vec::new(),
    }
}

fn resource_of(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// Whether this process may raise hard limits (CAP_SYS_RESOURCE, bit 24, effective).
fn can_raise_hard_limits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1 << 24) != 0)
}

fn rlimits(opts: &RunOptions) -> Result<Vec<Value>, SpecError> {
    let mut limits = default_rlimits();
    let raise = can_raise_hard_limits();
    for u in opts.ulimits()? {
        if !raise {
            if let Some(res) = resource_of(&u.name) {
                if let Ok((_, max)) = nix::sys::resource::getrlimit(res) {
                    if u.hard > max {
                        return Err(SpecError::UlimitAboveHost {
                            name: u.name.trim_start_matches("RLIMIT_").to_lowercase(),
                            hard: u.hard,
                            max,
                        });
                    }
                }
            }
        }
        limits.retain(|(n, _, _)| *n != u.name);
        limits.push((u.name, u.soft, u.hard));
    }
    Ok(limits
        .into_iter()
        .map(|(typ, soft, hard)| json!({ "type": typ, "soft": soft, "hard": hard }))
        .collect())
}

fn seccomp(opts: &RunOptions, caps: &[String]) -> Result<Option<Value>, SpecError> {
    if opts.privileged {
        return Ok(None);
    }
    let text = match opts.security()?.seccomp {
        SeccompOpt::Unconfined => return Ok(None),
        SeccompOpt::Default => return Ok(Some(seccomp_default::default_profile(caps))),
        SeccompOpt::Json(text) => text,
        SeccompOpt::File(path) => {
            std::fs::read_to_string(&path).map_err(|source| SpecError::SeccompRead {
                path: path.clone(),
                source,
            })?
        }
    };
    let profile: Value = serde_json::from_str(&text).map_err(SpecError::SeccompJson)?;
    let profile = seccomp_default::from_docker_format(&profile, caps)?;
    // Compiled once here, with the runtime's own compiler, so that a bad profile fails
    // `kapsel run` with its reason instead of the container's start.
    let typed: kapsel_runtime::spec::Seccomp =
        serde_json::from_value(profile.clone()).map_err(SpecError::SeccompShape)?;
    kapsel_runtime::seccomp::compile(&typed).map_err(SpecError::SeccompCompile)?;
    Ok(Some(profile))
}

fn resources(opts: &RunOptions, host: Host) -> Value {
    let mut r = json!({});
    r["devices"] = if opts.privileged {
        json!([{ "allow": true, "access": "rwm" }])
    } else {
        json!(device_rules())
    };
    if let Some(limit) = opts.memory.filter(|m| *m > 0) {
        let mut memory = json!({ "limit": limit });
        if host.swap_accounting {
            // Docker: no --memory-swap is twice the memory; -1 is unlimited.
            let swap = match opts.memory_swap {
                None | Some(0) => limit.saturating_mul(2),
                Some(s) => s,
            };
            memory["swap"] = json!(swap);
        }
        r["memory"] = memory;
    }
    let mut cpu = json!({ "shares": opts.cpu_shares.filter(|s| *s > 0).unwrap_or(1024) });
    if let Some(quota) = opts.cpu_quota() {
        cpu["quota"] = json!(quota);
        cpu["period"] = json!(super::options::CPU_PERIOD);
    }
    if let Some(set) = &opts.cpuset_cpus {
        cpu["cpus"] = json!(set);
    }
    r["cpu"] = cpu;
    if let Some(p) = opts.pids_limit.filter(|p| *p > 0) {
        r["pids"] = json!({ "limit": p });
    }
    r
}

/// Number of path components, to mount parents before children as Docker sorts them.
fn depth(m: &Value) -> usize {
    m["destination"]
        .as_str()
        .map_or(0, |d| Path::new(d).components().count())
}

/// The OCI runtime spec of a container from `img` with `opts`.
pub fn generate(
    img: &ImageConfig,
    opts: &RunOptions,
    ctx: &SpecContext,
) -> Result<Value, SpecError> {
    generate_on(img, opts, ctx, Host::probe())
}

fn generate_on(
    img: &ImageConfig,
    opts: &RunOptions,
    ctx: &SpecContext,
    host: Host,
) -> Result<Value, SpecError> {
    opts.validate()?;
    let cfg = img.config.clone().unwrap_or_default();
    let caps = opts.capabilities()?;
    let security = opts.security()?;
    let hostname = hostname(opts, &ctx.id)?;

    let mut args = command(img, opts)?;
    let init_binary = if opts.init {
        let bin = ctx.init_binary.as_ref().ok_or(SpecError::NoInitBinary)?;
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
        Some(bin)
    } else {
        None
    };

    let user_spec = opts.user.clone().or(cfg.user.clone()).unwrap_or_default();
    let mut user = user::resolve(&ctx.rootfs, &user_spec)?;
    for gid in user::resolve_groups(&ctx.rootfs, &opts.group_add)? {
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    let user_json = json!({
        "uid": user.uid,
        "gid": user.gid,
        "additionalGids": user.additional_gids,
    });

    let cwd = opts
        .workdir
        .clone()
        .or(cfg.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let mut process = json!({
        "terminal": opts.tty,
        "user": user_json,
        "args": args,
        "env": environment(img, opts, &hostname),
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
        "rlimits": rlimits(opts)?,
    });
    if security.no_new_privileges {
        process["noNewPrivileges"] = json!(true);
    }

    // Mounts: the defaults (less those a user mount replaces), the container's /etc files,
    // then the user's, parents before children.
    let binds = opts.binds()?;
    let mut user_mounts = Vec::new();
    for (b, raw) in binds.iter().zip(&opts.binds) {
        user_mounts.extend(bind_mount(b, raw)?);
    }
    user_mounts.extend(opts.tmpfs.iter().map(|t| tmpfs_mount(t)));
    // The volumes (named, anonymous, the image's): their directories, bound.
    for v in &ctx.volumes {
        let mut options = vec!["rbind", "rprivate"];
        if v.read_only {
            options.push("ro");
        }
        user_mounts.push(json!({
            "destination": v.destination,
            "type": "bind",
            "source": v.source,
            "options": options,
        }));
    }
    user_mounts.sort_by_key(depth);
    let taken = |dest: &str| user_mounts.iter().any(|m| m["destination"] == dest);
    let mut mounts: Vec<Value> = default_mounts(opts.privileged)
        .into_iter()
        .filter(|m| !taken(m["destination"].as_str().unwrap_or_default()))
        .collect();
    for file in ["hostname", "hosts", "resolv.conf"] {
        let dest = format!("/etc/{file}");
        if taken(&dest) {
            continue;
        }
        let mut options = vec!["rbind", "rprivate"];
        if opts.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": dest,
            "type": "bind",
            "source": ctx.container_dir.join(file),
            "options": options,
        }));
    }
    mounts.extend(user_mounts);
    if let Some(bin) = init_binary {
        mounts.push(json!({
            "destination": INIT_PATH,
            "type": "bind",
            "source": bin,
            "options": ["rbind", "ro", "rprivate"],
        }));
    }

    let mut namespaces = vec![
        json!({ "type": "pid" }),
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
    ];
    if opts.network != NetworkMode::Host {
        namespaces.push(json!({ "type": "network" }));
    }
    if host.cgroup2 {
        namespaces.push(json!({ "type": "cgroup" }));
    }

    let mut linux = json!({
        "cgroupsPath": format!("/kapsel/{}", ctx.id),
        "namespaces": namespaces,
        "resources": resources(opts, host),
    });
    if opts.network != NetworkMode::Host {
        linux["sysctl"] = json!({
            "net.ipv4.ip_unprivileged_port_start": "0",
            "net.ipv4.ping_group_range": "0 2147483647",
        });
    }
    if opts.privileged {
        linux["devices"] = json!(host_devices().map_err(SpecError::HostDevices)?);
    } else if !security.systempaths_unconfined {
        linux["maskedPaths"] = json!(masked_paths(host.cpus));
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(profile) = seccomp(opts, &caps)? {
        linux["seccomp"] = profile;
    }

    let mut annotations: BTreeMap<String, String> = cfg.labels.clone().unwrap_or_default();
    annotations.extend(opts.labels.clone());

    let mut spec = json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": { "path": "rootfs", "readonly": opts.read_only },
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    if !annotations.is_empty() {
        spec["annotations"] = json!(annotations);
    }
    Ok(spec)
}

/// Makes the container's working directory (`process.cwd` of `spec`) in `rootfs` when it is
/// missing, as Docker does at create: directories 0755, owned by kapseld (root), symlinks
/// resolved inside the rootfs. Call it on the container's writable rootfs before starting it.
pub fn create_workdir(rootfs: &Path, spec: &Value) -> io::Result<()> {
    let cwd = spec["process"]["cwd"].as_str().unwrap_or("/");
    let dir = user::resolve_in_rootfs(rootfs, Path::new(cwd), true)?;
    if dir.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("working directory {cwd}: not a directory in the image"),
        ))
    }
}

/// The localhost lines of a container's /etc/hosts.
const HOSTS_LOCALHOST: &str = "127.0.0.1\tlocalhost\n\
    ::1\tlocalhost ip6-localhost ip6-loopback\n\
    fe00::0\tip6-localnet\n\
    ff00::0\tip6-mcastprefix\n\
    ff02::1\tip6-allnodes\n\
    ff02::2\tip6-allrouters\n";

/// The nameservers Docker falls back on when the host's are all on loopback.
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// Writes `hostname`, `hosts` and `resolv.conf` into the container's directory `dir`
/// (created if missing), for the bind mounts `generate` makes onto /etc.
///
/// - `hosts`: with `--network host` a copy of the host's; else the localhost lines and
///   `127.0.0.1 <hostname>` (so `hostname -i` answers; Docker has no such line with
///   `--network none`).
/// - `resolv.conf`: with `--network host` a copy of the host's; else the host's without its
///   loopback nameservers (unreachable from another network namespace), and Docker's public
///   fallback servers when none is left.
pub fn prepare_container_dir(dir: &Path, hostname: &str, network: NetworkMode) -> io::Result<()> {
    prepare_container_dir_from(
        dir,
        hostname,
        network,
        Path::new("/etc/hosts"),
        Path::new("/etc/resolv.conf"),
    )
}

fn prepare_container_dir_from(
    dir: &Path,
    hostname: &str,
    network: NetworkMode,
    host_hosts: &Path,
    host_resolv: &Path,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let with_path =
        |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| with_path(e, &path))
    };
    write("hostname", &format!("{hostname}\n"))?;
    let resolv = match std::fs::read_to_string(host_resolv) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(with_path(e, host_resolv)),
    };
    match network {
        NetworkMode::Host => {
            let hosts =
                std::fs::read_to_string(host_hosts).map_err(|e| with_path(e, host_hosts))?;
            write("hosts", &hosts)?;
            write("resolv.conf", &resolv)?;
        }
        NetworkMode::None => {
            write(
                "hosts",
                &format!("{HOSTS_LOCALHOST}127.0.0.1\t{hostname}\n"),
            )?;
            write("resolv.conf", &container_resolv_conf(&resolv))?;
        }
    }
    Ok(())
}

/// The host's resolv.conf without loopback nameservers; the fallback servers if none remain.
fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" || addr.is_empty() {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

#[cfg(test)]
mod tests;
