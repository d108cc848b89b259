//! Tasks through `containerd-shim-kapsel-v2`, driven the way containerd drives a v2 shim:
//! `shim ... start` in the bundle prints the address of a ttrpc socket, the task API
//! (`containerd.task.v2.Task`) is called over it, and the shim sends its events to kapseld's own
//! socket (`TTRPC_ADDRESS`, `containerd.services.events.ttrpc.v1.Events/Forward`, see
//! [`events`]). After a shim died, `shim ... delete` in the bundle cleans up what it left
//! ([`cleanup_dead_shim`]).
//!
//! [`Shim`] is synchronous and holds no connection: each call connects, asks and closes
//! ([`conn`]), so a running task costs kapseld no thread. [`Shim::wait`] blocks until the
//! process exits, so call it from a thread of its own; kapseld learns of its tasks' exits from
//! the shims' `/tasks/exit` events instead ([`events`]), and of a shim's death from [`watch`].
//! Every call but `wait` has a deadline ([`CALL_TIMEOUT`]).

use std::path::PathBuf;
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::Status as PbStatus;

use crate::snapshots::Mount;

mod conn;
pub mod events;
mod stats;
pub mod watch;

pub use events::{EventSink, TaskEvent};
pub use stats::Stats;

/// The deadline of every task API call except [`Shim::wait`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `shim start` and `shim delete` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The file in the bundle where `shim start` writes the address it serves on.
pub const ADDRESS_FILE: &str = "address";
/// The file in the bundle the shim writes its own log to (its stderr).
pub const SHIM_LOG: &str = "log";
/// `Any` type of the runc options the shim takes (runtime binary).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// `Any` types of an OCI process (Exec) and of Linux resources (Update), as containerd names them.
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// The task API's ttrpc service name.
const TASK_SERVICE: &str = "containerd.task.v2.Task";

/// What kind of failure, for the caller to pick its answer (and its API status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such task or process.
    NotFound,
    AlreadyExists,
    /// The process is in the wrong state (deleting a running one, pausing a paused one).
    FailedPrecondition,
    InvalidArgument,
    Unimplemented,
    /// The shim is gone or does not answer: see [`cleanup_dead_shim`].
    Unavailable,
    DeadlineExceeded,
    /// Anything else (the runtime or the kernel failed).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start shim {binary} for task {id:?}: {source}")]
    Spawn {
        binary: PathBuf,
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shim {binary} {action} for task {id:?} failed ({status}): {message}")]
    ShimCommand {
        binary: PathBuf,
        action: &'static str,
        id: String,
        status: std::process::ExitStatus,
        message: String,
    },
    #[error("shim {binary} {action} for task {id:?} did not finish within {COMMAND_TIMEOUT:?}")]
    ShimCommandTimeout {
        binary: PathBuf,
        action: &'static str,
        id: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{call} of task {id:?}{}: {message}", exec_suffix(exec))]
    Call {
        call: &'static str,
        id: String,
        exec: String,
        kind: ErrorKind,
        message: String,
    },
    #[error("{what} for task {id:?}: {message}")]
    Encoding {
        what: &'static str,
        id: String,
        message: String,
    },
    #[error(
        "the shim of task {id:?} still serves at {address}: shut it down before cleaning up \
         after it"
    )]
    ShimAlive { id: String, address: String },
    #[error("cleanup of task {id:?}: {source}")]
    Unmount {
        id: String,
        #[source]
        source: crate::snapshots::MountError,
    },
}

fn exec_suffix(exec: &str) -> String {
    if exec.is_empty() {
        String::new()
    } else {
        format!(" (exec {exec:?})")
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Call { kind, .. } => *kind,
            Error::ShimAlive { .. } => ErrorKind::FailedPrecondition,
            Error::ShimCommandTimeout { .. } => ErrorKind::DeadlineExceeded,
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One task's shim, as kapseld starts it.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    pub id: String,
    pub namespace: String,
    /// `<state>/tasks/<namespace>/<id>`: `config.json` and `rootfs/` (mounted by the shim).
    pub bundle: PathBuf,
    /// The OCI runtime; the shim's default (`kapsel-runtime` beside it) when None.
    pub runtime_binary: Option<PathBuf>,
    pub shim_binary: PathBuf,
    /// kapseld's socket: the shim sends its events there.
    pub daemon_address: PathBuf,
}

/// The standard streams of a task or exec: FIFO paths, `binary://` or `file://` URIs, or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub pid: u32,
    /// The exit code, or 128 + the signal that killed it.
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// A process's state as the shim knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub bundle: String,
    pub stdio: Stdio,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

pub(crate) fn time_of(t: &MessageField<Timestamp>) -> Option<SystemTime> {
    let t = t.as_ref()?;
    if t.seconds <= 0 && t.nanos <= 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(t.seconds.max(0) as u64)
            + Duration::from_nanos(t.nanos.max(0) as u64),
    )
}

fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::NOT_FOUND => ErrorKind::NotFound,
        Code::ALREADY_EXISTS => ErrorKind::AlreadyExists,
        Code::FAILED_PRECONDITION => ErrorKind::FailedPrecondition,
        Code::INVALID_ARGUMENT => ErrorKind::InvalidArgument,
        Code::UNIMPLEMENTED => ErrorKind::Unimplemented,
        Code::UNAVAILABLE => ErrorKind::Unavailable,
        Code::DEADLINE_EXCEEDED => ErrorKind::DeadlineExceeded,
        _ => ErrorKind::Internal,
    }
}

fn json_any(type_url: &str, value: &serde_json::Value) -> Any {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value.to_string().into_bytes();
    any
}

/// The shim serving one task (and its execs): where it listens, and its pid. Each call connects
/// on its own, unless a connection is held for a burst of calls ([`Shim::hold`]).
#[derive(Debug, Clone)]
pub struct Shim {
    id: String,
    bundle: PathBuf,
    address: String,
    runtime_binary: Option<PathBuf>,
    shim_pid: u32,
    /// The connection held between [`Shim::hold`] and [`Shim::release`]. Connecting costs
    /// the shim's ttrpc server the start of 5 threads (~0.1-1 ms); a few calls in a row share one.
    held: std::sync::Arc<std::sync::Mutex<Option<conn::Conn>>>,
}

