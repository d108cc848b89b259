//! What happens inside the new container process, from clone to execve, as phases called in
//! order from [`run`]. The order follows the runtime-spec lifecycle: mounts, then the
//! prestart/createRuntime hooks (run by the parent), createContainer hooks, pivot_root, masks,
//! console, limits, identity, capabilities, no_new_privs; then wait for `start` and exec.

pub mod caps;
pub mod console;
pub mod exec;
pub mod identity;
pub mod lsm;
pub mod mounts;

use crate::cgroups::Cgroup;
use crate::process::message::{Channel, Message};
use crate::spec::{NamespaceType, Spec};
use crate::syscall::Kernel;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

/// How init learns that it may exec.
pub enum StartSignal {
    /// `create`: open `exec.fifo` (relative to this state directory fd) for writing; the open
    /// returns when `start` opens it for reading.
    Fifo(OwnedFd),
    /// `run`: the parent sends [`Message::Start`].
    Message,
}

pub struct InitArgs<'a> {
    pub spec: &'a Spec,
    pub rootfs: PathBuf,
    pub cgroup: Option<&'a Cgroup>,
    pub chan: Channel,
    pub start: StartSignal,
    /// A connected unix socket to send the pty master to (`--console-socket`).
    pub console: Option<OwnedFd>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub state_json: String,
    pub new_keyring: bool,
    /// Die with the parent until set-up is complete (not when cloned by a short-lived stage1).
    pub die_with_parent: bool,
    /// Init moves itself into `cgroup` after Go (v1, no user namespace): much cheaper than
    /// the parent writing its pid (see [`Cgroup::join_self`]).
    pub join_cgroup: bool,
}

/// Runs init to completion: never returns on success (the process is replaced by the
/// container's), and reports an error to the parent otherwise.
pub fn run(k: &dyn Kernel, args: InitArgs) -> ! {
    let res = setup(k, &args);
    match res {
        Ok(exe) => {
            let e = exec::exec(k, args.spec.process(), &exe, args.preserve_fds);
            // Past Ready the parent is gone (create) or only waits for exit; stderr is the
            // container's, which is where runc reports a late failure too.
            eprintln!("kapsel-runtime: exec {}: {e}", exe.display());
            crate::process::exit_child(127)
        }
        Err(e) => {
            let _ = args.chan.send(&Message::Error(e.to_string()));
            crate::process::exit_child(1)
        }
    }
}

fn setup(k: &dyn Kernel, a: &InitArgs) -> Result<PathBuf, InitError> {
    let spec = a.spec;
    let proto = |e: String| InitError::Protocol(e);
    if a.die_with_parent {
        // A runtime killed mid-create takes its half-made container with it.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    a.chan.expect(Message::Go).map_err(proto)?;
    if let (true, Some(cg)) = (a.join_cgroup, a.cgroup) {
        cg.join_self()
            .map_err(|e| InitError::Config(format!("join the container's cgroup: {e}")))?;
    }

    let userns = spec.namespace(NamespaceType::User).is_some();
    let lsm = lsm::Lsm::detect();
    let new_cgroupns = spec
        .namespace(NamespaceType::Cgroup)
        .is_some_and(|n| n.path.is_none());
    if new_cgroupns {
        k.unshare(libc::CLONE_NEWCGROUP)
            .map_err(|source| InitError::Sys {
                what: "unshare the cgroup namespace".into(),
                source,
            })?;
    }
    if a.new_keyring {
        // Keep the host's session keyring out of the container. Kernels or user namespaces
        // without keyrings refuse this; the container then simply has none of its own.
        if let Err(e) = k.join_session_keyring("_ses") {
            tracing::debug!("no new session keyring: {e}");
        }
    }
    if userns {
        // Become root of the new user namespace (the parent has mapped it by now).
        k.setresgid(0).ok();
        k.setresuid(0).ok();
    }

    let new_mountns = spec
        .namespace(NamespaceType::Mount)
        .is_some_and(|n| n.path.is_none());
    let ctx = mounts::RootfsContext {
        rootfs: &a.rootfs,
        cgroup: a.cgroup,
        in_userns: userns,
        new_cgroupns,
    };
    if new_mountns {
        mounts::prepare_root(k, spec, &a.rootfs)?;
        mounts::mount_all(k, spec, &ctx)?;
        let dev = mounts::needs_dev_setup(spec);
        mounts::create_devices(k, spec, &ctx, dev)?;
        if dev {
            mounts::dev_symlinks(k, &a.rootfs)?;
        }
    }
    let hooks = spec.hooks.as_ref();
    if hooks.is_some_and(|h| !h.prestart.is_empty() || !h.create_runtime.is_empty()) {
        a.chan
            .send(&Message::Hooks)
            .map_err(|source| InitError::Sys {
                what: "ask for hooks".into(),
                source,
            })?;
        a.chan.expect(Message::HooksDone).map_err(proto)?;
    }
    if let Some(h) = hooks {
        crate::hooks::run_all("createContainer", &h.create_container, &a.state_json)
            .map_err(|e| InitError::Config(e.to_string()))?;
    }
    if new_mountns {
        mounts::pivot(k, &a.rootfs, a.no_pivot)?;
    }
    // sysctls go through /proc/sys, so before readonlyPaths make it read-only.
    set_uts_and_sysctl(k, spec)?;
    if new_mountns {
        // A missing process.cwd is created (as runc does), inside the new root and before a
        // read-only root is remounted; a relative or `..`-laden path cannot leave the root here.
        let cwd = &spec.process().cwd;
        if !cwd.as_os_str().is_empty() && cwd != Path::new("/") {
            k.mkdir_all(cwd, 0o755).map_err(|source| InitError::Sys {
                what: format!("create process.cwd {}", cwd.display()),
                source,
            })?;
        }
        mounts::mask_and_protect(k, spec)?;
        mounts::finish_root(k, spec)?;
    }

    let process = spec.process();
    if process.terminal {
        console::setup(k, a.console.as_ref(), process.console_size)?;
    } else if a.console.is_some() {
        return Err(InitError::Config(
            "--console-socket was given but process.terminal is false".into(),
        ));
    }
    identity::set_oom_score_adj(k, process)?;
    identity::set_io_priority(k, process)?;
    identity::set_scheduler(k, process)?;
    identity::set_personality(k, spec)?;
    identity::set_rlimits(k, process)?;

    let exe = exec::find_executable(process)?;
    lsm.apply(k, process)?;
    let cwd = if process.cwd.as_os_str().is_empty() {
        Path::new("/")
    } else {
        &process.cwd
    };
    finalize_identity(k, spec, process, setgroups_allowed(userns), &a.chan)?;
    k.chdir(cwd).map_err(|source| InitError::Sys {
        what: format!("chdir to process.cwd {}", cwd.display()),
        source,
    })?;

    // From here the container outlives `create` (cleared before Ready: the parent may exit as
    // soon as it reads it). A runtime dying before it saved the state leaves a `creating`
    // state.json naming this pid, which `delete --force` cleans up.
    if a.die_with_parent {
        let _ = nix::sys::prctl::set_pdeathsig(None);
    }
    a.chan
        .send(&Message::Ready)
        .map_err(|source| InitError::Sys {
            what: "report ready".into(),
            source,
        })?;
    wait_for_start(a)?;
    if let Some(h) = hooks {
        if !h.start_container.is_empty() {
            let running = a.state_json.replace("\"created\"", "\"running\"");
            crate::hooks::run_all("startContainer", &h.start_container, &running)
                .map_err(|e| InitError::Config(e.to_string()))?;
        }
    }
    Ok(exe)
}

fn setgroups_allowed(userns: bool) -> bool {
    !userns
        || std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() == "allow")
            .unwrap_or(true)
}

