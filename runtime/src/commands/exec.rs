//! `exec`: run another process inside a running container: join its namespaces and cgroup,
//! take its (or the given) process settings, and exec.

use super::{Global, Result};
use crate::cgroups::Cgroup;
use crate::container::create::write_pid_file;
use crate::container::{Container, ContainerError, Status};
use crate::init::{self, InitError};
use crate::process::message::{Channel, Message};
use crate::process::{clone_fork, clone_fork_into_cgroup, exit_child};
use crate::spec::{NamespaceType, Process};
use crate::syscall::Kernel;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecArgs {
    /// Path to a unix socket that receives the pty master (with -t)
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory in the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// UID[:GID] to run as
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Additional gids
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Path to a process.json with the whole process to run
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Detach from the process
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// File to write the process's pid to
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// AppArmor profile for the process
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label for the process
    #[arg(long)]
    pub process_label: Option<String>,
    /// Set no_new_privs for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the process
    #[arg(short = 'c', long = "cap")]
    pub cap: Vec<String>,
    /// Pass N more descriptors (3 to 3+N-1) to the process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Run in a sub-cgroup of the container (PATH or CONTROLLER:PATH)
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container
    #[arg(long)]
    pub ignore_paused: bool,
    /// Container id
    pub id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn build_process(c: &Container, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        let data = std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("read process file {}: {e}", p.display()))?;
        let proc: Process = serde_json::from_slice(&data)
            .map_err(|e| anyhow::anyhow!("process file {}: {e}", p.display()))?;
        if proc.args.is_empty() {
            anyhow::bail!("process file {}: args must not be empty", p.display());
        }
        return Ok(proc);
    }
    if a.command.is_empty() {
        anyhow::bail!("exec: no command given: kapsel-runtime exec [options] ID COMMAND [ARGS...]");
    }
    let mut p = c.state.config.process().clone();
    p.args = a.command.clone();
    p.terminal = a.tty;
    p.console_size = None;
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or_default();
        p.env.retain(|e| e.split('=').next() != Some(key));
        p.env.push(kv.clone());
    }
    if let Some(cwd) = &a.cwd {
        p.cwd = cwd.clone();
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        p.user.uid = uid
            .parse()
            .map_err(|_| anyhow::anyhow!("--user {u:?}: expected UID[:GID] as numbers"))?;
        if let Some(g) = gid {
            p.user.gid = g
                .parse()
                .map_err(|_| anyhow::anyhow!("--user {u:?}: expected UID[:GID] as numbers"))?;
        }
    }
    if !a.additional_gids.is_empty() {
        p.user.additional_gids = a.additional_gids.clone();
    }
    if a.no_new_privs {
        p.no_new_privileges = true;
    }
    if let Some(l) = &a.apparmor {
        p.apparmor_profile = Some(l.clone());
    }
    if !a.cap.is_empty() {
        let caps = p.capabilities.get_or_insert_with(Default::default);
        for cap in &a.cap {
            if crate::init::caps::parse(cap).is_none() {
                anyhow::bail!("--cap {cap}: unknown capability");
            }
            for set in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted] {
                let v = set.get_or_insert_with(Vec::new);
                if !v.contains(cap) {
                    v.push(cap.clone());
                }
            }
        }
    }
    Ok(p)
}

