//! The task: the container's init plus its execs, driven through the runtime binary.
//! Transport-free: `service.rs` turns these calls and errors into ttrpc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::api::Mount;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::topics;

use crate::cgroup::Cgroup;
use crate::events::Publisher;
use crate::io::{self, StdioPaths};
use crate::mount;
use crate::process::{ExitCell, Process, State};
use crate::reaper::Reaper;
use crate::runtime::{ChildIo, Runtime, RuntimeError, RuntimeOptions};

/// How long an exit waits for the container's output to drain before it is reported.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Task failures, by the kind the caller must know.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Mount(#[from] mount::MountError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
    let what = what.into();
    move |source| TaskError::Io { what, source }
}

/// What a caller learns about a process.
#[derive(Debug, Clone)]
pub struct ProcessView {
    pub exec_id: String,
    pub pid: u32,
    pub state: State,
    pub stdio: StdioPaths,
    pub exit: Option<(u32, Timestamp)>,
}

/// Inputs of Create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    /// runc-style options from containerd (binary, root, cgroup driver, create flags).
    pub options: RuntimeOptions,
}

#[derive(Debug, Default)]
struct Inner {
    bundle: PathBuf,
    runtime: Option<Runtime>,
    rootfs_mounted: bool,
    /// The container's memory cgroup, found after create.
    cgroup: Option<Cgroup>,
    processes: HashMap<String, Process>,
}

/// The one container this shim serves.
pub struct Task {
    pub id: String,
    pub namespace: String,
    reaper: Reaper,
    publisher: Publisher,
    inner: Mutex<Inner>,
    /// Held while a start is published and while an exit is: a process that exits at once
    /// cannot have its TaskExit queued before its TaskStart / TaskExecStarted.
    order: Arc<Mutex<()>>,
}

impl Task {
    pub fn new(id: &str, namespace: &str, reaper: Reaper, publisher: Publisher) -> Task {
        Task {
            id: id.to_string(),
            namespace: namespace.to_string(),
            reaper,
            publisher,
            inner: Mutex::default(),
            order: Arc::default(),
        }
    }

    fn owner(&self) -> io::Owner<'_> {
        io::Owner {
            id: &self.id,
            namespace: &self.namespace,
            reaper: &self.reaper,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_id(&self, id: &str) -> Result<(), TaskError> {
        if id != self.id {
            return Err(TaskError::NotFound(format!(
                "task {id:?} not found (this shim serves {:?})",
                self.id
            )));
        }
        Ok(())
    }

    fn runtime(inner: &Inner) -> Result<Runtime, TaskError> {
        inner
            .runtime
            .clone()
            .ok_or_else(|| TaskError::NotFound("task not created".into()))
    }

    /// pid of the init process, 0 before create.
    pub fn init_pid(&self) -> u32 {
        self.lock().processes.get("").map_or(0, |p| p.pid)
    }

    /// Create the container: mount its rootfs, wire stdio, `runtime create`.
    pub fn create(&self, id: &str, spec: CreateSpec) -> Result<u32, TaskError> {
        self.check_id(id)?;
        let mut inner = self.lock();
        if inner.processes.contains_key("") {
            return Err(TaskError::AlreadyExists(format!(
                "task {id:?} already exists"
            )));
        }
        check_bundle(&spec)?;
        let rootfs = spec.bundle.join("rootfs");
        for m in &spec.rootfs {
            if let Err(e) = mount::mount_one(&self.reaper, &m.type_, &m.source, &m.options, &rootfs)
            {
                mount::unmount_all(&rootfs);
                return Err(e.into());
            }
        }
        let runtime = Runtime::new(&spec.options, &self.namespace, &spec.bundle);
        // `delete` (after a dead shim) must reach the same runtime and root.
        if let Err(e) = runtime.save(&spec.bundle) {
            if !spec.rootfs.is_empty() {
                mount::unmount_all(&rootfs);
            }
            return Err(io_err("save runtime options in the bundle")(e));
        }
        let mut process = Process::new("", spec.stdio.clone());
        let result = (|| {
            let pid_file = spec.bundle.join("init.pid");
            let bundle = spec.bundle.to_string_lossy();
            let pid_path = pid_file.to_string_lossy();
            let mut args = vec!["create", "--bundle", &bundle, "--pid-file", &pid_path];
            args.extend(runtime.create_flags.iter().copied());
            if spec.stdio.terminal {
                let console = io::ConsoleSocket::new(&spec.bundle, "console.sock")
                    .map_err(io_err("console socket"))?;
                let console_path = console.path().to_string_lossy().into_owned();
                args.extend(["--console-socket", &console_path, id]);
                runtime.run_with_io(&self.reaper, &args, ChildIo::default())?;
                let master = console.receive().map_err(io_err("receive pty master"))?;
                process.console = Some(
                    io::setup_console(master, &spec.stdio, &process.copiers, self.owner())
                        .map_err(io_err("container console"))?,
                );
            } else {
                let io = io::setup(&spec.stdio, &process.copiers, self.owner())
                    .map_err(io_err("container stdio"))?;
                args.push(id);
                runtime.run_with_io(&self.reaper, &args, io)?;
            }
            read_pid(&pid_file)
        })();
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                if !spec.rootfs.is_empty() {
                    mount::unmount_all(&rootfs);
                }
                return Err(e);
            }
        };
        process.pid = pid;
        self.watch_exit(&process);
        inner.processes.insert(String::new(), process);
        inner.bundle = spec.bundle.clone();
        inner.runtime = Some(runtime);
        inner.rootfs_mounted = !spec.rootfs.is_empty();
        inner.cgroup = crate::cgroup::locate(pid);
        if let Some(cg) = &inner.cgroup {
            let publisher = self.publisher.clone();
            let container_id = id.to_string();
            // Best effort: without the watcher the container still runs, only OOM events lack.
            let _ = crate::oom::watch(cg, move || {
                let mut ev = TaskOOM::new();
                ev.container_id = container_id.clone();
                publisher.publish(topics::TASK_OOM_EVENT_TOPIC, &ev);
            });
        }
        drop(inner);

