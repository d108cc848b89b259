//! `RunOptions`: everything `kapsel run` / `kapsel create` takes that shapes a container, as the
//! CLI sends it to kapseld (JSON), and its checks. Values that need the host or the image (a
//! bind source that must exist, a user in /etc/passwd) are checked by `spec::generate`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The options of one container. `Default` is `docker run IMAGE` with no flags.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// `--name`; empty: kapseld picks one.
    pub name: String,
    /// The image reference as the user typed it.
    pub image: String,
    /// The arguments after the image: replace the image's Cmd.
    pub cmd: Option<Vec<String>>,
    /// `--entrypoint`: replaces the image's Entrypoint (and drops its Cmd when no `cmd` is
    /// given, as Docker does); `Some(vec![])` is `--entrypoint ""`, no entrypoint at all.
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VAL` (env files already read by the CLI). A bare `KEY` removes KEY.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u name|uid[:group|gid]`.
    pub user: Option<String>,
    /// `--group-add name|gid`: more supplementary groups, names looked up in the container's
    /// /etc/group.
    pub group_add: Vec<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub stdin_open: bool,
    /// `--hostname`; default: the first 12 characters of the container id.
    pub hostname: Option<String>,
    /// `--label k=v`.
    pub labels: BTreeMap<String, String>,
    /// `-m`, bytes (see [`parse_size`]).
    pub memory: Option<i64>,
    /// `--memory-swap`, bytes of memory plus swap; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    /// `--cpus`: quota = cpus × period, period 100000 µs.
    pub cpus: Option<f64>,
    /// `--cpu-shares`; default 1024.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus` (`0-2,4`).
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit`; 0 or -1 is unlimited.
    pub pids_limit: Option<i64>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--tmpfs PATH[:opts]`.
    pub tmpfs: Vec<String>,
    /// `--cap-add`, names with or without `CAP_`, any case, or `ALL`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`, the same forms.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt`: `seccomp=FILE|unconfined|<json>`, `no-new-privileges[:true|false]`,
    /// `apparmor=...`/`label=...` (accepted, nothing enforces them here).
    pub security_opt: Vec<String>,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<String>,
    /// `--restart no|on-failure[:N]|always|unless-stopped`; empty is `no`.
    pub restart: String,
    /// `--runtime`: the OCI runtime binary; `None` is kapsel-runtime.
    pub runtime: Option<String>,
    /// `--init`: run `kapsel-init` as PID 1.
    pub init: bool,
    /// `--network`.
    pub network: NetworkMode,
    /// `-v HOST:CTR[:ro|rw]`, `-v NAME:CTR[:ro|rw]`, `-v CTR` (see [`Bind`]).
    pub binds: Vec<String>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` seconds; default 10.
    pub stop_timeout: Option<i64>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--log-opt KEY=VALUE` of the json-file driver: `max-size` (a size; `-1` unlimited) and
    /// `max-file` (files kept, the current one included; needs `max-size`).
    pub log_opts: Vec<String>,
}

/// Log rotation when `--log-opt` says nothing: 10 MB, 5 files (a container's logs never fill
/// the disk; Docker's json-file default has no limit).
pub const LOG_MAX_SIZE: u64 = 10_000_000;
pub const LOG_MAX_FILES: u32 = 5;

impl RunOptions {
    /// The log writer's rotation from `--log-opt` (Docker's json-file `max-size`/`max-file`).
    pub fn log_writer_options(&self) -> Result<crate::logs::WriterOptions, OptionsError> {
        let mut max_size = None;
        let mut max_files = None;
        for o in &self.log_opts {
            let bad = |why: &str| OptionsError::LogOpt {
                value: o.clone(),
                why: why.to_string(),
            };
            let (k, v) = o.split_once('=').ok_or_else(|| bad("want KEY=VALUE"))?;
            match k {
                "max-size" => {
                    max_size = Some(match parse_size(v) {
                        _ if v == "-1" => None,
                        Ok(n) if n > 0 => Some(n as u64),
                        _ => return Err(bad("want a size such as 10m, 512k or -1")),
                    })
                }
                "max-file" => match v.parse::<u32>() {
                    Ok(n) if n >= 1 => max_files = Some(n),
                    _ => return Err(bad("want a number of files, at least 1")),
                },
                _ => {
                    return Err(bad(
                        "unknown log opt for the json-file driver: want max-size or max-file",
                    ))
                }
            }
        }
        Ok(match (max_size, max_files) {
            (None, None) => crate::logs::WriterOptions {
                max_size: Some(LOG_MAX_SIZE),
                max_files: LOG_MAX_FILES,
            },
            (Some(size), files) => crate::logs::WriterOptions {
                max_size: size,
                max_files: files.unwrap_or(1),
            },
            (None, Some(1)) => crate::logs::WriterOptions {
                max_size: None,
                max_files: 1,
            },
            (None, Some(_)) => {
                return Err(OptionsError::LogOpt {
                    value: "max-file".into(),
                    why: "max-file needs max-size: set --log-opt max-size too".into(),
                })
            }
        })
    }
}

