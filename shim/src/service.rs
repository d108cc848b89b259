//! The ttrpc task service: translates requests to [`Task`] calls and errors to ttrpc codes.
//! The only place errors become ttrpc statuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim_protos::types::task::{ProcessInfo, Status};

use crate::cgroup::Cgroup;
use crate::events::Publisher;
use crate::io::StdioPaths;
use crate::process::State;
use crate::reaper::Reaper;
use crate::runtime::RuntimeOptions;
use crate::task::{CreateSpec, Task, TaskError};

/// The Task service over one [`Task`].
pub struct Service {
    /// The containers this shim serves by id: one, or a group sharing the shim (containers of
    /// one pod, named by the `io.kubernetes.cri.sandbox-id` annotation).
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    namespace: String,
    reaper: Reaper,
    publisher: Publisher,
    shutdown: Mutex<mpsc::Sender<()>>,
    /// Set by a Shutdown that ends the shim: later calls are refused.
    closing: AtomicBool,
}

impl Service {
    pub fn new(
        namespace: &str,
        reaper: Reaper,
        publisher: Publisher,
        shutdown: mpsc::Sender<()>,
    ) -> Service {
        Service {
            tasks: Mutex::default(),
            namespace: namespace.to_string(),
            reaper,
            publisher,
            shutdown: Mutex::new(shutdown),
            closing: AtomicBool::new(false),
        }
    }

    /// Every call starts here: note activity (for the idle trim), refuse calls after Shutdown.
    fn enter(&self) -> ttrpc::Result<()> {
        crate::memory::note_activity();
        if self.closing.load(Ordering::SeqCst) {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::UNAVAILABLE,
                "this shim is shutting down: it accepts no more calls".to_string(),
            )));
        }
        Ok(())
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task `id`, which must have been created here.
    fn task(&self, id: &str) -> ttrpc::Result<Arc<Task>> {
        self.tasks().get(id).cloned().ok_or_else(|| {
            status(TaskError::NotFound(format!(
                "task {id:?} not found in this shim"
            )))
        })
    }
}

fn status(e: TaskError) -> ttrpc::Error {
    let code = match &e {
        TaskError::NotFound(_) => Code::NOT_FOUND,
        TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
        TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        TaskError::Runtime(_) | TaskError::Mount(_) | TaskError::Io { .. } => Code::UNKNOWN,
    };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn to_status(s: State) -> Status {
    match s {
        State::Created => Status::CREATED,
        State::Running => Status::RUNNING,
        State::Paused => Status::PAUSED,
        State::Stopped => Status::STOPPED,
    }
}

/// runc-style runtime options (`BinaryName`, `Root`), when containerd sends them.
fn runtime_options(
    options: &MessageField<containerd_shim_protos::protobuf::well_known_types::any::Any>,
) -> Result<Option<Options>, TaskError> {
    let Some(any) = options.as_ref() else {
        return Ok(None);
    };
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return Err(TaskError::InvalidArgument(format!(
            "runtime options of type {:?} are not supported: use containerd.runc.v1.Options",
            any.type_url
        )));
    }
    Options::parse_from_bytes(&any.value)
        .map(Some)
        .map_err(|e| TaskError::InvalidArgument(format!("runtime options: {e}")))
}