pub fn run(g: &Global, a: &ExecArgs) -> Result<i32> {
    let c = Container::load(&g.root, &a.id)?;
    let status = c.status();
    let ok = matches!(status, Status::Created | Status::Running)
        || (status == Status::Paused && a.ignore_paused);
    if !ok {
        return Err(ContainerError::WrongState {
            id: a.id.clone(),
            status,
            op: "exec in it",
            hint: if status == Status::Paused {
                " (resume it, or pass --ignore-paused)"
            } else {
                ""
            },
        }
        .into());
    }
    let process = build_process(&c, a)?;
    if process.terminal && a.console_socket.is_none() && a.detach {
        anyhow::bail!("exec -t -d needs --console-socket to pass the terminal");
    }
    // Without a console socket, a foreground exec with a terminal relays it itself.
    let mut relay_end = None;
    let console = match &a.console_socket {
        Some(p) if process.terminal => Some(OwnedFd::from(
            std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| anyhow::anyhow!("connect to console socket {}: {e}", p.display()))?,
        )),
        None if process.terminal => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            relay_end = Some(OwnedFd::from(ours));
            Some(OwnedFd::from(theirs))
        }
        _ => None,
    };
    let set = crate::process::relay::forwarded_signals();
    if !a.detach {
        set.thread_block()
            .map_err(|e| anyhow::anyhow!("block signals: {e}"))?;
    }
    let init = c.state.init_pid;
    let mut joins: Vec<(NamespaceType, OwnedFd)> = Vec::new();
    for ns in c.state.config.linux.iter().flat_map(|l| &l.namespaces) {
        let path = format!("/proc/{init}/ns/{}", ns.typ.proc_name());
        if ns.typ == NamespaceType::User && same_ns(&path, "/proc/self/ns/user") {
            continue;
        }
        let f = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("open {path}: {e} (did the container exit?)"))?;
        joins.push((ns.typ, OwnedFd::from(f)));
    }
    let k = crate::syscall::linux::Linux;
    let userns = joins.iter().any(|(t, _)| *t == NamespaceType::User);
    // Without privileges on the host (rootless), the rights to join the pid and time
    // namespaces come from the container's user namespace: join it first, here (the runtime
    // has a single thread, which setns into a user namespace requires). The exec child
    // inherits it and must not join it again (setns to one's own user namespace is EINVAL).
    if userns && !nix::unistd::geteuid().is_root() {
        let i = joins
            .iter()
            .position(|(t, _)| *t == NamespaceType::User)
            .expect("checked above");
        let (typ, fd) = joins.remove(i);
        k.setns(fd.as_raw_fd(), typ.clone_flag()).map_err(|e| {
            anyhow::anyhow!("join the container's user namespace (as an unprivileged user): {e}")
        })?;
    }
    // pid and time namespaces apply to children: join them here, before forking.
    for (typ, fd) in &joins {
        if matches!(typ, NamespaceType::Pid | NamespaceType::Time) {
            k.setns(fd.as_raw_fd(), typ.clone_flag()).map_err(|e| {
                anyhow::anyhow!("join the container's {} namespace: {e}", typ.name())
            })?;
        }
    }
    // The target cgroup, resolved before forking. Without a user namespace to join, the exec
    // process moves itself into a v1 cgroup (cheap, see Cgroup::join_self); otherwise the
    // parent moves it.
    let target = match &c.state.cgroup {
        Some(cg) => Some(sub_cgroup(cg, &a.cgroup)?),
        None => None,
    };
    let self_join = target.as_ref().filter(|t| t.can_join_self() && !userns);
    let (parent, child) = Channel::pair()?;
    // v2: the child is born in the cgroup where the kernel allows it (clone3).
    let born_in = target.as_ref().and_then(Cgroup::open_v2_dir);
    let mut placed = false;
    let pid = match born_in
        .as_ref()
        .map(|dir| clone_fork_into_cgroup(0, dir.as_fd()))
    {
        Some(Ok(pid)) => {
            placed = true;
            pid
        }
        other => {
            if let Some(Err(e)) = other {
                tracing::debug!("clone3 into the cgroup: {e}; moving the process after clone");
            }
            clone_fork(0)?
        }
    };
    if pid == 0 {
        drop(parent);
        let res = exec_child(
            &k,
            &c,
            &process,
            &child,
            ChildSetup {
                joins: &joins,
                console: console.as_ref(),
                preserve_fds: a.preserve_fds,
                self_join,
            },
        );
        let _ = child.send(&Message::Error(res.to_string()));
        exit_child(1);
    }
    drop(child);
    drop(joins);
    let fail = |e: anyhow::Error| -> Result<i32> {
        // SAFETY: kill and waitpid take integers; pid is our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        Err(e)
    };
    if let Some(t) = target.as_ref().filter(|_| self_join.is_none() && !placed) {
        if let Err(e) = t.add_process(pid) {
            return fail(e.into());
        }
    }
    if let Err(e) = parent.send(&Message::Go) {
        return fail(anyhow::anyhow!("exec process exited early: {e}"));
    }
    loop {
        match parent.recv() {
            Ok(None) => break,
            Ok(Some(Message::Error(e))) => {
                let _ = crate::process::wait_exit(pid);
                anyhow::bail!("exec in container {:?} failed: {e}", a.id);
            }
            Ok(Some(Message::SeccompListener(fd))) => {
                if let Err(e) = forward_seccomp_listener(&c, pid, fd) {
                    return fail(e);
                }
                if let Err(e) = parent.send(&Message::SeccompListenerDone) {
                    return fail(e.into());
                }
            }
            Ok(Some(m)) => return fail(anyhow::anyhow!("unexpected message {m:?}")),
            Err(e) => return fail(e.into()),
        }
    }
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    drop(console);
    let master = match &relay_end {
        Some(sock) => Some(init::console::recv_fd(sock.as_raw_fd())?),
        None => None,
    };
    Ok(crate::process::relay::wait(pid, &set, master))
}