/// `--network`. Bridge networking comes in its own issue: until then the default is `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace of its own with only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

impl FromStr for NetworkMode {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, OptionsError> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(OptionsError::Network(other.to_string())),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        })
    }
}

/// `--restart`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// `on-failure[:N]`; `None` retries for ever.
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, OptionsError> {
        let bad = || OptionsError::Restart(s.to_string());
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        match (name, count) {
            ("" | "no", None) => Ok(RestartPolicy::No),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure { max_retries: None }),
            ("on-failure", Some(c)) => {
                let n: u32 = c.parse().map_err(|_| bad())?;
                Ok(RestartPolicy::OnFailure {
                    max_retries: Some(n),
                })
            }
            ("always" | "unless-stopped" | "no", Some(_)) => {
                Err(OptionsError::RestartCount(name.to_string()))
            }
            _ => Err(bad()),
        }
    }
}

/// One `--ulimit`, parsed. `u64::MAX` is unlimited (RLIM_INFINITY; `-1` on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// The OCI name, `RLIMIT_NOFILE`.
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The `--ulimit` names Docker takes and their OCI names.
const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

impl FromStr for Ulimit {
    type Err = OptionsError;
    fn from_str(s: &str) -> Result<Self, OptionsError> {
        let bad = |why: &str| OptionsError::Ulimit {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| bad("want name=soft[:hard]"))?;
        let oci = ULIMITS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                let names: Vec<&str> = ULIMITS.iter().map(|(n, _)| *n).collect();
                bad(&format!("unknown name, known: {}", names.join(", ")))
            })?;
        let value = |v: &str| -> Result<u64, OptionsError> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(u64::MAX),
                Ok(n) if n >= 0 => Ok(n as u64),
                _ => Err(bad(&format!("{v:?} is not a number (or -1 for unlimited)"))),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => {
                let v = value(values)?;
                (v, v)
            }
        };
        if soft > hard {
            return Err(bad("the soft limit must not be above the hard limit"));
        }
        Ok(Ulimit {
            name: oci.to_string(),
            soft,
            hard,
        })
    }
}

/// Why some options cannot make a container.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("invalid --cpus {0}: want 0.01 to {1}, the number of CPUs of this host")]
    Cpus(f64, usize),
    #[error("invalid --cpuset-cpus {0:?}: want CPU numbers and ranges such as 0-2,4")]
    Cpuset(String),
    #[error("invalid memory size {0:?}: want a number with an optional unit b, k, m, g, t or p")]
    Size(String),
    #[error("invalid --memory {0}: the minimum memory limit is 6 MiB (6291456 bytes)")]
    MemoryTooSmall(i64),
    #[error("--memory-swap needs --memory: set the memory limit too")]
    SwapWithoutMemory,
    #[error(
        "invalid --memory-swap {swap}: it is memory plus swap and must be at least --memory \
         {memory} (or -1 for unlimited swap)"
    )]
    SwapBelowMemory { swap: i64, memory: i64 },
    #[error(
        "invalid --memory {memory}: it is above the container's memory+swap limit {swap}; \
         update --memory-swap at the same time"
    )]
    MemoryAboveSwap { memory: i64, swap: i64 },
    #[error("invalid --ulimit {value:?}: {why}")]
    Ulimit { value: String, why: String },
    #[error("invalid --restart {0:?}: want no, on-failure[:N], always or unless-stopped")]
    Restart(String),
    #[error("invalid --restart: a maximum retry count cannot be used with policy {0:?}")]
    RestartCount(String),
    #[error("conflicting options: --restart {0} and --rm")]
    RestartWithRm(String),
    #[error(
        "invalid --network {0:?}: bridge networking is not available yet; use --network none \
         or --network host"
    )]
    Network(String),
    #[error("invalid --tmpfs {0:?}: the mount point must be an absolute path")]
    Tmpfs(String),
    #[error("invalid --log-opt {value:?}: {why}")]
    LogOpt { value: String, why: String },
    #[error("invalid -v {value:?}: {why}")]
    Bind { value: String, why: String },
    #[error("duplicate mount point: {0}: give each -v its own container path")]
    DuplicateMount(String),
    #[error("invalid --security-opt {0:?}: want seccomp=FILE|unconfined, no-new-privileges[:true|false], systempaths=unconfined, apparmor=... or label=...")]
    SecurityOpt(String),
    #[error("unknown capability {0:?} in --cap-add/--cap-drop")]
    Capability(String),
    #[error("invalid --stop-signal {0:?}: want a signal name (SIGTERM, TERM) or number")]
    StopSignal(String),
    #[error("invalid --stop-timeout {0}: want seconds, -1 to wait for ever")]
    StopTimeout(i64),
    #[error("invalid --pids-limit {0}: want a positive number, or 0 or -1 for unlimited")]
    PidsLimit(i64),
    #[error("invalid --cpu-shares {0}: want 2 to 262144")]
    CpuShares(u64),
    #[error("invalid -w {0:?}: the working directory must be an absolute path")]
    Workdir(String),
    #[error("invalid --hostname {0:?}: want at most 64 letters, digits, '-' and '.'")]
    Hostname(String),
    #[error("invalid -e {0:?}: a variable name must not be empty")]
    Env(String),
}