impl containerd_shim_protos::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        self.enter()?;
        if !req.checkpoint.is_empty() {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::UNIMPLEMENTED,
                format!(
                    "restoring task {:?} from checkpoint {} is not implemented: \
                     containerd-shim-kapsel-v2 cannot restore containers yet",
                    req.id, req.checkpoint
                ),
            )));
        }
        let options = runtime_options(&req.options).map_err(status)?;
        let options = options
            .map(|o| RuntimeOptions {
                binary_name: o.binary_name,
                root: o.root,
                systemd_cgroup: o.systemd_cgroup,
                no_pivot_root: o.no_pivot_root,
                no_new_keyring: o.no_new_keyring,
            })
            .unwrap_or_default();
        let spec = CreateSpec {
            bundle: req.bundle.clone().into(),
            options,
            rootfs: req.rootfs,
            stdio: StdioPaths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
        };
        if req.id.is_empty() || req.id.contains('/') {
            return Err(status(TaskError::InvalidArgument(format!(
                "task id {:?} is not valid",
                req.id
            ))));
        }
        let task = {
            let mut tasks = self.tasks();
            if tasks.contains_key(&req.id) {
                return Err(status(TaskError::AlreadyExists(format!(
                    "task {:?} already exists",
                    req.id
                ))));
            }
            let task = Arc::new(Task::new(
                &req.id,
                &self.namespace,
                self.reaper.clone(),
                self.publisher.clone(),
            ));
            tasks.insert(req.id.clone(), task.clone());
            task
        };
        let pid = match task.create(&req.id, spec) {
            Ok(pid) => pid,
            Err(e) => {
                self.tasks().remove(&req.id);
                return Err(status(e));
            }
        };
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        self.enter()?;
        let pid = self
            .task(&req.id)?
            .start(&req.id, &req.exec_id)
            .map_err(status)?;
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        self.enter()?;
        let (v, bundle) = self
            .task(&req.id)?
            .state(&req.id, &req.exec_id)
            .map_err(status)?;
        let mut resp = api::StateResponse::new();
        resp.id = req.id;
        resp.exec_id = v.exec_id;
        resp.bundle = bundle.to_string_lossy().into_owned();
        resp.pid = v.pid;
        resp.status = to_status(v.state).into();
        resp.stdin = v.stdio.stdin;
        resp.stdout = v.stdio.stdout;
        resp.stderr = v.stdio.stderr;
        resp.terminal = v.stdio.terminal;
        if let Some((code, at)) = v.exit {
            resp.exit_status = code;
            resp.exited_at = Some(at).into();
        }
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        self.enter()?;
        let (code, at) = self
            .task(&req.id)?
            .wait(&req.id, &req.exec_id)
            .map_err(status)?;
        let mut resp = api::WaitResponse::new();
        resp.exit_status = code;
        resp.exited_at = Some(at).into();
        Ok(resp)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        self.task(&req.id)?
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        self.enter()?;
        let (pid, code, at) = self
            .task(&req.id)?
            .delete(&req.id, &req.exec_id)
            .map_err(status)?;
        if req.exec_id.is_empty() {
            self.tasks().remove(&req.id);
        }
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid;
        resp.exit_status = code;
        resp.exited_at = Some(at).into();
        Ok(resp)
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        self.task(&req.id)?
            .exec(&req.id, &req.exec_id, stdio, &spec)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        self.enter()?;
        let pids = self.task(&req.id)?.pids(&req.id).map_err(status)?;
        let mut resp = api::PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(resp)
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        self.task(&req.id)?
            .set_paused(&req.id, true)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        self.task(&req.id)?
            .set_paused(&req.id, false)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.task(&req.id)?
            .update(&req.id, &resources)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        self.task(&req.id)?
            .resize_pty(&req.id, &req.exec_id, req.width, req.height)
            .map_err(status)?;
        Ok(api::Empty::new())
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        self.enter()?;
        let any = match self.task(&req.id)?.cgroup(&req.id).map_err(status)? {
            Some(Cgroup::V2(dir)) => crate::stats::v2_any(&crate::stats::metrics_v2(&dir)),
            _ => {
                let doc = self.task(&req.id)?.stats(&req.id).map_err(status)?;
                crate::stats::to_any(&crate::stats::metrics_from_runtime(&doc))
            }
        };
        let mut resp = api::StatsResponse::new();
        resp.stats = Some(any).into();
        Ok(resp)
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        if req.stdin {
            self.task(&req.id)?
                .close_io(&req.id, &req.exec_id)
                .map_err(status)?;
        }
        Ok(api::Empty::new())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        self.enter()?;
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
            Code::UNIMPLEMENTED,
            format!(
                "checkpoint of task {:?} is not implemented: containerd-shim-kapsel-v2 cannot \
                 checkpoint containers yet",
                req.id
            ),
        )))
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        self.enter()?;
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = self.tasks().get(&req.id).map_or(0, |t| t.init_pid());
        resp.version = env!("CARGO_PKG_VERSION").to_string();
        Ok(resp)
    }

    fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        req: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        // Idempotent: a second Shutdown is not an error.
        crate::memory::note_activity();
        if req.now || self.tasks().is_empty() {
            self.closing.store(true, Ordering::SeqCst);
            let _ = self
                .shutdown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(());
        }
        Ok(api::Empty::new())
    }
}