/// Runs a shim subcommand in the bundle and returns its stdout, failing past [`COMMAND_TIMEOUT`].
fn shim_command(spec: &ShimSpec, action: &'static str, extra_env: bool) -> Result<Vec<u8>> {
    let daemon = spec.daemon_address.display().to_string();
    let mut cmd = Command::new(&spec.shim_binary);
    cmd.args(["-namespace", &spec.namespace, "-address", &daemon]);
    // The shim wants a publish binary before it publishes at all; with TTRPC_ADDRESS set it
    // never runs it (events go to Events/Forward on kapseld's socket).
    if let Ok(me) = std::env::current_exe() {
        cmd.arg("-publish-binary").arg(me);
    }
    cmd.args(["-id", &spec.id]);
    if action == "delete" {
        cmd.arg("-bundle").arg(&spec.bundle);
    }
    cmd.arg(action)
        .current_dir(&spec.bundle)
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped());
    if extra_env {
        cmd.env("TTRPC_ADDRESS", &daemon);
    }
    let spawn_err = |source| Error::Spawn {
        binary: spec.shim_binary.clone(),
        id: spec.id.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // Both pipes drained off this thread, so a chatty shim cannot block on a full one.
    let mut out = child.stdout.take().map(drain);
    let mut err = child.stderr.take().map(drain);
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(spawn_err)? {
            Some(s) => break s,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::ShimCommandTimeout {
                    binary: spec.shim_binary.clone(),
                    action,
                    id: spec.id.clone(),
                });
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let stdout = out.take().map(|t| t.join().unwrap_or_default());
    let stderr = err.take().map(|t| t.join().unwrap_or_default());
    if !status.success() {
        return Err(Error::ShimCommand {
            binary: spec.shim_binary.clone(),
            action,
            id: spec.id.clone(),
            status,
            message: String::from_utf8_lossy(&stderr.unwrap_or_default())
                .trim()
                .to_string(),
        });
    }
    Ok(stdout.unwrap_or_default())
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Starts the shim of `spec.id` in its bundle (which holds `config.json`) and connects to it.
/// Its events go to `spec.daemon_address`; its own log to `<bundle>/log`.
pub fn start_shim(spec: &ShimSpec) -> Result<Shim> {
    let log = spec.bundle.join(SHIM_LOG);
    std::fs::File::create(&log).map_err(|source| Error::Io {
        what: "create shim log",
        path: log.clone(),
        source,
    })?;
    let out = shim_command(spec, "start", true)?;
    let address = String::from_utf8_lossy(&out).trim().to_string();
    Shim::connect_address(spec, &address)
}

impl Shim {
    /// Reconnects to the shim of a task that runs (kapseld restarted): the address is the one
    /// the shim wrote in the bundle.
    pub fn connect(spec: &ShimSpec) -> Result<Shim> {
        let path = spec.bundle.join(ADDRESS_FILE);
        let address = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            what: "read shim address",
            path,
            source,
        })?;
        Shim::connect_address(spec, address.trim())
    }

    /// Connects to a shim at `address` (`unix:///run/containerd/s/...`) and asks its pid: a
    /// socket that accepts but no shim behind it (or a stale one) shows here. The connection
    /// stays held for the calls that follow: [`Shim::release`] it.
    pub fn connect_address(spec: &ShimSpec, address: &str) -> Result<Shim> {
        let mut shim = Shim {
            id: spec.id.clone(),
            bundle: spec.bundle.clone(),
            address: address.to_string(),
            runtime_binary: spec.runtime_binary.clone(),
            shim_pid: 0,
            held: Default::default(),
        };
        shim.hold();
        shim.shim_pid = shim.connect_info()?.0;
        Ok(shim)
    }

    /// Keeps a connection open for the calls that follow (until [`Shim::release`]); they take
    /// turns on it. Without one (the shim does not accept), each call connects and fails alone.
    pub fn hold(&self) {
        let mut held = self.held.lock().expect("shim connection lock");
        if held.is_none() {
            *held = conn::Conn::open(&self.address).ok();
        }
    }

    /// Closes the held connection: an idle task costs no connection (and no shim threads).
    pub fn release(&self) {
        self.held.lock().expect("shim connection lock").take();
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The shim's own process.
    pub fn shim_pid(&self) -> u32 {
        self.shim_pid
    }

    fn fail(&self, call: &'static str, exec: &str, e: ttrpc::Error) -> Error {
        let (kind, message) = match e {
            ttrpc::Error::RpcStatus(s) => (kind_of(s.code()), s.message),
            // The connection broke or never answered: the shim is gone.
            other => (ErrorKind::Unavailable, format!("shim unreachable: {other}")),
        };
        Error::Call {
            call,
            id: self.id.clone(),
            exec: exec.to_string(),
            kind,
            message,
        }
    }

    /// One task API call (`method`) with the usual deadline, its failure named after `call`.
    fn call<Req: Message, Resp: Message>(
        &self,
        call: &'static str,
        method: &str,
        exec: &str,
        req: &Req,
    ) -> Result<Resp> {
        let mut held = self.held.lock().expect("shim connection lock");
        let r = match held.as_mut() {
            Some(c) => {
                let r = c.call(TASK_SERVICE, method, req, Some(CALL_TIMEOUT));
                if r.is_err() {
                    *held = None;
                }
                r
            }
            None => {
                drop(held);
                conn::unary(&self.address, TASK_SERVICE, method, req, Some(CALL_TIMEOUT))
            }
        };
        r.map_err(|e| self.fail(call, exec, e))
    }

    /// The shim's pid and the task's (0 before create).
    pub fn connect_info(&self) -> Result<(u32, u32)> {
        let req = api::ConnectRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self.call::<_, api::ConnectResponse>("connect", "Connect", "", &req)?;
        Ok((r.shim_pid, r.task_pid))
    }

    /// Creates the task: the shim mounts `rootfs` on `<bundle>/rootfs` and runs `runtime
    /// create`. Returns the init process's pid.
    pub fn create(&self, rootfs: Vec<Mount>, stdio: &Stdio) -> Result<u32> {
        if !rootfs.is_empty() {
            let dir = self.bundle.join("rootfs");
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                what: "create rootfs mount point",
                path: dir,
                source,
            })?;
        }
        let options = self.runtime_binary.as_ref().map(|b| {
            let mut o = containerd_shim_protos::shim::oci::Options::new();
            o.binary_name = b.display().to_string();
            let mut any = Any::new();
            any.type_url = RUNC_OPTIONS.to_string();
            any.value = o.write_to_bytes().unwrap_or_default();
            any
        });
        let req = api::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            rootfs: rootfs
                .into_iter()
                .map(|m| containerd_shim_protos::types::mount::Mount {
                    type_: m.kind,
                    source: m.source,
                    target: m.target.unwrap_or_default(),
                    options: m.options,
                    ..Default::default()
                })
                .collect(),
            terminal: stdio.terminal,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            options: MessageField::from_option(options),
            ..Default::default()
        };
        Ok(self
            .call::<_, api::CreateTaskResponse>("create", "Create", "", &req)?
            .pid)
    }

    /// Starts the init process (`exec` None) or an exec; returns its pid.
    pub fn start(&self, exec: Option<&str>) -> Result<u32> {
        let exec = exec.unwrap_or_default();
        let req = api::StartRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            ..Default::default()
        };
        Ok(self
            .call::<_, api::StartResponse>("start", "Start", exec, &req)?
            .pid)
    }

    /// Blocks until the process exits (at once if it has): no deadline.
    pub fn wait(&self, exec: Option<&str>) -> Result<ExitInfo> {
        let exec = exec.unwrap_or_default();
        let req = api::WaitRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            ..Default::default()
        };
        let r: api::WaitResponse = conn::unary(&self.address, TASK_SERVICE, "Wait", &req, None)
            .map_err(|e| self.fail("wait", exec, e))?;
        Ok(ExitInfo {
            pid: 0,
            exit_status: r.exit_status,
            exited_at: time_of(&r.exited_at),
        })
    }

    /// Sends `signal`; with `all`, to every process of the task's cgroup.
    pub fn kill(&self, exec: Option<&str>, signal: u32, all: bool) -> Result<()> {
        let exec = exec.unwrap_or_default();
        let req = api::KillRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.call::<_, api::Empty>("kill", "Kill", exec, &req)?;
        Ok(())
    }

    /// Deletes a stopped (or created) process; the init process's delete unmounts the rootfs.
    pub fn delete(&self, exec: Option<&str>) -> Result<ExitInfo> {
        let exec = exec.unwrap_or_default();
        let req = api::DeleteRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            ..Default::default()
        };
        let r = self.call::<_, api::DeleteResponse>("delete", "Delete", exec, &req)?;
        Ok(ExitInfo {
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: time_of(&r.exited_at),
        })
    }

    /// Adds an exec process (`process` is an OCI runtime-spec Process); start it with
    /// [`Shim::start`].
    pub fn exec(&self, exec_id: &str, process: &serde_json::Value, stdio: &Stdio) -> Result<()> {
        let req = api::ExecProcessRequest {
            id: self.id.clone(),
            exec_id: exec_id.to_string(),
            terminal: stdio.terminal,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            spec: MessageField::some(json_any(PROCESS_TYPE, process)),
            ..Default::default()
        };
        self.call::<_, api::Empty>("exec", "Exec", exec_id, &req)?;
        Ok(())
    }

    pub fn resize_pty(&self, exec: Option<&str>, width: u32, height: u32) -> Result<()> {
        let exec = exec.unwrap_or_default();
        let req = api::ResizePtyRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            width,
            height,
            ..Default::default()
        };
        self.call::<_, api::Empty>("resize pty", "ResizePty", exec, &req)?;
        Ok(())
    }

    /// Closes the process's stdin (EOF once what was written is forwarded).
    pub fn close_io(&self, exec: Option<&str>) -> Result<()> {
        let exec = exec.unwrap_or_default();
        let req = api::CloseIORequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            stdin: true,
            ..Default::default()
        };
        self.call::<_, api::Empty>("close io", "CloseIO", exec, &req)?;
        Ok(())
    }

    pub fn pause(&self) -> Result<()> {
        let req = api::PauseRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call::<_, api::Empty>("pause", "Pause", "", &req)?;
        Ok(())
    }

    pub fn resume(&self) -> Result<()> {
        let req = api::ResumeRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call::<_, api::Empty>("resume", "Resume", "", &req)?;
        Ok(())
    }

    /// The task's cgroup figures (cgroup v1 or v2 metrics, decoded).
    pub fn stats(&self) -> Result<Stats> {
        let req = api::StatsRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self.call::<_, api::StatsResponse>("stats", "Stats", "", &req)?;
        let any = r.stats.into_option().unwrap_or_default();
        Stats::decode(&any).map_err(|message| Error::Encoding {
            what: "decode stats",
            id: self.id.clone(),
            message,
        })
    }

    /// Changes the task's resources (`resources` is an OCI runtime-spec LinuxResources).
    pub fn update(&self, resources: &serde_json::Value) -> Result<()> {
        let req = api::UpdateTaskRequest {
            id: self.id.clone(),
            resources: MessageField::some(json_any(RESOURCES_TYPE, resources)),
            ..Default::default()
        };
        self.call::<_, api::Empty>("update", "Update", "", &req)?;
        Ok(())
    }

    /// The pids of every process of the task.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let req = api::PidsRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        let r = self.call::<_, api::PidsResponse>("pids", "Pids", "", &req)?;
        Ok(r.processes.iter().map(|p| p.pid).collect())
    }

    pub fn state(&self, exec: Option<&str>) -> Result<State> {
        let exec = exec.unwrap_or_default();
        let req = api::StateRequest {
            id: self.id.clone(),
            exec_id: exec.to_string(),
            ..Default::default()
        };
        let r = self.call::<_, api::StateResponse>("state", "State", exec, &req)?;
        let status = match r.status.enum_value() {
            Ok(PbStatus::CREATED) => Status::Created,
            Ok(PbStatus::RUNNING) => Status::Running,
            Ok(PbStatus::STOPPED) => Status::Stopped,
            Ok(PbStatus::PAUSED) => Status::Paused,
            Ok(PbStatus::PAUSING) => Status::Pausing,
            _ => Status::Unknown,
        };
        Ok(State {
            id: r.id,
            exec_id: r.exec_id,
            pid: r.pid,
            status,
            bundle: r.bundle,
            stdio: Stdio {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            exit_status: r.exit_status,
            exited_at: time_of(&r.exited_at),
        })
    }

    /// Asks the shim to exit: when no task is left, or at once with `now`.
    pub fn shutdown(&self, now: bool) -> Result<()> {
        let req = api::ShutdownRequest {
            id: self.id.clone(),
            now,
            ..Default::default()
        };
        match self.call::<_, api::Empty>("shutdown", "Shutdown", "", &req) {
            // The shim may exit before its answer is read: it did what was asked.
            Ok(_)
            | Err(Error::Call {
                kind: ErrorKind::Unavailable,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After [`Shim::shutdown`]: waits until nothing accepts on the shim's socket any more, so
    /// that a new `shim start` for the same task (a restart) binds a fresh shim instead of
    /// finding the exiting one there. False when it still accepts after `timeout`.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let path = conn::socket_path(&self.address);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// After a shim died (SIGKILL, OOM, crash): what containerd does — `shim ... delete` in the
/// bundle (the runtime force-deletes the container, the shim unmounts the rootfs and reports
/// 128+SIGKILL), then the rootfs is unmounted again if anything is left and the bundle removed.
/// Refuses while a shim still answers on the bundle's address.
pub fn cleanup_dead_shim(spec: &ShimSpec) -> Result<ExitInfo> {
    if let Ok(address) = std::fs::read_to_string(spec.bundle.join(ADDRESS_FILE)) {
        let address = address.trim();
        let path = address.strip_prefix("unix://").unwrap_or(address);
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::ShimAlive {
                id: spec.id.clone(),
                address: address.to_string(),
            });
        }
    }
    let mut exit = ExitInfo {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(SystemTime::now()),
    };
    if spec.bundle.is_dir() {
        let out = shim_command(spec, "delete", false)?;
        let r = api::DeleteResponse::parse_from_bytes(&out).map_err(|e| Error::Encoding {
            what: "decode the shim's DeleteResponse",
            id: spec.id.clone(),
            message: e.to_string(),
        })?;
        exit = ExitInfo {
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: time_of(&r.exited_at).or(exit.exited_at),
        };
        let rootfs = spec.bundle.join("rootfs");
        crate::snapshots::unmount_all(&rootfs).map_err(|source| Error::Unmount {
            id: spec.id.clone(),
            source,
        })?;
        std::fs::remove_dir_all(&spec.bundle).map_err(|source| Error::Io {
            what: "remove bundle",
            path: spec.bundle.clone(),
            source,
        })?;
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_kinds() {
        assert_eq!(kind_of(Code::NOT_FOUND), ErrorKind::NotFound);
        assert_eq!(
            kind_of(Code::FAILED_PRECONDITION),
            ErrorKind::FailedPrecondition
        );
        assert_eq!(kind_of(Code::UNKNOWN), ErrorKind::Internal);
    }

    #[test]
    fn errors_name_the_task_and_exec() {
        let e = Error::Call {
            call: "kill",
            id: "web".into(),
            exec: "e1".into(),
            kind: ErrorKind::NotFound,
            message: "process not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "kill of task \"web\" (exec \"e1\"): process not found"
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn timestamps_become_system_times() {
        let mut t = Timestamp::new();
        t.seconds = 10;
        t.nanos = 5;
        let got = time_of(&MessageField::some(t)).unwrap();
        assert_eq!(
            got.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::new(10, 5)
        );
        assert_eq!(time_of(&MessageField::none()), None);
    }

    #[test]
    fn cleanup_of_a_missing_bundle_reports_a_kill() {
        let spec = ShimSpec {
            id: "gone".into(),
            namespace: "default".into(),
            bundle: PathBuf::from("/nonexistent/kapsel-test-bundle"),
            runtime_binary: None,
            shim_binary: PathBuf::from("/nonexistent/shim"),
            daemon_address: PathBuf::from("/nonexistent/kapseld.sock"),
        };
        let exit = cleanup_dead_shim(&spec).unwrap();
        assert_eq!(exit.exit_status, 137);
    }
}