/// What a `-v` mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSource {
    /// `-v /host/path:/ctr`: a host directory or file.
    Host(String),
    /// `-v NAME:/ctr`: the named volume, made if missing.
    Volume(String),
    /// `-v /ctr`: a new anonymous volume.
    Anonymous,
}

/// A `-v` mount, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: BindSource,
    pub destination: String,
    pub read_only: bool,
}

impl Bind {
    /// The host path of a host bind.
    pub fn host_path(&self) -> Option<&str> {
        match &self.source {
            BindSource::Host(p) => Some(p),
            _ => None,
        }
    }
}

fn is_mode(s: &str) -> bool {
    s.split(',').all(|m| {
        matches!(
            m,
            "ro" | "rw" | "z" | "Z" | "rprivate" | "private" | "nocopy"
        )
    })
}

impl FromStr for Bind {
    type Err = OptionsError;
    /// Docker's forms: `/host:/ctr[:mode]`, `NAME:/ctr[:mode]`, `/ctr[:mode]`.
    fn from_str(s: &str) -> Result<Self, OptionsError> {
        let bad = |why: &str| OptionsError::Bind {
            value: s.to_string(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (source, destination, mode) = match parts.as_slice() {
            [dst] => (None, *dst, None),
            [dst, mode] if is_mode(mode) => (None, *dst, Some(*mode)),
            [src, dst] => (Some(*src), *dst, None),
            [src, dst, mode] => (Some(*src), *dst, Some(*mode)),
            _ => return Err(bad("want HOST-PATH:CONTAINER-PATH, NAME:CONTAINER-PATH or CONTAINER-PATH, then [:ro|rw]")),
        };
        let source = match source {
            None => BindSource::Anonymous,
            Some(p) if p.starts_with('/') => BindSource::Host(p.to_string()),
            Some("") => return Err(bad("the source must not be empty")),
            Some(name) => {
                crate::volumes::validate_name(name).map_err(|e| bad(&e.to_string()))?;
                BindSource::Volume(name.to_string())
            }
        };
        if !destination.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        if destination == "/" {
            return Err(bad("the container path must not be /"));
        }
        let mut read_only = false;
        if let Some(mode) = mode {
            for m in mode.split(',') {
                match m {
                    "ro" => read_only = true,
                    "rw" => read_only = false,
                    // SELinux relabelling and propagation flags: nothing to do without SELinux,
                    // and binds are rprivate. `nocopy`: accepted, volumes are always seeded.
                    "z" | "Z" | "rprivate" | "private" | "nocopy" => {}
                    other => return Err(bad(&format!("unknown mode {other:?}: want ro or rw"))),
                }
            }
        }
        Ok(Bind {
            source,
            destination: destination.to_string(),
            read_only,
        })
    }
}

/// `--security-opt seccomp=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompOpt {
    /// No `seccomp=`: Docker's default profile (unless privileged).
    Default,
    Unconfined,
    /// A profile file (Docker's format or OCI `linux.seccomp`) on kapseld's host.
    File(String),
    /// The profile's JSON text itself (what the Docker CLI sends after reading the file).
    Json(String),
}

/// The parsed `--security-opt` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOpts {
    pub seccomp: SeccompOpt,
    pub no_new_privileges: bool,
    /// `systempaths=unconfined`: no masked and no read-only paths.
    pub systempaths_unconfined: bool,
}