        let mut ev = TaskCreate::new();
        ev.container_id = id.to_string();
        ev.bundle = spec.bundle.to_string_lossy().into_owned();
        ev.rootfs = spec.rootfs;
        let mut tio = TaskIO::new();
        tio.stdin = spec.stdio.stdin;
        tio.stdout = spec.stdio.stdout;
        tio.stderr = spec.stdio.stderr;
        tio.terminal = spec.stdio.terminal;
        ev.io = Some(tio).into();
        ev.pid = pid;
        self.publisher.publish(topics::TASK_CREATE_EVENT_TOPIC, &ev);
        Ok(pid)
    }

    /// When `p` is reaped: let its output drain, record the exit, publish TaskExit.
    fn watch_exit(&self, p: &Process) {
        let exit = p.exit.clone();
        let copiers = p.copiers.clone();
        let publisher = self.publisher.clone();
        let container_id = self.id.clone();
        let id = if p.exec_id.is_empty() {
            self.id.clone()
        } else {
            p.exec_id.clone()
        };
        let pid = p.pid;
        let order = self.order.clone();
        self.reaper.watch(pid as i32, move |status| {
            let at = Timestamp::now();
            let fallback = (exit.clone(), at.clone());
            // Runs on the reaping thread: do the waiting elsewhere.
            let report = move || {
                copiers.stop_stdin();
                copiers.wait(DRAIN_LIMIT);
                let mut ev = TaskExit::new();
                ev.container_id = container_id;
                ev.id = id;
                ev.pid = pid;
                ev.exit_status = status as u32;
                ev.exited_at = Some(at.clone()).into();
                // After the start event; and queued before Wait can return, so that the
                // TaskDelete a waiter causes comes after it.
                let _order = order.lock().unwrap_or_else(|e| e.into_inner());
                publisher.publish(topics::TASK_EXIT_EVENT_TOPIC, &ev);
                exit.set(status as u32, at);
            };
            if std::thread::Builder::new()
                .name("exit".into())
                .stack_size(64 * 1024)
                .spawn(report)
                .is_err()
            {
                // Without a thread the exit must still be recorded (output may be cut short).
                fallback.0.set(status as u32, fallback.1);
            }
        });
    }

    /// Start the init process or a created exec.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        self.check_id(id)?;
        let mut inner = self.lock();
        let runtime = Self::runtime(&inner)?;
        let bundle = inner.bundle.clone();
        let p = inner
            .processes
            .get_mut(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        if p.current() != State::Created {
            return Err(TaskError::FailedPrecondition(format!(
                "process {:?} cannot start: it is {:?}",
                display_id(id, exec_id),
                p.current()
            )));
        }
        let order = self.order.clone();
        let _order = order.lock().unwrap_or_else(|e| e.into_inner());
        if exec_id.is_empty() {
            runtime.output(&self.reaper, &["start", id], None)?;
            p.state = State::Running;
            let pid = p.pid;
            drop(inner);
            let mut ev = TaskStart::new();
            ev.container_id = id.to_string();
            ev.pid = pid;
            self.publisher.publish(topics::TASK_START_EVENT_TOPIC, &ev);
            return Ok(pid);
        }
        let spec = p
            .spec
            .clone()
            .ok_or_else(|| TaskError::FailedPrecondition("exec has no process spec".into()))?;
        let pid_file = bundle.join(format!("{exec_id}.pid"));
        let spec_path = spec.to_string_lossy().into_owned();
        let pid_path = pid_file.to_string_lossy().into_owned();
        let mut args = vec![
            "exec",
            "--process",
            &spec_path,
            "--detach",
            "--pid-file",
            &pid_path,
        ];
        if p.stdio.terminal {
            let console = io::ConsoleSocket::new(&bundle, &format!("{exec_id}.console"))
                .map_err(io_err("console socket"))?;
            let console_path = console.path().to_string_lossy().into_owned();
            args.extend(["--console-socket", &console_path, id]);
            runtime.run_with_io(&self.reaper, &args, ChildIo::default())?;
            let master = console.receive().map_err(io_err("receive pty master"))?;
            p.console = Some(
                io::setup_console(master, &p.stdio, &p.copiers, self.owner())
                    .map_err(io_err("exec console"))?,
            );
        } else {
            let io = io::setup(&p.stdio, &p.copiers, self.owner()).map_err(io_err("exec stdio"))?;
            args.push(id);
            runtime.run_with_io(&self.reaper, &args, io)?;
        }
        let _ = std::fs::remove_file(&spec);
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        p.pid = pid;
        p.state = State::Running;
        let watched = Process {
            exec_id: p.exec_id.clone(),
            pid,
            stdio: StdioPaths::default(),
            state: State::Running,
            exit: p.exit.clone(),
            copiers: p.copiers.clone(),
            spec: None,
            console: None,
        };
        drop(inner);
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid;
        self.publisher
            .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &ev);
        self.watch_exit(&watched);
        Ok(pid)
    }

    /// Register an exec (run by a later Start). `spec` is the OCI process as JSON.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        spec: &[u8],
    ) -> Result<(), TaskError> {
        self.check_id(id)?;
        if exec_id.is_empty() || exec_id.contains('/') {
            return Err(TaskError::InvalidArgument(format!(
                "exec id {exec_id:?} is not valid"
            )));
        }
        let mut inner = self.lock();
        match inner.processes.get("") {
            Some(init) if init.current() == State::Running => {}
            _ => {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {id:?} is not running"
                )))
            }
        }
        if inner.processes.contains_key(exec_id) {
            return Err(TaskError::AlreadyExists(format!(
                "exec {exec_id:?} already exists"
            )));
        }
        let path = inner.bundle.join(format!("{exec_id}.process.json"));
        std::fs::write(&path, spec).map_err(io_err(format!("write {}", path.display())))?;
        let mut p = Process::new(exec_id, stdio);
        p.spec = Some(path);
        inner.processes.insert(exec_id.to_string(), p);
        drop(inner);
        let mut ev = TaskExecAdded::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        self.publisher
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &ev);
        Ok(())
    }

    /// Snapshot of one process.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<(ProcessView, PathBuf), TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        let p = inner
            .processes
            .get(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        Ok((
            ProcessView {
                exec_id: p.exec_id.clone(),
                pid: p.pid,
                state: p.current(),
                stdio: p.stdio.clone(),
                exit: p.exit.get(),
            },
            inner.bundle.clone(),
        ))
    }

    /// Block until the process exits.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<(u32, Timestamp), TaskError> {
        self.check_id(id)?;
        let cell: Arc<ExitCell> = {
            let inner = self.lock();
            let p = inner
                .processes
                .get(exec_id)
                .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
            p.exit.clone()
        };
        Ok(cell.wait(None).unwrap_or_default())
    }

    /// Signal a process (`all`: every process of the container).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        let runtime = Self::runtime(&inner)?;
        let p = inner
            .processes
            .get(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        if p.current() == State::Stopped && !all {
            return Err(TaskError::NotFound(format!(
                "process {:?} already finished",
                display_id(id, exec_id)
            )));
        }
        if exec_id.is_empty() {
            let sig = signal.to_string();
            let mut args = vec!["kill"];
            if all {
                args.push("--all");
            }
            args.push(id);
            args.push(&sig);
            drop(inner);
            runtime.output(&self.reaper, &args, None)?;
            return Ok(());
        }
        if p.pid == 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "exec {exec_id:?} is not started"
            )));
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| TaskError::InvalidArgument(format!("signal {signal} is not valid")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), sig).map_err(|e| {
            let what = format!("exec {exec_id:?} (pid {})", p.pid);
            match e {
                nix::errno::Errno::ESRCH => TaskError::NotFound(format!("{what}: {e}")),
                other => TaskError::Io {
                    what: format!("signal {sig} to {what}"),
                    source: other.into(),
                },
            }
        })
    }

    /// Delete a stopped (or never started) process; for init also the container and its rootfs.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, u32, Timestamp), TaskError> {
        self.check_id(id)?;
        let mut inner = self.lock();
        let runtime = Self::runtime(&inner)?;
        let p = inner
            .processes
            .get(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        let state = p.current();
        if matches!(state, State::Running | State::Paused) {
            return Err(TaskError::FailedPrecondition(format!(
                "process {:?} is {state:?}: kill it first",
                display_id(id, exec_id)
            )));
        }
        let pid = p.pid;
        let cell = p.exit.clone();
        if !exec_id.is_empty() {
            let p = inner.processes.remove(exec_id);
            if let Some(spec) = p.and_then(|p| p.spec) {
                let _ = std::fs::remove_file(spec);
            }
            let (status, at) = cell.get().unwrap_or_default();
            return Ok((pid, status, at));
        }
        if inner.processes.len() > 1 && state != State::Stopped {
            return Err(TaskError::FailedPrecondition(
                "container has execs: delete them first".into(),
            ));
        }
        runtime.output(&self.reaper, &["delete", "--force", id], None)?;
        // The per-namespace runtime root goes with its last container.
        let _ = std::fs::remove_dir(&runtime.root);
        // A never-started init dies with the delete: give the reaper a moment to see it.
        let (status, at) = cell
            .wait(Some(Duration::from_secs(1)))
            .unwrap_or_else(|| (137, Timestamp::now()));
        if inner.rootfs_mounted {
            mount::unmount_all(&inner.bundle.join("rootfs"));
            inner.rootfs_mounted = false;
        }
        inner.processes.clear();
        drop(inner);
        let mut ev = TaskDelete::new();
        ev.container_id = id.to_string();
        ev.id = id.to_string();
        ev.pid = pid;
        ev.exit_status = status;
        ev.exited_at = Some(at.clone()).into();
        self.publisher.publish(topics::TASK_DELETE_EVENT_TOPIC, &ev);
        Ok((pid, status, at))
    }

    /// The client is done sending stdin: forward what it sent, then close the process's stdin.
    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        let p = inner
            .processes
            .get(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        p.copiers.stop_stdin();
        Ok(())
    }

    /// The container's memory cgroup (where it lives decides the metrics format).
    pub fn cgroup(&self, id: &str) -> Result<Option<Cgroup>, TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        Self::runtime(&inner)?;
        Ok(inner.cgroup.clone())
    }

    /// pids of every process in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, TaskError> {
        self.check_id(id)?;
        let runtime = Self::runtime(&self.lock())?;
        let out = runtime.output(&self.reaper, &["ps", "--format", "json", id], None)?;
        serde_json::from_slice(&out).map_err(|e| TaskError::Io {
            what: "runtime ps output".into(),
            source: std::io::Error::other(e),
        })
    }

    /// Freeze (`pause`) or thaw (`resume`) the container.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), TaskError> {
        self.check_id(id)?;
        let mut inner = self.lock();
        let runtime = Self::runtime(&inner)?;
        let p = inner
            .processes
            .get_mut("")
            .ok_or_else(|| TaskError::NotFound("task not created".into()))?;
        let (want, verb) = if paused {
            (State::Running, "pause")
        } else {
            (State::Paused, "resume")
        };
        if p.current() != want {
            return Err(TaskError::FailedPrecondition(format!(
                "cannot {verb} container {id:?}: it is {:?}",
                p.current()
            )));
        }
        runtime.output(&self.reaper, &[verb, id], None)?;
        p.state = if paused {
            State::Paused
        } else {
            State::Running
        };
        drop(inner);
        if paused {
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_string();
            self.publisher.publish(topics::TASK_PAUSED_EVENT_TOPIC, &ev);
        } else {
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_string();
            self.publisher
                .publish(topics::TASK_RESUMED_EVENT_TOPIC, &ev);
        }
        Ok(())
    }

    /// Set the terminal size of a terminal process.
    pub fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        let p = inner
            .processes
            .get(exec_id)
            .ok_or_else(|| TaskError::NotFound(format!("process {exec_id:?} not found")))?;
        let console = p.console.as_ref().ok_or_else(|| {
            TaskError::FailedPrecondition(format!(
                "process {:?} has no terminal",
                display_id(id, exec_id)
            ))
        })?;
        io::resize(console, width, height).map_err(io_err("resize terminal"))
    }

    /// Resource usage of the container, from `runtime events --stats`.
    pub fn stats(&self, id: &str) -> Result<serde_json::Value, TaskError> {
        self.check_id(id)?;
        let runtime = Self::runtime(&self.lock())?;
        let out = runtime.output(&self.reaper, &["events", "--stats", id], None)?;
        serde_json::from_slice(&out).map_err(|e| TaskError::Io {
            what: "runtime events --stats output".into(),
            source: std::io::Error::other(e),
        })
    }

    /// Apply new resource limits (`resources`: OCI LinuxResources as JSON).
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        self.check_id(id)?;
        let runtime = Self::runtime(&self.lock())?;
        runtime.output(&self.reaper, &["update", "-r", "-", id], Some(resources))?;
        Ok(())
    }
}

