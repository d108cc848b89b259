//! The parent side of `create` and `run`: state directory, cgroup, clone, maps, the protocol
//! with init (see `process/message.rs`), and a complete clean-up when anything fails.

use super::{io_err, Container, ContainerError, State, Status};
use crate::cgroups::{Cgroup, CgroupError};
use crate::init::{self, InitArgs, StartSignal};
use crate::process::message::{Channel, Message};
use crate::process::{clone_fork, clone_fork_into_cgroup, exit_child};
use crate::spec::{IdMapping, NamespaceType, Spec};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    pub rootless: bool,
}

/// `create` waits for `start` through exec.fifo; `run` starts at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Run,
}

/// Removes what a failed create made, in reverse order, unless disarmed.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill and waitpid take integers; the pid is our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn absolute(p: &Path) -> Result<PathBuf, ContainerError> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(io_err("current directory"))?
            .join(p)
    };
    // Drop "." components so the bundle path reads as the user would write it.
    Ok(abs
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect())
}

/// Creates the container; returns it with init waiting (Create) or started (Run).
pub fn create(opts: &CreateOpts, mode: Mode) -> Result<Container, ContainerError> {
    create_with_console(opts, mode, None)
}

/// As [`create`], with `console` (a connected unix socket) receiving the pty master instead of
/// `--console-socket`; the foreground `run` relays a terminal this way.
pub fn create_with_console(
    opts: &CreateOpts,
    mode: Mode,
    console: Option<OwnedFd>,
) -> Result<Container, ContainerError> {
    super::validate_id(&opts.id)?;
    let bundle = absolute(&opts.bundle)?;
    let spec = Spec::load(&bundle)?;
    let rootfs = spec.rootfs(&bundle);
    if !rootfs.is_dir() {
        return Err(ContainerError::Invalid(format!(
            "rootfs {} does not exist or is not a directory (root.path in {}/config.json)",
            rootfs.display(),
            bundle.display()
        )));
    }
    if spec.process().terminal && opts.console_socket.is_none() && mode == Mode::Create {
        return Err(ContainerError::Invalid(
            "process.terminal is true: create needs --console-socket".into(),
        ));
    }

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&opts.root)
        .map_err(io_err(format!("create state root {}", opts.root.display())))?;
    let dir = opts.root.join(&opts.id);
    match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::Exists(opts.id.clone()))
        }
        Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
    }
    let mut cleanup = Cleanup {
        dir: Some(dir.clone()),
        cgroup: None,
        pid: None,
    };

    let start = match mode {
        Mode::Create => {
            nix::unistd::mkfifo(
                &dir.join("exec.fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| io_err("create exec.fifo")(e.into()))?;
            let fd = nix::fcntl::open(
                &dir,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| io_err("open state directory")(e.into()))?;
            StartSignal::Fifo(fd)
        }
        Mode::Run => StartSignal::Message,
    };

    // Where the cgroup will be, recorded in a first state.json (marked `creating`) before
    // anything is made on the host: a runtime killed at any later point leaves a state that
    // `delete --force` can clean up completely.
    let linux = spec.linux.as_ref();
    let planned = Cgroup::for_host(linux.and_then(|l| l.cgroups_path.as_deref()), &opts.id)?;
    let mut container = Container {
        dir: dir.clone(),
        state: State {
            id: opts.id.clone(),
            init_pid: 0,
            init_start_time: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: crate::time::now(),
            owner: owner_name(),
            cgroup: Some(planned.clone()),
            config: spec.clone(),
            rootless: opts.rootless,
            creating: true,
        },
    };
    container.save()?;

    let cgroup = setup_cgroup(&spec, planned, opts.rootless)?;
    cleanup.cgroup = cgroup.clone();
    container.state.cgroup = cgroup.clone();

    let console = match &opts.console_socket {
        _ if console.is_some() => console,
        Some(p) if spec.process().terminal => Some(OwnedFd::from(
            std::os::unix::net::UnixStream::connect(p)
                .map_err(io_err(format!("connect to console socket {}", p.display())))?,
        )),
        _ => None,
    };

    let (parent, child) = Channel::pair().map_err(io_err("socketpair"))?;
    let joins = open_joined_namespaces(&spec)?;
    let offsets = spec.linux.as_ref().and_then(|l| l.time_offsets.clone());
    let mut flags = 0;
    for ns in spec.linux.iter().flat_map(|l| &l.namespaces) {
        if ns.path.is_none() && ns.typ != NamespaceType::Cgroup {
            flags |= ns.typ.clone_flag();
        }
    }
    let via_stage1 = !joins.is_empty() || offsets.is_some();
    if offsets.is_some() {
        flags &= !NamespaceType::Time.clone_flag();
    }
    // Without a user namespace, init joins its v1 cgroup itself (cheap); otherwise the
    // parent moves it (init's credentials may not reach the host's cgroup files).
    let init_joins_cgroup = !via_stage1
        && !opts.rootless
        && spec.namespace(NamespaceType::User).is_none()
        && cgroup.as_ref().is_some_and(Cgroup::can_join_self);
    let creating_json = container.state_json(Status::Creating);
    let init_args = || InitArgs {
        spec: &spec,
        rootfs: rootfs.clone(),
        cgroup: cgroup.as_ref(),
        chan: Channel::clone_of(&child),
        start: match &start {
            StartSignal::Fifo(fd) => StartSignal::Fifo(fd.try_clone().expect("dup state dir fd")),
            StartSignal::Message => StartSignal::Message,
        },
        console: console
            .as_ref()
            .map(|c| c.try_clone().expect("dup console fd")),
        no_pivot: opts.no_pivot,
        preserve_fds: opts.preserve_fds,
        state_json: creating_json.clone(),
        new_keyring: !opts.no_new_keyring,
        die_with_parent: !via_stage1,
        join_cgroup: init_joins_cgroup,
    };

    let mut placed_in_cgroup = false;
    let pid = if via_stage1 {
        let stage1 = clone_fork(0).map_err(io_err("fork"))?;
        if stage1 == 0 {
            drop(parent);
            let k = crate::syscall::linux::Linux;
            stage1_main(&k, &joins, offsets.as_ref(), flags, &child, init_args);
        }
        cleanup.pid = Some(stage1);
        let pid = match parent.recv() {
            Ok(Some(Message::Stage1Pid(pid))) => pid,
            Ok(Some(Message::Error(e))) => return Err(ContainerError::Init(e)),
            other => {
                return Err(ContainerError::Init(format!(
                    "joining namespaces failed: {other:?}"
                )))
            }
        };
        let _ = crate::process::wait_exit(stage1);
        pid
    } else {
        let born_in = cgroup.as_ref().and_then(Cgroup::open_v2_dir);
        let pid = match born_in
            .as_ref()
            .map(|fd| clone_fork_into_cgroup(flags, fd.as_fd()))
        {
            Some(Ok(pid)) => {
                placed_in_cgroup = true;
                pid
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!("clone3 into the cgroup: {e}; moving init after clone");
                }
                clone_fork(flags).map_err(|e| {
                    ContainerError::Init(format!("clone with the container's namespaces: {e}"))
                })?
            }
        };
        if pid == 0 {
            drop(parent);
            let k = crate::syscall::linux::Linux;
            init::run(&k, init_args());
        }
        pid
    };
    drop(child);
    cleanup.pid = Some(pid);
    container.state.init_pid = pid;
    container.state.init_start_time = super::proc_stat(pid).map(|s| s.0).unwrap_or_default();
    container.save()?;

    if let Some(linux) = &spec.linux {
        if spec
            .namespace(NamespaceType::User)
            .is_some_and(|n| n.path.is_none())
        {
            write_id_maps(pid, &linux.uid_mappings, &linux.gid_mappings)?;
        }
    }
    if let Some(cg) = cgroup
        .as_ref()
        .filter(|_| !init_joins_cgroup && !placed_in_cgroup)
    {
        cg.add_process(pid)?;
    }
    parent
        .send(&Message::Go)
        .map_err(|e| ContainerError::Init(format!("container init exited early: {e}")))?;
    loop {
        match parent.recv() {
            Ok(Some(Message::Hooks)) => {
                let h = spec
                    .hooks
                    .as_ref()
                    .expect("init asks only when hooks exist");
                let json = container.state_json(Status::Creating);
                let mut json_v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                json_v["pid"] = pid.into();
                let json = json_v.to_string();
                crate::hooks::run_all("prestart", &h.prestart, &json)?;
                crate::hooks::run_all("createRuntime", &h.create_runtime, &json)?;
                parent
                    .send(&Message::HooksDone)
                    .map_err(|e| ContainerError::Init(e.to_string()))?;
            }
            Ok(Some(Message::SeccompListener(fd))) => {
                forward_seccomp_listener(&spec, &container, pid, fd)?;
                parent
                    .send(&Message::SeccompListenerDone)
                    .map_err(|e| ContainerError::Init(e.to_string()))?;
            }
            Ok(Some(Message::Ready)) => break,
            Ok(Some(Message::Error(e))) => return Err(ContainerError::Init(e)),
            Ok(Some(m)) => return Err(ContainerError::Init(format!("unexpected message {m:?}"))),
            Ok(None) => {
                return Err(ContainerError::Init(
                    "container init exited during set-up".into(),
                ))
            }
            Err(e) => return Err(ContainerError::Init(e.to_string())),
        }
    }
    container.state.creating = false;
    container.save()?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    if mode == Mode::Run {
        parent
            .send(&Message::Start)
            .map_err(|e| ContainerError::Init(format!("start: {e}")))?;
    }
    cleanup.dir = None;
    cleanup.cgroup = None;
    cleanup.pid = None;
    Ok(container)
}