/// Capabilities, user, no_new_privs and seccomp, in the order that keeps the needed privileges
/// until the last moment: bounding drop, keep-caps across setuid, capset, ambient,
/// no_new_privs. The seccomp filter comes last with no_new_privs; without it, loading a filter
/// needs CAP_SYS_ADMIN, so it comes before the user and capabilities change (as in runc) and
/// the profile must allow the remaining set-up syscalls. `chan` reaches the parent, which
/// passes a SCMP_ACT_NOTIFY listener on to the seccomp agent.
pub fn finalize_identity(
    k: &dyn Kernel,
    spec: &Spec,
    process: &crate::spec::Process,
    setgroups_allowed: bool,
    chan: &Channel,
) -> Result<(), InitError> {
    let seccomp = crate::seccomp::for_spec(spec)?;
    let last = caps::last_cap();
    let resolved = caps::resolve(k, process.capabilities.as_ref(), last)?;
    caps::drop_bounding(k, &resolved, last)?;
    k.set_keep_caps(true).map_err(|source| InitError::Sys {
        what: "set keep-caps".into(),
        source,
    })?;
    if let Some(f) = seccomp.as_ref().filter(|_| !process.no_new_privileges) {
        crate::seccomp::load(k, f, chan)?;
    }
    identity::set_user(k, process, setgroups_allowed)?;
    k.set_keep_caps(false).map_err(|source| InitError::Sys {
        what: "clear keep-caps".into(),
        source,
    })?;
    caps::apply(k, &resolved, last)?;
    if process.no_new_privileges {
        k.set_no_new_privs().map_err(|source| InitError::Sys {
            what: "set no_new_privs".into(),
            source,
        })?;
        if let Some(f) = &seccomp {
            crate::seccomp::load(k, f, chan)?;
        }
    }
    Ok(())
}

fn set_uts_and_sysctl(k: &dyn Kernel, spec: &Spec) -> Result<(), InitError> {
    if let Some(h) = &spec.hostname {
        k.sethostname(h).map_err(|source| InitError::Sys {
            what: format!("sethostname {h:?}"),
            source,
        })?;
    }
    if let Some(d) = &spec.domainname {
        k.setdomainname(d).map_err(|source| InitError::Sys {
            what: format!("setdomainname {d:?}"),
            source,
        })?;
    }
    if let Some(linux) = &spec.linux {
        for (key, value) in &linux.sysctl {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            k.write_file(&path, value.as_bytes())
                .map_err(|source| InitError::Sys {
                    what: format!("set sysctl {key}={value}"),
                    source,
                })?;
        }
    }
    Ok(())
}

fn wait_for_start(a: &InitArgs) -> Result<(), InitError> {
    match &a.start {
        StartSignal::Message => a.chan.expect(Message::Start).map_err(InitError::Protocol),
        StartSignal::Fifo(dir) => {
            // Blocks until `start` opens the fifo for reading.
            let fd = nix::fcntl::openat(
                dir,
                "exec.fifo",
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| InitError::Sys {
                what: "open exec.fifo".into(),
                source: e.into(),
            })?;
            nix::unistd::write(&fd, b"0").map_err(|e| InitError::Sys {
                what: "write exec.fifo".into(),
                source: e.into(),
            })?;
            Ok(())
        }
    }
}