/// What Create needs before anything is mounted or run: an absolute bundle with a config, and a
/// rootfs (mounts from the request onto `<bundle>/rootfs`, or the config's `root.path`).
fn check_bundle(spec: &CreateSpec) -> Result<(), TaskError> {
    let bundle = &spec.bundle;
    if !bundle.is_absolute() {
        return Err(TaskError::InvalidArgument(format!(
            "bundle path {:?} must be absolute",
            bundle.display().to_string()
        )));
    }
    if !bundle.is_dir() {
        return Err(TaskError::NotFound(format!(
            "bundle directory {} not found",
            bundle.display()
        )));
    }
    let config = bundle.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| {
        TaskError::NotFound(format!(
            "{}: {e}: the bundle has no OCI config",
            config.display()
        ))
    })?;
    if !spec.rootfs.is_empty() {
        let target = bundle.join("rootfs");
        if !target.is_dir() {
            return Err(TaskError::NotFound(format!(
                "rootfs mount point {} not found",
                target.display()
            )));
        }
        return Ok(());
    }
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        TaskError::InvalidArgument(format!("{}: not valid JSON: {e}", config.display()))
    })?;
    let root = doc
        .pointer("/root/path")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("rootfs");
    let root = bundle.join(root);
    if !root.is_dir() {
        return Err(TaskError::NotFound(format!(
            "rootfs {} not found: the request has no rootfs mounts and config.json root.path \
             names no directory",
            root.display()
        )));
    }
    Ok(())
}

fn display_id(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    text.trim().parse().map_err(|_| TaskError::Io {
        what: format!("pid file {}", path.display()),
        source: std::io::Error::other(format!("not a pid: {text:?}")),
    })
}