/// Hands init's seccomp listener (descriptor `fd` in `pid`) to the agent at listenerPath.
fn forward_seccomp_listener(
    spec: &Spec,
    container: &Container,
    pid: i32,
    fd: i32,
) -> Result<(), ContainerError> {
    let profile = spec
        .linux
        .as_ref()
        .and_then(|l| l.seccomp.as_ref())
        .ok_or_else(|| ContainerError::Init("seccomp listener without linux.seccomp".into()))?;
    let state = serde_json::to_value(container.oci_state_with(Status::Creating))
        .map_err(|e| ContainerError::Init(e.to_string()))?;
    crate::seccomp::notify::forward(profile, state, pid, fd)
        .map_err(|e| ContainerError::Init(e.to_string()))
}

fn stage1_main<'a>(
    k: &dyn crate::syscall::Kernel,
    joins: &[(NamespaceType, OwnedFd)],
    offsets: Option<&std::collections::BTreeMap<String, crate::spec::TimeOffset>>,
    flags: libc::c_int,
    chan: &Channel,
    init_args: impl FnOnce() -> InitArgs<'a>,
) -> ! {
    let fail = |msg: String| -> ! {
        let _ = chan.send(&Message::Error(msg));
        exit_child(1)
    };
    // The user namespace first: it owns the others and grants the rights to join them.
    let mut ordered: Vec<&(NamespaceType, OwnedFd)> = joins.iter().collect();
    ordered.sort_by_key(|(t, _)| if *t == NamespaceType::User { 0 } else { 1 });
    for (typ, fd) in ordered {
        if let Err(e) = k.setns(fd.as_raw_fd(), typ.clone_flag()) {
            fail(format!("join {} namespace: {e}", typ.name()));
        }
    }
    if let Some(off) = offsets {
        if let Err(e) = k.unshare(NamespaceType::Time.clone_flag()) {
            fail(format!("unshare time namespace: {e}"));
        }
        let mut text = String::new();
        for (clock, o) in off {
            let name = match clock.as_str() {
                "monotonic" => "monotonic",
                "boottime" => "boottime",
                other => fail(format!("linux.timeOffsets: unknown clock {other:?}")),
            };
            text.push_str(&format!("{name} {} {}\n", o.secs, o.nanosecs));
        }
        if let Err(e) = k.write_file(Path::new("/proc/self/timens_offsets"), text.as_bytes()) {
            fail(format!("write time offsets: {e}"));
        }
    }
    match clone_fork(flags) {
        Ok(0) => init::run(k, init_args()),
        Ok(pid) => {
            let _ = chan.send(&Message::Stage1Pid(pid));
            exit_child(0)
        }
        Err(e) => fail(format!("clone with the container's namespaces: {e}")),
    }
}