/// Hands the exec process's seccomp listener (descriptor `fd` in `pid`) to the agent.
fn forward_seccomp_listener(c: &Container, pid: i32, fd: i32) -> Result<()> {
    let profile = c
        .state
        .config
        .linux
        .as_ref()
        .and_then(|l| l.seccomp.as_ref())
        .ok_or_else(|| anyhow::anyhow!("seccomp listener without linux.seccomp"))?;
    let state = serde_json::to_value(c.oci_state())?;
    crate::seccomp::notify::forward(profile, state, pid, fd)?;
    Ok(())
}

fn same_ns(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

/// The container's cgroup, or a sub-cgroup of it named by `--cgroup PATH` / `CONTROLLER:PATH`.
fn sub_cgroup(cg: &crate::cgroups::Cgroup, specs: &[String]) -> Result<crate::cgroups::Cgroup> {
    let mut out = cg.clone();
    for s in specs {
        let (controllers, path) = match s.split_once(':') {
            Some((c, p)) => (Some(c.split(',').collect::<Vec<_>>()), p),
            None => (None, s.as_str()),
        };
        if path.split('/').any(|p| p == "..") {
            anyhow::bail!("--cgroup {s:?}: the path must stay inside the container's cgroup");
        }
        for (name, dir) in out.paths.iter_mut() {
            if controllers
                .as_ref()
                .is_none_or(|c| c.contains(&name.as_str()))
            {
                let sub = dir.join(path.trim_start_matches('/'));
                if !sub.is_dir() {
                    anyhow::bail!("--cgroup {s:?}: {} does not exist", sub.display());
                }
                *dir = sub;
            }
        }
    }
    Ok(out)
}

/// What the exec child sets up before it execs.
struct ChildSetup<'a> {
    joins: &'a [(NamespaceType, OwnedFd)],
    console: Option<&'a OwnedFd>,
    preserve_fds: i32,
    /// The v1 cgroup the child moves itself into (None: the parent moves it, or no cgroup).
    self_join: Option<&'a Cgroup>,
}

fn exec_child(
    k: &dyn Kernel,
    c: &Container,
    process: &Process,
    chan: &Channel,
    setup: ChildSetup<'_>,
) -> InitError {
    let ChildSetup {
        joins,
        console,
        preserve_fds,
        self_join,
    } = setup;
    let res = (|| -> std::result::Result<PathBuf, InitError> {
        chan.expect(Message::Go).map_err(InitError::Protocol)?;
        if let Some(cg) = self_join {
            cg.join_self()
                .map_err(|e| InitError::Config(format!("join the container's cgroup: {e}")))?;
        }
        let lsm = init::lsm::Lsm::detect();
        let order = [
            NamespaceType::User,
            NamespaceType::Ipc,
            NamespaceType::Uts,
            NamespaceType::Network,
            NamespaceType::Cgroup,
            NamespaceType::Mount,
        ];
        for typ in order {
            if let Some((_, fd)) = joins.iter().find(|(t, _)| *t == typ) {
                k.setns(fd.as_raw_fd(), typ.clone_flag())
                    .map_err(|source| InitError::Sys {
                        what: format!("join the container's {} namespace", typ.name()),
                        source,
                    })?;
            }
        }
        // The user namespace may have been joined by the parent already (rootless).
        let userns = c.state.config.namespace(NamespaceType::User).is_some();
        if process.terminal {
            init::console::setup(k, console, process.console_size)?;
        }
        init::identity::set_rlimits(k, process)?;
        let exe = init::exec::find_executable(process)?;
        lsm.apply(k, process)?;
        let setgroups_ok = !userns
            || std::fs::read_to_string("/proc/self/setgroups")
                .map(|s| s.trim() == "allow")
                .unwrap_or(true);
        init::finalize_identity(k, &c.state.config, process, setgroups_ok, chan)?;
        let cwd = if process.cwd.as_os_str().is_empty() {
            PathBuf::from("/")
        } else {
            process.cwd.clone()
        };
        k.chdir(&cwd).map_err(|source| InitError::Sys {
            what: format!("chdir to {}", cwd.display()),
            source,
        })?;
        Ok(exe)
    })();
    match res {
        Ok(exe) => {
            let e = init::exec::exec(k, process, &exe, preserve_fds);
            InitError::Sys {
                what: format!("exec {}", exe.display()),
                source: e,
            }
        }
        Err(e) => e,
    }
}