/// Docker's `RAMInBytes`: `64m`, `1g`, `512k`, `100` (bytes), `1.5g`; units are powers of 1024,
/// any case, with an optional `b` (`64mb`).
pub fn parse_size(s: &str) -> Result<i64, OptionsError> {
    let bad = || OptionsError::Size(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "p" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// The smallest memory limit Docker accepts.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The CFS period `--cpus` uses.
pub const CPU_PERIOD: u64 = 100_000;

impl RunOptions {
    /// Checks every option that needs neither the image nor the host's files, so that
    /// `kapsel run` fails before anything is made.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.validate_with_cpus(host_cpus)
    }

    fn validate_with_cpus(&self, host_cpus: usize) -> Result<(), OptionsError> {
        if let Some(cpus) = self.cpus {
            // The kernel's smallest CFS quota is 1 ms (0.01 CPU at a 100 ms period).
            if !(cpus.is_finite() && cpus > 0.0 && cpus <= host_cpus as f64)
                || self.cpu_quota().is_some_and(|q| q < 1000)
            {
                return Err(OptionsError::Cpus(cpus, host_cpus));
            }
        }
        if let Some(set) = &self.cpuset_cpus {
            if !valid_cpuset(set) {
                return Err(OptionsError::Cpuset(set.clone()));
            }
        }
        if let Some(m) = self.memory {
            if m != 0 && m < MIN_MEMORY {
                return Err(OptionsError::MemoryTooSmall(m));
            }
        }
        if let Some(swap) = self.memory_swap {
            match self.memory {
                None | Some(0) if swap != 0 => return Err(OptionsError::SwapWithoutMemory),
                Some(memory) if swap != -1 && swap != 0 && swap < memory => {
                    return Err(OptionsError::SwapBelowMemory { swap, memory })
                }
                _ => {}
            }
        }
        if let Some(shares) = self.cpu_shares {
            if shares != 0 && !(2..=262_144).contains(&shares) {
                return Err(OptionsError::CpuShares(shares));
            }
        }
        if let Some(p) = self.pids_limit {
            if p < -1 {
                return Err(OptionsError::PidsLimit(p));
            }
        }
        if let Some(t) = self.stop_timeout {
            if t < -1 {
                return Err(OptionsError::StopTimeout(t));
            }
        }
        if let Some(sig) = &self.stop_signal {
            parse_signal(sig).ok_or_else(|| OptionsError::StopSignal(sig.clone()))?;
        }
        self.log_writer_options()?;
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(OptionsError::Workdir(w.clone()));
            }
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(OptionsError::Hostname(h.clone()));
            }
        }
        for e in &self.env {
            if e.is_empty() || e.starts_with('=') {
                return Err(OptionsError::Env(e.clone()));
            }
        }
        for u in &self.ulimits {
            u.parse::<Ulimit>()?;
        }
        let policy = self.restart_policy()?;
        if self.auto_remove && policy != RestartPolicy::No {
            return Err(OptionsError::RestartWithRm(self.restart.clone()));
        }
        for t in &self.tmpfs {
            let path = t.split_once(':').map_or(t.as_str(), |(p, _)| p);
            if !path.starts_with('/') {
                return Err(OptionsError::Tmpfs(t.clone()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &self.binds {
            let b = b.parse::<Bind>()?;
            let dest = b.destination.trim_end_matches('/').to_string();
            if !seen.insert(dest) {
                return Err(OptionsError::DuplicateMount(b.destination));
            }
        }
        self.security()?;
        self.capabilities().map(drop)
    }

    /// The container's capabilities as Docker computes them: all with `--privileged`; else
    /// Docker's default 14, less `--cap-drop`, plus `--cap-add`; `--cap-add ALL` is every
    /// capability less the drops, `--cap-drop ALL` keeps only the adds.
    pub fn capabilities(&self) -> Result<Vec<String>, OptionsError> {
        if self.privileged {
            return Ok(all_capabilities());
        }
        let add = normalize_caps(&self.cap_add)?;
        let drop = normalize_caps(&self.cap_drop)?;
        let all = |v: &[String]| v.iter().any(|c| c == "ALL");
        let mut caps: Vec<String> = if all(&add) {
            all_capabilities()
                .into_iter()
                .filter(|c| !drop.contains(c))
                .collect()
        } else if all(&drop) {
            add
        } else {
            DEFAULT_CAPS
                .iter()
                .map(|c| c.to_string())
                .filter(|c| !drop.contains(c))
                .chain(add)
                .collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        caps.retain(|c| seen.insert(c.clone()));
        Ok(caps)
    }

    /// `--restart`, parsed.
    pub fn restart_policy(&self) -> Result<RestartPolicy, OptionsError> {
        self.restart.parse()
    }

    /// The parsed `--ulimit`s.
    pub fn ulimits(&self) -> Result<Vec<Ulimit>, OptionsError> {
        self.ulimits.iter().map(|u| u.parse()).collect()
    }

    /// The parsed `-v`s.
    pub fn binds(&self) -> Result<Vec<Bind>, OptionsError> {
        self.binds.iter().map(|b| b.parse()).collect()
    }

    /// The parsed `--security-opt`s.
    pub fn security(&self) -> Result<SecurityOpts, OptionsError> {
        let mut out = SecurityOpts {
            seccomp: SeccompOpt::Default,
            no_new_privileges: false,
            systempaths_unconfined: false,
        };
        for opt in &self.security_opt {
            // Docker takes both `key=value` and the older `key:value`.
            let (key, value) = match opt.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            match (key, value) {
                ("no-new-privileges", None | Some("true")) => out.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => out.no_new_privileges = false,
                ("seccomp", Some("unconfined")) => out.seccomp = SeccompOpt::Unconfined,
                ("seccomp", Some(v)) if v.trim_start().starts_with('{') => {
                    out.seccomp = SeccompOpt::Json(v.to_string())
                }
                ("seccomp", Some(v)) if !v.is_empty() => {
                    out.seccomp = SeccompOpt::File(v.to_string())
                }
                ("systempaths", Some("unconfined")) => out.systempaths_unconfined = true,
                ("apparmor" | "label", Some(_)) => {}
                _ => return Err(OptionsError::SecurityOpt(opt.clone())),
            }
        }
        Ok(out)
    }

    /// The CFS quota for `--cpus`, with period [`CPU_PERIOD`].
    pub fn cpu_quota(&self) -> Option<i64> {
        self.cpus.map(|c| (c * CPU_PERIOD as f64).round() as i64)
    }

    /// A live `update` of `--memory` and/or `--memory-swap`, by Docker's rules: a new memory
    /// limit above the container's memory+swap needs a new `--memory-swap` too; memory+swap
    /// needs a memory limit and must be at least it. Records the new values (a memory+swap
    /// that was derived, twice the old memory, is kept as it was, as Docker stores it) and
    /// returns the `(limit, swap)` to send: both, because the runtime writes only what it is
    /// given, and cgroup v2's memory.swap.max (swap alone) must be recomputed from both. The
    /// swap is `None` when the container has no swap limit at all (no memory limit before).
    pub fn update_memory(
        &mut self,
        memory: Option<i64>,
        swap: Option<i64>,
    ) -> Result<(i64, Option<i64>), OptionsError> {
        let old_memory = self.memory.filter(|m| *m > 0);
        // The memory+swap in force: -1 unlimited, None no limit was ever set.
        let old_swap = match self.memory_swap {
            Some(s) if s != 0 => Some(s),
            _ => old_memory.map(|m| m.saturating_mul(2)),
        };
        let new_memory = memory.filter(|m| *m != 0).or(old_memory);
        if let Some(m) = memory.filter(|m| *m != 0) {
            if m < MIN_MEMORY {
                return Err(OptionsError::MemoryTooSmall(m));
            }
        }
        let Some(limit) = new_memory else {
            return Err(OptionsError::SwapWithoutMemory);
        };
        let new_swap = match swap.filter(|s| *s != 0) {
            Some(-1) => Some(-1),
            Some(s) if s < limit => {
                return Err(OptionsError::SwapBelowMemory {
                    swap: s,
                    memory: limit,
                })
            }
            Some(s) => Some(s),
            None => match old_swap {
                Some(s) if s > 0 && limit > s => {
                    return Err(OptionsError::MemoryAboveSwap {
                        memory: limit,
                        swap: s,
                    })
                }
                // No memory limit before: swap stays unlimited, as Docker leaves it.
                None => Some(-1),
                kept => kept,
            },
        };
        self.memory = Some(limit);
        self.memory_swap = new_swap;
        Ok((limit, new_swap))
    }
}

/// Docker's default capabilities.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the running kernel knows (up to /proc/sys/kernel/cap_last_cap), as
/// Docker's `--privileged` asks for. The runtime leaves out those outside its bounding set.
pub fn all_capabilities() -> Vec<String> {
    let last = kapsel_runtime::init::caps::last_cap() as usize;
    kapsel_runtime::init::caps::NAMES
        .iter()
        .take(last + 1)
        .map(|c| c.to_string())
        .collect()
}

/// `net_admin`, `NET_ADMIN`, `cap_net_admin` → `CAP_NET_ADMIN`; `all` → `ALL`.
fn normalize_caps(names: &[String]) -> Result<Vec<String>, OptionsError> {
    names
        .iter()
        .map(|n| {
            if n.trim().eq_ignore_ascii_case("ALL") {
                return Ok("ALL".to_string());
            }
            kapsel_runtime::init::caps::parse(n.trim())
                .map(|i| kapsel_runtime::init::caps::NAMES[i as usize].to_string())
                .ok_or_else(|| OptionsError::Capability(n.clone()))
        })
        .collect()
}

/// `0-2,4,7`: CPU numbers and ascending ranges.
fn valid_cpuset(s: &str) -> bool {
    let num = |x: &str| !x.is_empty() && x.len() < 6 && x.bytes().all(|b| b.is_ascii_digit());
    !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => num(a) && num(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok(),
            None => num(part),
        })
}

/// A signal by name (`SIGTERM`, `TERM`, any case) or number.
pub fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions {
            image: "busybox".into(),
            ..RunOptions::default()
        }
    }

    #[test]
    fn log_opts_set_the_rotation() {
        let with = |o: &[&str]| {
            RunOptions {
                log_opts: o.iter().map(|s| s.to_string()).collect(),
                ..opts()
            }
            .log_writer_options()
        };
        let w = with(&[]).unwrap();
        assert_eq!(
            (w.max_size, w.max_files),
            (Some(LOG_MAX_SIZE), LOG_MAX_FILES)
        );
        let w = with(&["max-size=1k", "max-file=3"]).unwrap();
        assert_eq!((w.max_size, w.max_files), (Some(1024), 3));
        let w = with(&["max-size=10m"]).unwrap();
        assert_eq!((w.max_size, w.max_files), (Some(10 << 20), 1));
        let w = with(&["max-size=-1"]).unwrap();
        assert_eq!((w.max_size, w.max_files), (None, 1));
        for bad in [
            &["max-size=0"][..],
            &["max-size=lots"],
            &["max-file=0"],
            &["max-file=3"],
            &["compress=true"],
            &["max-size"],
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --log-opt"), "{bad:?}: {e}");
        }
        assert!(RunOptions {
            log_opts: vec!["nosuch=1".into()],
            ..opts()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn sizes_are_read_as_docker_reads_them() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        for bad in ["", "m", "12x", "-5m", "1..2m", "abc"] {
            assert_eq!(
                parse_size(bad),
                Err(OptionsError::Size(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpus_must_be_positive_and_within_the_host() {
        let o = |c: f64| RunOptions {
            cpus: Some(c),
            ..opts()
        };
        assert!(o(0.5).validate_with_cpus(2).is_ok());
        assert_eq!(o(0.5).cpu_quota(), Some(50_000));
        assert_eq!(o(1.25).cpu_quota(), Some(125_000));
        assert!(o(2.0).validate_with_cpus(2).is_ok());
        for bad in [0.0, -1.0, 2.5, f64::NAN, 0.000001] {
            let err = o(bad).validate_with_cpus(2).unwrap_err();
            assert!(matches!(err, OptionsError::Cpus(_, 2)), "{bad}: {err}");
        }
        assert!(o(3.0)
            .validate_with_cpus(2)
            .unwrap_err()
            .to_string()
            .contains("want 0.01 to 2"));
    }

    #[test]
    fn memory_and_swap_follow_dockers_rules() {
        let o = |m: Option<i64>, s: Option<i64>| RunOptions {
            memory: m,
            memory_swap: s,
            ..opts()
        };
        assert!(o(Some(64 << 20), None).validate().is_ok());
        assert!(o(Some(64 << 20), Some(-1)).validate().is_ok());
        assert!(o(Some(64 << 20), Some(128 << 20)).validate().is_ok());
        assert_eq!(
            o(Some(1 << 20), None).validate(),
            Err(OptionsError::MemoryTooSmall(1 << 20))
        );
        assert_eq!(
            o(None, Some(128 << 20)).validate(),
            Err(OptionsError::SwapWithoutMemory)
        );
        assert_eq!(
            o(Some(64 << 20), Some(32 << 20)).validate(),
            Err(OptionsError::SwapBelowMemory {
                swap: 32 << 20,
                memory: 64 << 20
            })
        );
    }

    #[test]
    fn memory_updates_follow_dockers_rules() {
        const M: i64 = 1 << 20;
        let o = |m: Option<i64>, s: Option<i64>| RunOptions {
            memory: m,
            memory_swap: s,
            ..opts()
        };
        // -m 64m --memory-swap 96m, then -m 128m --memory-swap 192m: both sent
        let mut a = o(Some(64 * M), Some(96 * M));
        assert_eq!(
            a.update_memory(Some(128 * M), Some(192 * M)),
            Ok((128 * M, Some(192 * M)))
        );
        assert_eq!((a.memory, a.memory_swap), (Some(128 * M), Some(192 * M)));
        // memory alone above the memory+swap in force: Docker's refusal, nothing recorded
        let mut b = o(Some(64 * M), Some(96 * M));
        assert_eq!(
            b.update_memory(Some(128 * M), None),
            Err(OptionsError::MemoryAboveSwap {
                memory: 128 * M,
                swap: 96 * M
            })
        );
        assert_eq!((b.memory, b.memory_swap), (Some(64 * M), Some(96 * M)));
        // memory alone within it: the old memory+swap is sent again (v2 recomputes swap.max)
        assert_eq!(
            b.update_memory(Some(80 * M), None),
            Ok((80 * M, Some(96 * M)))
        );
        // -m 64m alone has memory+swap 128m: kept, not re-derived from the new memory
        let mut c = o(Some(64 * M), None);
        assert_eq!(
            c.update_memory(Some(100 * M), None),
            Ok((100 * M, Some(128 * M)))
        );
        assert_eq!(c.memory_swap, Some(128 * M));
        // unlimited swap stays unlimited; no memory limit before: swap unlimited
        let mut d = o(Some(64 * M), Some(-1));
        assert_eq!(
            d.update_memory(Some(1024 * M), None),
            Ok((1024 * M, Some(-1)))
        );
        let mut e = o(None, None);
        assert_eq!(e.update_memory(Some(64 * M), None), Ok((64 * M, Some(-1))));
        // --memory-swap alone: needs a memory limit, and at least it
        assert_eq!(
            o(None, None).update_memory(None, Some(64 * M)),
            Err(OptionsError::SwapWithoutMemory)
        );
        assert_eq!(
            o(Some(64 * M), None).update_memory(None, Some(32 * M)),
            Err(OptionsError::SwapBelowMemory {
                swap: 32 * M,
                memory: 64 * M
            })
        );
        assert_eq!(
            o(Some(64 * M), None).update_memory(None, Some(256 * M)),
            Ok((64 * M, Some(256 * M)))
        );
        assert_eq!(
            o(None, None).update_memory(Some(M), None),
            Err(OptionsError::MemoryTooSmall(M))
        );
    }

    #[test]
    fn ulimits_parse_and_reject_bad_input() {
        assert_eq!(
            "nofile=1024:2048".parse::<Ulimit>(),
            Ok(Ulimit {
                name: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 2048
            })
        );
        assert_eq!(
            "core=-1".parse::<Ulimit>().map(|u| (u.soft, u.hard)),
            Ok((u64::MAX, u64::MAX))
        );
        for (bad, why) in [
            ("nofile", "name=soft"),
            ("files=10", "unknown name"),
            ("nofile=x", "not a number"),
            ("nofile=20:10", "soft limit must not be above"),
            ("nofile=-2", "not a number"),
        ] {
            let err = bad.parse::<Ulimit>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn restart_policies() {
        assert_eq!("".parse(), Ok(RestartPolicy::No));
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("unless-stopped".parse(), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(
            "on-failure".parse(),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
        assert_eq!(
            "on-failure:3".parse(),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert_eq!(
            "always:3".parse::<RestartPolicy>(),
            Err(OptionsError::RestartCount("always".into()))
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        let rm = RunOptions {
            restart: "always".into(),
            auto_remove: true,
            ..opts()
        };
        assert_eq!(
            rm.validate(),
            Err(OptionsError::RestartWithRm("always".into()))
        );
    }

    #[test]
    fn binds_volumes_and_anonymous_volumes_parse_as_docker() {
        let b = |source, destination: &str, read_only| Bind {
            source,
            destination: destination.into(),
            read_only,
        };
        let host = |p: &str| BindSource::Host(p.into());
        let vol = |n: &str| BindSource::Volume(n.into());
        for (text, want) in [
            ("/srv:/data:ro", b(host("/srv"), "/data", true)),
            ("/srv:/data", b(host("/srv"), "/data", false)),
            ("data:/data", b(vol("data"), "/data", false)),
            ("my.vol-1:/data:ro,z", b(vol("my.vol-1"), "/data", true)),
            ("/data", b(BindSource::Anonymous, "/data", false)),
            ("/data:ro", b(BindSource::Anonymous, "/data", true)),
            ("/data:nocopy", b(BindSource::Anonymous, "/data", false)),
        ] {
            assert_eq!(text.parse::<Bind>(), Ok(want), "{text}");
        }
        assert_eq!(
            "/srv:/data".parse::<Bind>().unwrap().host_path(),
            Some("/srv")
        );
        for (bad, why) in [
            ("/srv:data", "container path must be absolute"),
            ("data", "container path must be absolute"),
            (
                "a/b:/data",
                "\"a/b\" includes invalid characters for a local volume name",
            ),
            ("x:/data", "\"x\" includes invalid characters"),
            ("-v:/data", "includes invalid characters"),
            (":/data", "must not be empty"),
            ("/srv:/data:rx", "unknown mode"),
            ("/srv:/", "must not be /"),
            ("/", "must not be /"),
            ("a:b:c:d", "want HOST-PATH"),
        ] {
            let err = bad.parse::<Bind>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn two_mounts_on_one_path_are_refused() {
        let o = RunOptions {
            binds: vec!["data:/data".into(), "/srv:/data/".into()],
            ..opts()
        };
        assert_eq!(
            o.validate(),
            Err(OptionsError::DuplicateMount("/data/".into()))
        );
        let o = RunOptions {
            binds: vec!["data:/data".into(), "/srv:/data/sub".into(), "/x".into()],
            ..opts()
        };
        o.validate().unwrap();
    }

    #[test]
    fn security_options() {
        let o = |v: &[&str]| RunOptions {
            security_opt: v.iter().map(|s| s.to_string()).collect(),
            ..opts()
        };
        let s = o(&["no-new-privileges"]).security().unwrap();
        assert!(s.no_new_privileges);
        assert_eq!(s.seccomp, SeccompOpt::Default);
        let s = o(&["no-new-privileges:true", "no-new-privileges=false"])
            .security()
            .unwrap();
        assert!(!s.no_new_privileges);
        assert_eq!(
            o(&["seccomp=unconfined"]).security().unwrap().seccomp,
            SeccompOpt::Unconfined
        );
        assert_eq!(
            o(&["seccomp=/etc/p.json"]).security().unwrap().seccomp,
            SeccompOpt::File("/etc/p.json".into())
        );
        assert!(matches!(
            o(&["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"])
                .security()
                .unwrap()
                .seccomp,
            SeccompOpt::Json(_)
        ));
        assert!(o(&["apparmor=unconfined", "label=disable"])
            .security()
            .is_ok());
        assert!(!o(&[]).security().unwrap().systempaths_unconfined);
        assert!(
            o(&["systempaths=unconfined"])
                .security()
                .unwrap()
                .systempaths_unconfined
        );
        for bad in [
            "seccomp",
            "nonsense",
            "no-new-privileges:maybe",
            "systempaths=confined",
        ] {
            assert_eq!(
                o(&[bad]).security(),
                Err(OptionsError::SecurityOpt(bad.into()))
            );
        }
    }

    #[test]
    fn other_checks() {
        let bad = [
            RunOptions {
                cpuset_cpus: Some("1-0".into()),
                ..opts()
            },
            RunOptions {
                tmpfs: vec!["run:size=1m".into()],
                ..opts()
            },
            RunOptions {
                workdir: Some("rel".into()),
                ..opts()
            },
            RunOptions {
                stop_signal: Some("SIGNOPE".into()),
                ..opts()
            },
            RunOptions {
                cap_add: vec!["CAP_FLY".into()],
                ..opts()
            },
            RunOptions {
                hostname: Some("bad name".into()),
                ..opts()
            },
            RunOptions {
                pids_limit: Some(-5),
                ..opts()
            },
            RunOptions {
                env: vec!["=x".into()],
                ..opts()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        let good = RunOptions {
            cpuset_cpus: Some("0,1-1".into()),
            tmpfs: vec!["/run:size=1m".into()],
            stop_signal: Some("kill".into()),
            cap_add: vec!["net_admin".into(), "ALL".into()],
            cap_drop: vec!["cap_chown".into()],
            pids_limit: Some(-1),
            ..opts()
        };
        good.validate().unwrap();
        assert_eq!(
            parse_signal("usr1"),
            Some(nix::sys::signal::Signal::SIGUSR1)
        );
        assert_eq!(parse_signal("9"), Some(nix::sys::signal::Signal::SIGKILL));
        let bridge = "bridge".parse::<NetworkMode>().unwrap_err().to_string();
        assert!(bridge.contains("not available yet"), "{bridge}");
    }

    #[test]
    fn capabilities_as_docker_computes_them() {
        let o = |add: &[&str], drop: &[&str]| RunOptions {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..opts()
        };
        let default = o(&[], &[]).capabilities().unwrap();
        assert_eq!(default, DEFAULT_CAPS.map(String::from).to_vec());
        let c = o(
            &["net_admin", "CAP_SYS_ADMIN", "chown"],
            &["MKNOD", "cap_net_raw"],
        )
        .capabilities()
        .unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".into()) && c.contains(&"CAP_SYS_ADMIN".into()));
        assert!(!c.contains(&"CAP_MKNOD".into()) && !c.contains(&"CAP_NET_RAW".into()));
        assert_eq!(c.iter().filter(|x| *x == "CAP_CHOWN").count(), 1);
        assert_eq!(
            o(&["kill"], &["all"]).capabilities().unwrap(),
            vec!["CAP_KILL".to_string()]
        );
        let all = o(&["ALL"], &["sys_admin"]).capabilities().unwrap();
        assert!(all.len() > 30 && !all.contains(&"CAP_SYS_ADMIN".into()));
        let p = RunOptions {
            privileged: true,
            ..o(&[], &["ALL"])
        };
        assert_eq!(p.capabilities().unwrap(), all_capabilities());
        assert_eq!(
            o(&["fly"], &[]).capabilities(),
            Err(OptionsError::Capability("fly".into()))
        );
    }

    #[test]
    fn options_round_trip_through_json() {
        let o = RunOptions {
            name: "web".into(),
            cmd: Some(vec!["httpd".into(), "-f".into()]),
            entrypoint: Some(vec![]),
            memory: Some(64 << 20),
            network: NetworkMode::Host,
            ..opts()
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"network\":\"host\""), "{text}");
        let back: RunOptions = serde_json::from_str(&text).unwrap();
        assert_eq!(back, o);
        // Missing fields take their defaults (older clients).
        let min: RunOptions = serde_json::from_str(r#"{"image":"busybox"}"#).unwrap();
        assert_eq!(min, opts());
    }
}