fn open_joined_namespaces(spec: &Spec) -> Result<Vec<(NamespaceType, OwnedFd)>, ContainerError> {
    let mut out = Vec::new();
    for ns in spec.linux.iter().flat_map(|l| &l.namespaces) {
        if let Some(p) = &ns.path {
            let f = std::fs::File::open(p).map_err(|e| {
                ContainerError::Invalid(format!(
                    "linux.namespaces: cannot open the {} namespace at {}: {e}",
                    ns.typ.name(),
                    p.display()
                ))
            })?;
            out.push((ns.typ, OwnedFd::from(f)));
        }
    }
    Ok(out)
}

/// Creates the container's cgroup and applies `linux.resources`. An unprivileged user (or
/// `--rootless`) that may not create cgroups — cgroup v1, or v2 without delegation — gets no
/// cgroup, as with runc, unless the config depends on one: limits asked for, or an explicit
/// `linux.cgroupsPath`, are then a [`ContainerError::RootlessCgroup`] error, never ignored.
fn setup_cgroup(spec: &Spec, cg: Cgroup, rootless: bool) -> Result<Option<Cgroup>, ContainerError> {
    let linux = spec.linux.as_ref();
    let resources = linux.and_then(|l| l.resources.as_ref());
    let euid = nix::unistd::geteuid();
    // Directories that exist already are not ours to remove when creation fails half-way.
    let existed: Vec<PathBuf> = cg.paths.values().filter(|d| d.is_dir()).cloned().collect();
    let err = match cg.create() {
        Ok(()) => None,
        Err(e) => {
            for dir in cg.paths.values().filter(|d| !existed.contains(d)) {
                let _ = std::fs::remove_dir(dir);
            }
            Some(e)
        }
    };
    match err {
        None => {}
        Some(CgroupError::Create { path, source })
            if (rootless || !euid.is_root()) && is_permission(&source) =>
        {
            let limits = resources.map(requested_limits).unwrap_or_default();
            let asked = if !limits.is_empty() {
                Some((
                    format!("{} asked for", limits.join(", ")),
                    "remove these limits from config.json, or run the container as root",
                ))
            } else {
                linux
                    .and_then(|l| l.cgroups_path.as_deref())
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        (
                            format!("linux.cgroupsPath {p:?} is set"),
                            "remove linux.cgroupsPath to run the container without a cgroup, \
                             or run it as root",
                        )
                    })
            };
            let Some((asked, hint)) = asked else {
                tracing::debug!(
                    "rootless: no cgroup ({} not writable: {source})",
                    path.display()
                );
                return Ok(None);
            };
            let why = if cg.v2 {
                "this part of the cgroup v2 tree is not delegated to the user"
            } else {
                "cgroup v1 is not delegated to unprivileged users on this host"
            };
            return Err(ContainerError::RootlessCgroup {
                asked,
                uid: euid.as_raw(),
                path,
                error: source,
                why,
                hint,
            });
        }
        Some(e) => return Err(e.into()),
    }
    // Without linux.resources the device rules still apply (deny all but the defaults), as
    // runc's do.
    let none = crate::spec::LinuxResources::default();
    if let Err(e) = cg.apply(
        &crate::syscall::linux::Linux,
        resources.unwrap_or(&none),
        false,
    ) {
        let _ = cg.destroy();
        return Err(e.into());
    }
    Ok(Some(cg))
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

/// The `linux.resources` fields that set a limit, as dotted config paths
/// (`linux.resources.memory.limit`). Device rules are not limits: without a cgroup of its own
/// a rootless container still cannot create device nodes, as the user namespace forbids mknod.
fn requested_limits(r: &crate::spec::LinuxResources) -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            serde_json::Value::Array(a) if a.is_empty() => {}
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) {
        for (k, v) in map.iter().filter(|(k, _)| *k != "devices") {
            walk(&format!("linux.resources.{k}"), v, &mut out);
        }
    }
    out
}

fn map_text(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Writes the user namespace maps of `pid`. Root writes them directly. An unprivileged user may
/// write only a map of one id, its own (and for gids only after `setgroups` is denied, which
/// the kernel requires); any other map — another id, several ranges, subordinate ids — goes
/// through the setuid helpers newuidmap/newgidmap, which check /etc/subuid and /etc/subgid.
fn write_id_maps(pid: i32, uid: &[IdMapping], gid: &[IdMapping]) -> Result<(), ContainerError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, text: String| {
        std::fs::write(proc.join(name), text.as_bytes())
            .map_err(io_err(format!("write {name} of pid {pid}")))
    };
    if nix::unistd::geteuid().is_root() {
        write("uid_map", map_text(uid))?;
        return write("gid_map", map_text(gid));
    }
    let only_self =
        |maps: &[IdMapping], own: u32| matches!(maps, [m] if m.host_id == own && m.size == 1);
    let helper = |bin: &str, file: &str, maps: &[IdMapping]| -> Result<(), ContainerError> {
        let mut args = vec![pid.to_string()];
        for m in maps {
            args.extend([m.container_id, m.host_id, m.size].map(|v| v.to_string()));
        }
        let out = std::process::Command::new(bin)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                ContainerError::Invalid(format!(
                    "linux.{file}: an unprivileged user can map only its own id by itself; \
                     this map needs {bin}, which cannot be run ({e}): install it (Debian package \
                     uidmap) or map only your own id"
                ))
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(ContainerError::Invalid(format!(
            "linux.{file}: {bin} {} failed ({}): {}; the ranges must be yours in /etc/sub{}id",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if file == "uidMappings" { "u" } else { "g" },
        )))
    };
    if only_self(uid, nix::unistd::geteuid().as_raw()) {
        write("uid_map", map_text(uid))?;
    } else {
        helper("newuidmap", "uidMappings", uid)?;
    }
    if only_self(gid, nix::unistd::getegid().as_raw()) {
        write("setgroups", "deny".into())?;
        write("gid_map", map_text(gid))
    } else {
        helper("newgidmap", "gidMappings", gid)
    }
}

pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let path = absolute(path)?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    std::fs::write(&tmp, pid.to_string()).map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io_err(format!("write pid file {}", path.display())))
}

fn owner_name() -> String {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return "root".into();
    }
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::requested_limits;
    use crate::spec::LinuxResources;

    fn limits(json: serde_json::Value) -> Vec<String> {
        let r: LinuxResources = serde_json::from_value(json).unwrap();
        requested_limits(&r)
    }

    #[test]
    fn requested_limits_name_each_field_set() {
        assert_eq!(
            limits(serde_json::json!({
                "memory": {"limit": 1 << 26},
                "pids": {"limit": 10},
                "devices": [{"allow": false, "access": "rwm"}],
            })),
            ["linux.resources.memory.limit", "linux.resources.pids.limit"]
        );
    }

    #[test]
    fn device_rules_and_empty_sections_ask_for_no_limit() {
        assert!(limits(serde_json::json!({
            "memory": {},
            "devices": [{"allow": false, "access": "rwm"}],
            "hugepageLimits": [],
        }))
        .is_empty());
    }
}
