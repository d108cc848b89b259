//! The container service: the lifecycle over the metadata record, the snapshot, the bundle
//! and the task (see the module doc of `containers`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::restart;
use super::RestartPolicy as Policy;
use super::{io_err, Error, Paths, Result};
use super::{spec, RunOptions};
use crate::images::{self, namespace, Service};
use crate::logs;
use crate::metadata::{now_nanos, ContainerRecord, ContainerState, ContainerStatus};
use crate::tasks;
use crate::tasks::{Shim, ShimSpec};
use crate::volumes::{self, Volumes};

pub const TOPIC_CONTAINER_CREATE: &str = "/containers/create";
pub const TOPIC_CONTAINER_UPDATE: &str = "/containers/update";
pub const TOPIC_CONTAINER_DELETE: &str = "/containers/delete";

/// Longest a long poll (Wait, Logs) waits per call.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often a following log read looks whether the container is done (the latency a
/// `run` client sees between the container's exit and its own).
const LOG_SLICE: Duration = Duration::from_millis(20);
/// Docker's default stop timeout.
const DEFAULT_STOP_TIMEOUT: i64 = 10;
/// How long an exited container's logger may take to write its last lines.
const LOGGER_DRAIN: Duration = Duration::from_secs(5);
/// After a task's init process ended, how long its shim's `/tasks/exit` event may take before
/// kapseld asks the shim itself (the shim retries a failed Forward for 1.5 s).
const EXIT_EVENT_GRACE: Duration = Duration::from_secs(3);
/// How long an exit event for a task kapseld does not know yet is kept (a process can exit
/// before `start` has recorded the task).
const EARLY_EXIT_KEEP: Duration = Duration::from_secs(60);

type Key = (String, String);

/// A running task: its shim and what kapseld holds for it.
struct Task {
    shim: Shim,
    /// The init process's pid (host namespace).
    pid: u32,
    /// Set by whoever handles the task's end (its exit event, the shim's death, a check of
    /// its state): the exit is handled once.
    ended: AtomicBool,
    /// Set (under the tasks lock) once the container's state says running: an exit event
    /// before that waits in `early_exits`.
    armed: AtomicBool,
    /// The write end kapseld holds on the stdin FIFO, so that a client detaching does not
    /// close the container's stdin.
    stdin: Mutex<Option<File>>,
    started: Instant,
    execs: Mutex<HashMap<String, ExecState>>,
}

#[derive(Debug, Clone, Default)]
struct ExecState {
    exit: Option<i32>,
}

/// What the process watcher watches for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watched {
    Shim(Key, u32),
    Init(Key, u32),
}

impl Watched {
    fn key(&self) -> &Key {
        match self {
            Watched::Shim(k, _) | Watched::Init(k, _) => k,
        }
    }
}

/// A task to look at when `at` has come (see [`Containers::check_exit`]).
type ExitCheck = (Instant, Key, Arc<Task>);

/// How a task ended, as kapseld learnt it.
#[derive(Debug)]
enum Ended {
    /// Its init process exited with this status (the shim's event or its State).
    Exited(i32),
    /// Its shim died (or stopped answering) first.
    ShimLost(String),
}

/// The container service (one per kapseld).
pub struct Containers {
    svc: Arc<Service>,
    paths: Paths,
    volumes: Arc<Volumes>,
    tasks: Mutex<HashMap<Key, Arc<Task>>>,
    /// Bumped (under the mutex) whenever a container or exec changes state; Wait waits on it.
    generation: Mutex<u64>,
    changed: Condvar,
    /// The last CPU sample of each container (stats' CPU %).
    cpu_samples: Mutex<HashMap<Key, (u64, Instant)>>,
    /// Restart delays by container.
    backoff: Mutex<HashMap<Key, Duration>>,
    /// False until [`Containers::recover`] has gone through the records: requests wait for
    /// it, so nobody sees a container as running whose shim is gone.
    recovered: Mutex<bool>,
    recovered_cv: Condvar,
    /// Exit events (pid, status, when) of init processes whose task was not recorded yet.
    early_exits: Mutex<HashMap<Key, (u32, i32, Instant)>>,
    /// One thread watching every shim and task init process (see [`tasks::watch`]).
    watcher: OnceLock<Option<tasks::watch::Watcher<Watched>>>,
    /// Tasks whose init process ended, for one thread to look at after [`EXIT_EVENT_GRACE`]
    /// if their exit event has not come.
    exit_checks: OnceLock<Option<Mutex<mpsc::Sender<ExitCheck>>>>,
    me: Weak<Containers>,
}

/// What `ps` shows.
#[derive(Debug, Clone)]
pub struct Summary {
    pub record: ContainerRecord,
    pub status_text: String,
    pub command: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitResult {
    pub exited: bool,
    pub exit_code: i32,
    pub error: String,
    pub restarting: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub tty: bool,
    pub stdin: bool,
    pub privileged: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub cursor: String,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub stdout: bool,
    pub stderr: bool,
    pub wait: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct LogsResponse {
    /// (stream, time in nanoseconds, line with its newline)
    pub entries: Vec<(String, i64, Vec<u8>)>,
    pub cursor: String,
    pub done: bool,
}

fn options_of(rec: &ContainerRecord) -> RunOptions {
    serde_json::from_value(rec.options.clone()).unwrap_or_default()
}

/// The run options of the container `id`, if it is still there.
fn options_of_key(svc: &Service, ns: &str, id: &str) -> Option<RunOptions> {
    svc.db.get_container(ns, id).ok().map(|r| options_of(&r))
}

fn policy_of(rec: &ContainerRecord) -> Policy {
    options_of(rec).restart_policy().unwrap_or(Policy::No)
}

fn volume_err(e: volumes::Error) -> Error {
    Error::Volume(Box::new(e))
}

fn task_err<'a>(id: &'a str, what: &'static str) -> impl FnOnce(tasks::Error) -> Error + 'a {
    move |e| Error::Task {
        id: id.to_string(),
        what,
        detail: e.to_string(),
    }
}

fn shim_spec(paths: &Paths, ns: &str, id: &str, runtime: Option<&str>) -> ShimSpec {
    ShimSpec {
        id: id.to_string(),
        namespace: ns.to_string(),
        bundle: paths.bundle(ns, id),
        runtime_binary: runtime
            .filter(|r| !r.is_empty())
            .map(Into::into)
            .or_else(|| paths.runtime_binary.clone()),
        shim_binary: paths.shim_binary.clone(),
        daemon_address: paths.daemon_address.clone(),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Containers {
    pub fn new(svc: Arc<Service>, paths: Paths) -> Arc<Containers> {
        let volumes = Arc::new(Volumes::new(svc.clone(), paths.root.join("volumes")));
        Arc::new_cyclic(|me| Containers {
            svc,
            paths,
            volumes,
            tasks: Mutex::new(HashMap::new()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            cpu_samples: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            recovered: Mutex::new(false),
            recovered_cv: Condvar::new(),
            early_exits: Mutex::new(HashMap::new()),
            watcher: OnceLock::new(),
            exit_checks: OnceLock::new(),
            me: me.clone(),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The volume store the containers mount from.
    pub fn volumes(&self) -> &Arc<Volumes> {
        &self.volumes
    }

    /// What kapseld does with the task events shims forward: an OOM kill is recorded on the
    /// container; the exit of a task's init process is handled (on a thread of its own: the
    /// sink runs on a ttrpc server thread).
    pub fn event_sink(&self) -> tasks::EventSink {
        let me = self.me.clone();
        Arc::new(move |ns: &str, ev: tasks::TaskEvent| {
            let Some(me) = me.upgrade() else { return };
            match ev {
                tasks::TaskEvent::Oom { container_id } => {
                    let _ = me.set_state(namespace(ns), &container_id, |s| s.oom_killed = true);
                }
                tasks::TaskEvent::Exit {
                    container_id,
                    id,
                    pid,
                    exit_status,
                    ..
                } if id == container_id => {
                    let key = (namespace(ns).to_string(), container_id);
                    me.exit_event(key, pid, exit_status as i32);
                }
                _ => {}
            }
        })
    }

    /// The exit event of a task's init process: handled if it is the task kapseld knows (the
    /// pid tells an old task's late event apart), kept a while if the task is not recorded yet.
    fn exit_event(&self, key: Key, pid: u32, code: i32) {
        let tasks = self.tasks.lock().expect("tasks lock");
        match tasks.get(&key) {
            Some(task) if task.pid == pid && task.armed.load(Ordering::SeqCst) => {
                let task = task.clone();
                drop(tasks);
                self.end_task(key, task, Ended::Exited(code));
            }
            _ => {
                let mut early = self.early_exits.lock().expect("early exits lock");
                early.retain(|_, (_, _, at)| at.elapsed() < EARLY_EXIT_KEEP);
                early.insert(key, (pid, code, Instant::now()));
            }
        }
    }

    /// Records a started (or reconnected) task, then watches its shim and init process. An exit
    /// event that came before is handled now.
    fn add_task(&self, key: Key, task: Arc<Task>) {
        let early = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            tasks.insert(key.clone(), task.clone());
            task.armed.store(true, Ordering::SeqCst);
            let mut early = self.early_exits.lock().expect("early exits lock");
            match early.remove(&key) {
                Some((pid, code, _)) if pid == task.pid => Some(code),
                _ => None,
            }
        };
        if let Some(w) = self.watcher() {
            w.add(
                task.shim.shim_pid(),
                Watched::Shim(key.clone(), task.shim.shim_pid()),
            );
            w.add(task.pid, Watched::Init(key.clone(), task.pid));
        }
        if let Some(code) = early {
            self.end_task(key, task, Ended::Exited(code));
        }
    }

    fn watcher(&self) -> Option<&tasks::watch::Watcher<Watched>> {
        self.watcher
            .get_or_init(|| {
                let me = self.me.clone();
                match tasks::watch::Watcher::start("task-watch", move |w: Watched| {
                    if let Some(me) = me.upgrade() {
                        me.process_gone(w);
                    }
                }) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!(
                            "cannot start the process watcher: a shim that dies will not be \
                             noticed until kapseld restarts: {e}"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// On the watcher's thread: a shim or a task's init process ended.
    fn process_gone(&self, w: Watched) {
        let Some(task) = self.task(&w.key().0, &w.key().1) else {
            return;
        };
        match w {
            Watched::Shim(key, pid) if task.shim.shim_pid() == pid => {
                let why = format!("the shim (pid {pid}) of the task died");
                self.end_task(key, task, Ended::ShimLost(why));
            }
            Watched::Init(key, pid) if task.pid == pid && !task.ended.load(Ordering::SeqCst) => {
                // The shim's exit event normally follows at once; if it was lost, ask the shim.
                let queued = self.exit_checks().is_some_and(|tx| {
                    let check = (Instant::now() + EXIT_EVENT_GRACE, key, task);
                    tx.lock().expect("exit checks lock").send(check).is_ok()
                });
                if !queued {
                    tracing::warn!("no exit check: a lost exit event will not be noticed");
                }
            }
            _ => {}
        }
    }

    /// The thread that looks at tasks whose init ended without an exit event (checks come in
    /// the order of their deadlines: the grace is the same for all).
    fn exit_checks(&self) -> Option<&Mutex<mpsc::Sender<ExitCheck>>> {
        self.exit_checks
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<ExitCheck>();
                let me = self.me.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("exit-check".into())
                        .spawn(move || {
                            for (at, key, task) in rx {
                                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                                let Some(me) = me.upgrade() else { return };
                                me.check_exit(key, task);
                            }
                        });
                match spawned {
                    Ok(_) => Some(Mutex::new(tx)),
                    Err(e) => {
                        tracing::error!("cannot start the exit check thread: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// A task whose init process ended and whose exit event did not come: its shim says how it
    /// ended (or is gone).
    fn check_exit(&self, key: Key, task: Arc<Task>) {
        if task.ended.load(Ordering::SeqCst) {
            return;
        }
        match task.shim.state(None) {
            Ok(st) if st.status == tasks::Status::Stopped => {
                tracing::info!(
                    id = key.1.as_str(),
                    "no exit event from the shim: its state says stopped"
                );
                self.end_task(key, task, Ended::Exited(st.exit_status as i32));
            }
            Ok(_) => {}
            Err(e) if e.kind() == tasks::ErrorKind::Unavailable => {
                self.end_task(key, task, Ended::ShimLost(e.to_string()));
            }
            Err(e) => tracing::warn!(id = key.1.as_str(), "task state: {e}"),
        }
    }

    /// Handles the end of `task` once, on a thread of its own.
    fn end_task(&self, key: Key, task: Arc<Task>, how: Ended) {
        if task.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        let held = task.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("exit-{}", short(&key.1)))
            .spawn(move || {
                if let Some(me) = me.upgrade() {
                    me.on_exit(&key, &task, how);
                }
            });
        if let Err(e) = spawned {
            // Left to the next look (the init's watch, a restart's recovery).
            held.ended.store(false, Ordering::SeqCst);
            tracing::error!("cannot start a thread to handle a container's exit: {e}");
        }
    }

    fn notify(&self) {
        *self.generation.lock().expect("generation lock") += 1;
        self.changed.notify_all();
    }

    fn publish(&self, ns: &str, topic: &str, rec: &ContainerRecord, extra: serde_json::Value) {
        let mut ev = serde_json::json!({"id": rec.id, "name": rec.name, "image": rec.image, "status": rec.state.status.as_str()});
        if let (Some(o), serde_json::Value::Object(x)) = (ev.as_object_mut(), extra) {
            o.extend(x);
        }
        self.svc.events.publish(ns, topic, ev);
    }

    /// The record a reference (id, unique id prefix, name) names.
    pub fn find(&self, ns: &str, reference: &str) -> Result<ContainerRecord> {
        self.wait_recovered();
        let ns = namespace(ns);
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        if reference.is_empty() {
            return Err(Error::NotFound(reference.to_string()));
        }
        let all = self.svc.db.list_containers(ns)?;
        if let Some(c) = all
            .iter()
            .find(|c| c.id == reference || c.name == reference)
        {
            return Ok(c.clone());
        }
        let by_prefix: Vec<&ContainerRecord> =
            all.iter().filter(|c| c.id.starts_with(reference)).collect();
        match by_prefix.len() {
            0 => Err(Error::NotFound(reference.to_string())),
            1 => Ok(by_prefix[0].clone()),
            _ => Err(Error::Ambiguous(reference.to_string())),
        }
    }

    fn task(&self, ns: &str, id: &str) -> Option<Arc<Task>> {
        self.tasks
            .lock()
            .expect("tasks lock")
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
    }

    fn running_task(&self, ns: &str, rec: &ContainerRecord) -> Result<Arc<Task>> {
        match rec.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => {}
            ContainerStatus::Restarting => return Err(Error::Restarting(rec.id.clone())),
            _ => return Err(Error::NotRunning(rec.id.clone())),
        }
        self.task(ns, &rec.id)
            .ok_or_else(|| Error::NotRunning(rec.id.clone()))
    }

    fn set_state(
        &self,
        ns: &str,
        id: &str,
        f: impl FnOnce(&mut ContainerState),
    ) -> Result<ContainerRecord> {
        let (rec, ()) = self.svc.db.update_container(ns, id, |r| {
            f(&mut r.state);
            Ok(())
        })?;
        self.notify();
        Ok(rec)
    }

    // ---- create

    /// Creates a container from `opts` (a JSON `RunOptions`); returns (id, name, warnings).
    pub fn create(&self, ns: &str, opts: RunOptions) -> Result<(String, String, Vec<String>)> {
        self.wait_recovered();
        let ns = namespace(ns);
        opts.validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let policy = opts
            .restart_policy()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if opts.auto_remove && policy != Policy::No {
            return Err(Error::InvalidArgument(
                "conflicting options: cannot specify both --restart and --rm".into(),
            ));
        }
        if opts.image.is_empty() {
            return Err(Error::InvalidArgument("an image is required".into()));
        }
        let found = match self.svc.find(ns, &opts.image) {
            Ok(f) => f,
            Err(images::Error::NotFound(_)) => return Err(Error::NoSuchImage(opts.image.clone())),
            Err(e) => return Err(e.into()),
        };
        let image = found[0].record.clone();
        let resolved = self.svc.resolve(&image.name, &image.target)?;
        let id = super::new_id();
        let name = if opts.name.is_empty() {
            super::generate_name(u64::from_str_radix(&id[..12], 16).unwrap_or(0))
        } else {
            let n = opts
                .name
                .strip_prefix('/')
                .unwrap_or(&opts.name)
                .to_string();
            super::validate_name(&n)?;
            n
        };
        let mut labels: BTreeMap<String, String> = resolved
            .config
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        labels.extend(opts.labels.clone());
        // Its volumes: named ones made if missing, a new anonymous one for each other.
        let needs = spec::volumes_needed(&resolved.config, &opts)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let new_volumes: Vec<_> = needs
            .iter()
            .map(|n| volumes::new_record(n.name.as_deref(), BTreeMap::new()))
            .collect();
        let mounted = needs
            .iter()
            .zip(&new_volumes)
            .map(|(n, v)| crate::metadata::VolumeMount {
                name: v.name.clone(),
                destination: n.destination.clone(),
                read_only: n.read_only,
            })
            .collect();
        let rec = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            image: opts.image.clone(),
            image_name: image.name.clone(),
            image_target: image.target.clone(),
            image_id: resolved.manifest.config.digest.to_string(),
            options: serde_json::to_value(&opts).expect("run options serialise"),
            spec: serde_json::Value::Null,
            snapshotter: self.svc.snapshotter.driver().to_string(),
            snapshot_key: id.clone(),
            labels,
            created_at: now_nanos(),
            state: ContainerState::default(),
            volumes: mounted,
        };
        // The record first: it holds the name, keeps the image from GC and its volumes in
        // use; the volumes' records come in the same transaction.
        {
            let _g = self.volumes.lock();
            self.svc
                .db
                .create_container_with_volumes(ns, &rec, &new_volumes)?;
        }
        match self.create_files(ns, &rec, &opts, &resolved) {
            Ok(spec) => {
                let (rec, ()) = self.svc.db.update_container(ns, &id, |r| {
                    r.spec = spec;
                    Ok(())
                })?;
                self.publish(ns, TOPIC_CONTAINER_CREATE, &rec, serde_json::json!({}));
                Ok((id, name, Vec::new()))
            }
            Err(e) => {
                // Nothing half-made stays (named volumes made for it are kept, as Docker's).
                self.remove_files(ns, &rec);
                if let Ok((_, gone)) = self.svc.db.delete_container_with_volumes(ns, &id, true) {
                    for v in gone {
                        self.volumes.remove_dir(ns, &v.name);
                    }
                }
                Err(e)
            }
        }
    }

    /// The snapshot, the container dir, the bundle with its spec.
    fn create_files(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        opts: &RunOptions,
        resolved: &images::Resolved,
    ) -> Result<serde_json::Value> {
        let id = &rec.id;
        let top = {
            let _g = self.svc.gc_lock.lock().expect("gc lock");
            let top = crate::unpack::unpack_image(
                &*self.svc.store,
                &*self.svc.snapshotter,
                &resolved.manifest,
                &resolved.config,
                &mut |_| {},
            )
            .map_err(|source| Error::Unpack {
                image: rec.image.clone(),
                source,
            })?;
            let mut labels = BTreeMap::new();
            labels.insert("kapsel.container".to_string(), id.clone());
            self.svc
                .snapshotter
                .prepare(id, Some(&top), labels)
                .map_err(|source| Error::Snapshot {
                    id: id.clone(),
                    source,
                })?;
            top
        };
        tracing::debug!(id = id.as_str(), parent = top.as_str(), "snapshot prepared");
        let cdir = self.paths.container_dir(id);
        std::fs::create_dir_all(&cdir).map_err(io_err("create directory", &cdir))?;
        let hostname =
            spec::hostname(opts, id).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        spec::prepare_container_dir(&cdir, &hostname, opts.network)
            .map_err(io_err("prepare container directory", &cdir))?;
        let bundle = self.paths.bundle(ns, id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err("create directory", &rootfs))?;
        let mounts = self
            .svc
            .snapshotter
            .mounts(id)
            .map_err(|source| Error::Snapshot {
                id: id.clone(),
                source,
            })?;
        let mut vols = Vec::new();
        for m in &rec.volumes {
            vols.push(spec::VolumeSource {
                destination: m.destination.clone(),
                source: self.volumes.make_dirs(ns, &m.name).map_err(volume_err)?,
                read_only: m.read_only,
            });
        }
        // The spec resolves users against the image's /etc/passwd: mount the rootfs for it.
        let guard = crate::snapshots::MountGuard::mount(&mounts, &rootfs)?;
        let ctx = spec::SpecContext {
            id: id.clone(),
            rootfs: rootfs.clone(),
            container_dir: cdir.clone(),
            init_binary: self.paths.init_binary.clone(),
            volumes: vols.clone(),
        };
        let generated = spec::generate(&resolved.config, opts, &ctx);
        // A missing working directory is made at create, as Docker does.
        let workdir = generated
            .as_ref()
            .ok()
            .map(|g| spec::create_workdir(&rootfs, g));
        // An empty volume is filled with what the image has at its path (Docker's copy-up).
        let seeded = vols.iter().find_map(|v| {
            volumes::seed(&rootfs, &v.destination, &v.source)
                .err()
                .map(|e| (v.source.clone(), e))
        });
        guard.unmount()?;
        let generated = generated.map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if let Some(Err(e)) = workdir {
            let cwd = generated["process"]["cwd"].as_str().unwrap_or("/");
            return Err(io_err("create the working directory", Path::new(cwd))(e));
        }
        if let Some((data, e)) = seeded {
            return Err(io_err("fill the volume from the image", &data)(e));
        }
        self.write_bundle(ns, id, &generated)?;
        Ok(generated)
    }

    /// `<bundle>/config.json` and the `rootfs/` mount point (a shim cleaned up after its death
    /// removes the bundle: every start writes it again).
    fn write_bundle(&self, ns: &str, id: &str, spec: &serde_json::Value) -> Result<()> {
        let bundle = self.paths.bundle(ns, id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io_err("create directory", &rootfs))?;
        let config = bundle.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(spec).expect("spec serialises"),
        )
        .map_err(io_err("write", &config))
    }

    /// Removes the snapshot, the bundle, the FIFOs and the container dir (best effort).
    fn remove_files(&self, ns: &str, rec: &ContainerRecord) {
        let bundle = self.paths.bundle(ns, &rec.id);
        let _ = crate::snapshots::unmount_all(&bundle.join("rootfs"));
        match self.svc.snapshotter.remove(&rec.snapshot_key) {
            Ok(()) | Err(crate::snapshots::Error::NotFound(_)) => {}
            Err(e) => tracing::warn!(id = rec.id.as_str(), "removing the snapshot: {e}"),
        }
        for dir in [
            bundle,
            self.paths.fifo_dir(&rec.id),
            self.paths.container_dir(&rec.id),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %dir.display(), "removing: {e}"),
            }
        }
    }

    // ---- start

    pub fn start(&self, ns: &str, reference: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        match rec.state.status {
            ContainerStatus::Running => return Ok(()),
            ContainerStatus::Paused => return Err(Error::Paused(rec.id)),
            _ => {}
        }
        self.backoff
            .lock()
            .expect("backoff lock")
            .remove(&(ns.to_string(), rec.id.clone()));
        self.start_task(ns, &rec)
    }

    fn start_task(&self, ns: &str, rec: &ContainerRecord) -> Result<()> {
        let id = rec.id.as_str();
        let opts = options_of(rec);
        let key = (ns.to_string(), rec.id.clone());
        let fifo_dir = self.paths.fifo_dir(id);
        let mut stdin_path = String::new();
        let mut stdin_hold = None;
        if opts.stdin_open {
            std::fs::create_dir_all(&fifo_dir).map_err(io_err("create directory", &fifo_dir))?;
            let p = fifo_dir.join("stdin");
            let _ = std::fs::remove_file(&p);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err("mkfifo", &p)(e.into()))?;
            // Read-write: opening does not block, and the FIFO never sees EOF while held.
            stdin_hold = Some(
                File::options()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .map_err(io_err("open", &p))?,
            );
            stdin_path = p.display().to_string();
        }
        let logger = logs::logger_uri(
            &self.paths.logger_binary,
            &self.paths.log_path(id),
            opts.log_writer_options()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            opts.tty,
        );
        self.write_bundle(ns, id, &rec.spec)?;
        let spec = shim_spec(&self.paths, ns, id, opts.runtime.as_deref());
        let shim = tasks::start_shim(&spec).map_err(task_err(id, "starting the shim"))?;
        let mounts = self
            .svc
            .snapshotter
            .mounts(&rec.snapshot_key)
            .map_err(|source| Error::Snapshot {
                id: id.to_string(),
                source,
            })?;
        let stderr = if opts.tty {
            String::new()
        } else {
            logger.clone()
        };
        let stdio = tasks::Stdio {
            stdin: stdin_path,
            stdout: logger,
            stderr,
            terminal: opts.tty,
        };
        let created = shim
            .create(mounts, &stdio)
            .map_err(task_err(id, "creating the task"))
            .and_then(|pid| {
                if opts.network == super::NetworkMode::None {
                    // Docker's `none`: its own namespace with `lo` up.
                    super::loopback::up_in(pid).map_err(|e| Error::Task {
                        id: id.to_string(),
                        what: "bringing lo up in the container's network namespace",
                        detail: e.to_string(),
                    })?;
                }
                shim.start(None).map_err(task_err(id, "starting the task"))
            });
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                let _ = shim.delete(None);
                let _ = shim.shutdown(true);
                let msg = e.to_string();
                let _ = self.set_state(ns, id, |s| {
                    s.status = ContainerStatus::Exited;
                    s.exit_code = exit_code_for_start_error(&msg);
                    s.error = msg;
                    s.finished_at = now_nanos();
                    s.pid = 0;
                    s.shim_address.clear();
                });
                return Err(e);
            }
        };
        // Started: the connection `start_shim` held for create and start goes.
        shim.release();
        let address = shim.address().to_string();
        let task = Arc::new(Task {
            shim,
            pid,
            ended: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            stdin: Mutex::new(stdin_hold),
            started: Instant::now(),
            execs: Mutex::new(HashMap::new()),
        });
        // Recorded, not yet watched: an exit event meanwhile waits in `early_exits`.
        self.tasks
            .lock()
            .expect("tasks lock")
            .insert(key.clone(), task.clone());
        let rec = self.set_state(ns, id, |s| {
            s.status = ContainerStatus::Running;
            s.pid = pid;
            s.started_at = now_nanos();
            s.exit_code = 0;
            s.error.clear();
            s.oom_killed = false;
            s.stopped_by_user = false;
            s.shim_address = address;
        })?;
        self.publish(
            ns,
            TOPIC_CONTAINER_UPDATE,
            &rec,
            serde_json::json!({"action": "start"}),
        );
        self.add_task(key, task);
        Ok(())
    }

    /// Handles the end of a task (once, see [`Containers::end_task`]): the task deleted and its
    /// shim gone (or cleaned up after), every log line on disk, then the container exited, and
    /// `--rm` or the restart policy.
    fn on_exit(&self, key: &Key, task: &Arc<Task>, how: Ended) {
        let (ns, id) = (key.0.as_str(), key.1.as_str());
        let (code, error) = match how {
            Ended::Exited(c) => {
                task.shim.hold();
                if let Err(e) = task.shim.delete(None) {
                    tracing::warn!(id, "deleting the task: {e}");
                }
                if let Err(e) = task.shim.shutdown(false) {
                    tracing::debug!(id, "shim shutdown: {e}");
                }
                task.shim.release();
                (c, String::new())
            }
            Ended::ShimLost(why) => {
                // One that still runs but lost the task is told to go first.
                let _ = task.shim.shutdown(true);
                // What containerd does for a dead shim: `shim delete` kills what is left of
                // the container and unmounts its rootfs.
                let runtime = options_of_key(&self.svc, ns, id).and_then(|o| o.runtime);
                let spec = shim_spec(&self.paths, ns, id, runtime.as_deref());
                let deadline = Instant::now() + SHIM_EXIT;
                let cleaned = loop {
                    match tasks::cleanup_dead_shim(&spec) {
                        // A shim that stopped answering but still holds its socket.
                        Err(tasks::Error::ShimAlive { .. }) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        other => break other,
                    }
                };
                let error = match cleaned {
                    Ok(_) => format!("{why}: the container was killed and cleaned up"),
                    Err(e) => format!("{why}; cleanup: {e}"),
                };
                tracing::warn!(id, "{error}");
                (128 + libc::SIGKILL, error)
            }
        };
        // A restart right after must not find this shim still serving on the task's socket.
        if !task.shim.wait_gone(SHIM_EXIT) {
            tracing::warn!(
                id,
                "the shim still accepts calls {SHIM_EXIT:?} after its shutdown"
            );
        }
        if let Some(w) = self.watcher() {
            w.remove(|x| x.key() == key);
        }
        task.stdin.lock().expect("stdin lock").take();
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            // Only this task: a restart may have recorded the next one.
            if tasks.get(key).is_some_and(|t| Arc::ptr_eq(t, task)) {
                tasks.remove(key);
            }
        }
        tracing::debug!(id, "task deleted, shim told to stop");
        // Every line on disk before anyone sees the container exited.
        if !logs::wait_writer_done(&self.paths.log_path(id), LOGGER_DRAIN) {
            tracing::warn!(id, "the logger did not finish within {LOGGER_DRAIN:?}");
        }
        tracing::debug!(id, "logger done");
        let ran_for = task.started.elapsed();
        let rec = match self.set_state(ns, id, |s| {
            s.status = ContainerStatus::Exited;
            s.exit_code = code;
            s.error = error;
            s.pid = 0;
            s.finished_at = now_nanos();
            s.shim_address.clear();
        }) {
            Ok(r) => r,
            // Removed meanwhile (rm -f).
            Err(_) => return,
        };
        self.publish(
            ns,
            TOPIC_CONTAINER_UPDATE,
            &rec,
            serde_json::json!({"action": "die", "exitCode": code}),
        );
        let opts = options_of(&rec);
        if opts.auto_remove {
            // `--rm` takes the anonymous volumes along, as Docker's.
            if let Err(e) = self.remove_record(ns, &rec, true) {
                tracing::warn!(id, "--rm: {e}");
            }
            return;
        }
        let policy = policy_of(&rec);
        if policy.restart_on_exit(code, rec.state.restart_count, rec.state.stopped_by_user) {
            let delay = {
                let mut b = self.backoff.lock().expect("backoff lock");
                let d = restart::next_delay(b.get(key).copied(), ran_for);
                b.insert(key.clone(), d);
                d
            };
            let _ = self.set_state(ns, id, |s| {
                s.status = ContainerStatus::Restarting;
                s.restart_count += 1;
            });
            self.restart_later(key.clone(), delay);
        }
    }

    fn restart_later(&self, key: Key, delay: Duration) {
        let me = self.me.clone();
        let _ = std::thread::Builder::new()
            .name(format!("restart-{}", short(&key.1)))
            .spawn(move || {
                std::thread::sleep(delay);
                let Some(me) = me.upgrade() else { return };
                let Ok(rec) = me.svc.db.get_container(&key.0, &key.1) else {
                    return;
                };
                // A stop, rm or start by the user meanwhile wins.
                if rec.state.status != ContainerStatus::Restarting || rec.state.stopped_by_user {
                    return;
                }
                if let Err(e) = me.start_task(&key.0, &rec) {
                    tracing::warn!(id = key.1.as_str(), "restart by policy failed: {e}");
                }
            });
    }

    // ---- stop, kill, restart

    pub fn stop(&self, ns: &str, reference: &str, timeout: Option<i64>) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let rec = self.set_state(ns, &rec.id, |s| {
            s.stopped_by_user = true;
            if s.status == ContainerStatus::Restarting {
                s.status = ContainerStatus::Exited;
            }
        })?;
        let Some(task) = self.task(ns, &rec.id) else {
            return Ok(());
        };
        let opts = options_of(&rec);
        let timeout = timeout
            .filter(|t| *t >= 0)
            .or(opts.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let img = self
            .svc
            .resolve(&rec.image_name, &rec.image_target)
            .map(|r| r.config)
            .unwrap_or_default();
        let sig = spec::stop_signal(&img, &opts);
        if rec.state.status == ContainerStatus::Paused {
            let _ = task.shim.resume();
        }
        if timeout > 0 || sig != Signal::SIGKILL {
            if let Err(e) = task.shim.kill(None, sig as u32, false) {
                tracing::debug!(id = rec.id.as_str(), "stop signal: {e}");
            }
            if self.wait_exit(ns, &rec.id, Duration::from_secs(timeout.max(0) as u64)) {
                return Ok(());
            }
        }
        let _ = task.shim.kill(None, Signal::SIGKILL as u32, true);
        if !self.wait_exit(ns, &rec.id, Duration::from_secs(30)) {
            return Err(Error::Task {
                id: rec.id,
                what: "stopping",
                detail: "still running 30 s after SIGKILL".into(),
            });
        }
        Ok(())
    }

    /// Waits until the container has no task (true) or the timeout passes (false).
    fn wait_exit(&self, ns: &str, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.generation.lock().expect("generation lock");
        loop {
            let gone = self.task(ns, id).is_none()
                && self
                    .svc
                    .db
                    .get_container(ns, id)
                    .map_or(true, |r| !r.state.status.has_task());
            if gone {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(200)))
                .expect("generation lock")
                .0;
        }
    }

    pub fn kill(&self, ns: &str, reference: &str, signal: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let sig = if signal.is_empty() {
            Signal::SIGKILL
        } else {
            super::parse_signal(signal)?
        };
        let task = self.running_task(ns, &rec)?;
        if matches!(sig, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) {
            self.set_state(ns, &rec.id, |s| s.stopped_by_user = true)?;
        }
        task.shim
            .kill(None, sig as u32, false)
            .map_err(task_err(&rec.id, "kill"))
    }

    pub fn restart(&self, ns: &str, reference: &str, timeout: Option<i64>) -> Result<()> {
        self.stop(ns, reference, timeout)?;
        self.start(ns, reference)
    }

    // ---- remove, prune

    /// `rm`; `volumes` (`rm -v`) also removes the container's anonymous volumes that no other
    /// container uses (named volumes always stay).
    pub fn remove(&self, ns: &str, reference: &str, force: bool, volumes: bool) -> Result<String> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        if rec.state.status.has_task() || rec.state.status == ContainerStatus::Restarting {
            if !force {
                return Err(Error::RemoveRunning(rec.id));
            }
            self.set_state(ns, &rec.id, |s| s.stopped_by_user = true)?;
            if let Some(task) = self.task(ns, &rec.id) {
                let _ = task.shim.kill(None, Signal::SIGKILL as u32, true);
                self.wait_exit(ns, &rec.id, Duration::from_secs(30));
            }
        }
        let rec = self.svc.db.get_container(ns, &rec.id)?;
        self.remove_record(ns, &rec, volumes)?;
        Ok(rec.id)
    }

    /// Removes the container's files and record, with `volumes` its anonymous volumes too.
    fn remove_record(&self, ns: &str, rec: &ContainerRecord, volumes: bool) -> Result<()> {
        self.remove_files(ns, rec);
        let (_, gone) = self
            .svc
            .db
            .delete_container_with_volumes(ns, &rec.id, volumes)?;
        for v in gone {
            self.volumes.remove_dir(ns, &v.name);
        }
        self.backoff
            .lock()
            .expect("backoff lock")
            .remove(&(ns.to_string(), rec.id.clone()));
        self.notify();
        self.publish(ns, TOPIC_CONTAINER_DELETE, rec, serde_json::json!({}));
        Ok(())
    }

    /// Removes every stopped container; returns their ids.
    pub fn prune(&self, ns: &str) -> Result<Vec<String>> {
        let ns = namespace(ns);
        let mut out = Vec::new();
        for rec in self.svc.db.list_containers(ns)? {
            if matches!(
                rec.state.status,
                ContainerStatus::Created | ContainerStatus::Exited | ContainerStatus::Dead
            ) {
                self.remove_record(ns, &rec, false)?;
                out.push(rec.id);
            }
        }
        Ok(out)
    }

    // ---- queries

    pub fn list(&self, ns: &str, all: bool, filters: &[String]) -> Result<Vec<Summary>> {
        self.wait_recovered();
        let ns = namespace(ns);
        if let Some(bad) = filters.iter().find(|f| !known_filter(f)) {
            return Err(Error::InvalidArgument(format!(
                "invalid filter {bad:?}: use name=, id=, status=, label=, exited= or ancestor="
            )));
        }
        let now = now_nanos();
        let mut out = Vec::new();
        for rec in self.svc.db.list_containers(ns)? {
            if !all
                && !rec.state.status.has_task()
                && rec.state.status != ContainerStatus::Restarting
            {
                continue;
            }
            if !filters.iter().all(|f| matches_filter(&rec, f)) {
                continue;
            }
            out.push(Summary {
                status_text: super::status_text(&rec, now),
                command: super::command_of(&rec),
                record: rec,
            });
        }
        // Newest first, as docker ps.
        out.sort_by_key(|s| std::cmp::Reverse(s.record.created_at));
        Ok(out)
    }

    /// `docker inspect`-shaped JSON.
    pub fn inspect(&self, ns: &str, reference: &str) -> Result<serde_json::Value> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let opts = options_of(&rec);
        let s = &rec.state;
        let ts = |n: i64| {
            if n == 0 {
                "0001-01-01T00:00:00Z".to_string()
            } else {
                crate::images::time::format_rfc3339(n)
            }
        };
        let (policy_name, max_retry) = policy_of(&rec).docker_name();
        // The image may be gone (rmi -f): then only what the options say.
        let img = self
            .svc
            .resolve(&rec.image_name, &rec.image_target)
            .map(|r| r.config)
            .unwrap_or_default();
        let (entrypoint, cmd) = spec::entrypoint_and_cmd(&img, &opts);
        let or_null = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let exposed_ports = img.config.as_ref().and_then(|c| c.exposed_ports.clone());
        // Docker's `Mounts`: the user's host binds, then the volumes.
        let mut mounts: Vec<serde_json::Value> = opts
            .binds()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| {
                let host = b.host_path()?;
                Some(serde_json::json!({
                    "Type": "bind", "Source": host, "Destination": b.destination,
                    "Mode": if b.read_only { "ro" } else { "" }, "RW": !b.read_only,
                    "Propagation": "rprivate",
                }))
            })
            .collect();
        for v in &rec.volumes {
            mounts.push(serde_json::json!({
                "Type": "volume",
                "Name": v.name,
                "Source": self.volumes.mountpoint(ns, &v.name),
                "Destination": v.destination,
                "Driver": volumes::DRIVER,
                "Mode": if v.read_only { "ro" } else { "" },
                "RW": !v.read_only,
                "Propagation": "",
            }));
        }
        let log_config: BTreeMap<&str, &str> = opts
            .log_opts
            .iter()
            .filter_map(|o| o.split_once('='))
            .collect();
        Ok(serde_json::json!({
            "Id": rec.id,
            "Mounts": mounts,
            "Created": ts(rec.created_at),
            "Path": rec.spec.pointer("/process/args/0"),
            "Args": rec.spec.pointer("/process/args").and_then(|a| a.as_array()).map(|a| a[1.min(a.len())..].to_vec()),
            "State": {
                "Status": s.status.as_str(),
                "Running": s.status.has_task(),
                "Paused": s.status == ContainerStatus::Paused,
                "Restarting": s.status == ContainerStatus::Restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.status == ContainerStatus::Dead,
                "Pid": s.pid,
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": ts(s.started_at),
                "FinishedAt": ts(s.finished_at),
            },
            "Image": rec.image_id,
            "ResolvConfPath": self.paths.container_dir(&rec.id).join("resolv.conf"),
            "HostnamePath": self.paths.container_dir(&rec.id).join("hostname"),
            "HostsPath": self.paths.container_dir(&rec.id).join("hosts"),
            "LogPath": self.paths.log_path(&rec.id),
            "Name": format!("/{}", rec.name),
            "RestartCount": s.restart_count,
            "Driver": rec.snapshotter,
            "Platform": "linux",
            "HostConfig": {
                "Binds": opts.binds,
                "NetworkMode": opts.network.to_string(),
                "RestartPolicy": {"Name": policy_name, "MaximumRetryCount": max_retry},
                "AutoRemove": opts.auto_remove,
                "CapAdd": opts.cap_add,
                "CapDrop": opts.cap_drop,
                "Privileged": opts.privileged,
                "ReadonlyRootfs": opts.read_only,
                "SecurityOpt": opts.security_opt,
                "GroupAdd": opts.group_add,
                "Memory": opts.memory.unwrap_or(0),
                "MemorySwap": opts.memory_swap.unwrap_or(0),
                "NanoCpus": opts.cpus.map_or(0, |c| (c * 1e9) as i64),
                "CpuShares": opts.cpu_shares.unwrap_or(0),
                "CpusetCpus": opts.cpuset_cpus.clone().unwrap_or_default(),
                "PidsLimit": opts.pids_limit,
                "Init": opts.init,
                "Runtime": opts.runtime.clone().unwrap_or_else(|| "kapsel-runtime".into()),
                "LogConfig": {"Type": "json-file", "Config": log_config},
            },
            "Config": {
                "Hostname": rec.spec.pointer("/hostname"),
                "User": opts.user.clone().unwrap_or_default(),
                "Tty": opts.tty,
                "OpenStdin": opts.stdin_open,
                "Env": rec.spec.pointer("/process/env"),
                "Cmd": or_null(cmd),
                "Entrypoint": or_null(entrypoint),
                "ExposedPorts": exposed_ports,
                "Image": rec.image,
                "WorkingDir": rec.spec.pointer("/process/cwd"),
                "Labels": rec.labels,
                "StopSignal": opts.stop_signal,
                "StopTimeout": opts.stop_timeout,
            },
            "Kapsel": {
                "Namespace": ns,
                "ImageName": rec.image_name,
                "Snapshotter": rec.snapshotter,
                "SnapshotKey": rec.snapshot_key,
                "Bundle": self.paths.bundle(ns, &rec.id),
                "ShimAddress": s.shim_address,
                "Spec": rec.spec,
            },
        }))
    }

    /// Long poll: waits up to `wait` for the container (or an exec) to exit.
    pub fn wait(
        &self,
        ns: &str,
        reference: &str,
        exec_id: &str,
        wait: Duration,
    ) -> Result<WaitResult> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut g = self.generation.lock().expect("generation lock");
        loop {
            let r = if exec_id.is_empty() {
                let rec = match self.svc.db.get_container(ns, &rec.id) {
                    Ok(r) => r,
                    // Removed (--rm) after its exit was seen by nobody: the last state known.
                    Err(crate::metadata::Error::ContainerNotFound { .. }) => {
                        return Ok(WaitResult {
                            exited: true,
                            exit_code: rec.state.exit_code,
                            ..Default::default()
                        })
                    }
                    Err(e) => return Err(e.into()),
                };
                match rec.state.status {
                    ContainerStatus::Exited | ContainerStatus::Dead => Some(WaitResult {
                        exited: true,
                        exit_code: rec.state.exit_code,
                        error: rec.state.error.clone(),
                        restarting: false,
                    }),
                    ContainerStatus::Restarting => Some(WaitResult {
                        exited: true,
                        exit_code: rec.state.exit_code,
                        error: rec.state.error.clone(),
                        restarting: true,
                    }),
                    _ => None,
                }
            } else {
                let task = self.task(ns, &rec.id);
                let st = task
                    .as_ref()
                    .and_then(|t| t.execs.lock().expect("execs lock").get(exec_id).cloned());
                match (task, st) {
                    (_, Some(ExecState { exit: Some(c) })) => Some(WaitResult {
                        exited: true,
                        exit_code: c,
                        ..Default::default()
                    }),
                    (_, Some(_)) => None,
                    (None, None) => Some(WaitResult {
                        exited: true,
                        exit_code: 137,
                        error: "the container stopped".into(),
                        restarting: false,
                    }),
                    (Some(_), None) => {
                        return Err(Error::ExecNotFound {
                            id: rec.id.clone(),
                            exec: exec_id.to_string(),
                        })
                    }
                }
            };
            if let Some(r) = r {
                return Ok(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(WaitResult::default());
            }
            g = self
                .changed
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(500)))
                .expect("generation lock")
                .0;
        }
    }

    // ---- exec

    /// Creates an exec process and its FIFOs; returns (exec id, stdin, stdout, stderr).
    pub fn exec(
        &self,
        ns: &str,
        reference: &str,
        o: ExecOptions,
    ) -> Result<(String, String, String, String)> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        if rec.state.status == ContainerStatus::Paused {
            return Err(Error::Paused(rec.id));
        }
        let task = self.running_task(ns, &rec)?;
        if o.args.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        // The user first: nothing is made for an exec that cannot run.
        let user = match o.user.as_str() {
            "" => None,
            u => Some(exec_user(
                &self.paths.bundle(ns, &rec.id).join("rootfs"),
                u,
            )?),
        };
        let exec_id = format!("exec-{}", crate::unpack::random_hex());
        let dir = self.paths.fifo_dir(&rec.id);
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mut paths = Vec::new();
        for (want, stream) in [(o.stdin, "stdin"), (true, "stdout"), (!o.tty, "stderr")] {
            if !want {
                paths.push(String::new());
                continue;
            }
            let p = dir.join(format!("{exec_id}-{stream}"));
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err("mkfifo", &p)(e.into()))?;
            paths.push(p.display().to_string());
        }
        let mut process = rec
            .spec
            .get("process")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        process["args"] = serde_json::json!(o.args);
        process["terminal"] = serde_json::json!(o.tty);
        if !o.workdir.is_empty() {
            process["cwd"] = serde_json::json!(o.workdir);
        }
        if !o.env.is_empty() {
            let mut env: Vec<String> = process["env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for e in &o.env {
                let k = e.split('=').next().unwrap_or("");
                env.retain(|x| x.split('=').next() != Some(k));
                env.push(e.clone());
            }
            process["env"] = serde_json::json!(env);
        }
        if let Some(user) = user {
            process["user"] = user;
        }
        if o.privileged {
            if let Some(all) = rec.spec.pointer("/process/capabilities/bounding") {
                let all = all.clone();
                process["capabilities"] = serde_json::json!({
                    "bounding": all, "effective": all, "permitted": all,
                });
            }
        }
        let stdio = tasks::Stdio {
            stdin: paths[0].clone(),
            stdout: paths[1].clone(),
            stderr: paths[2].clone(),
            terminal: o.tty,
        };
        task.shim
            .exec(&exec_id, &process, &stdio)
            .map_err(task_err(&rec.id, "exec"))?;
        task.execs
            .lock()
            .expect("execs lock")
            .insert(exec_id.clone(), ExecState::default());
        Ok((
            exec_id,
            paths[0].clone(),
            paths[1].clone(),
            paths[2].clone(),
        ))
    }

    pub fn exec_start(&self, ns: &str, reference: &str, exec_id: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let task = self.running_task(ns, &rec)?;
        if !task.execs.lock().expect("execs lock").contains_key(exec_id) {
            return Err(Error::ExecNotFound {
                id: rec.id,
                exec: exec_id.to_string(),
            });
        }
        if let Err(e) = task.shim.start(Some(exec_id)) {
            task.execs.lock().expect("execs lock").remove(exec_id);
            let _ = task.shim.delete(Some(exec_id));
            return Err(task_err(&rec.id, "starting the exec")(e));
        }
        let me = self.me.clone();
        let exec_id = exec_id.to_string();
        let id = rec.id.clone();
        let _ = std::thread::Builder::new()
            .name(format!("exec-{}", short(&rec.id)))
            .spawn(move || {
                let code = match task.shim.wait(Some(&exec_id)) {
                    Ok(e) => e.exit_status as i32,
                    Err(_) => 137,
                };
                let _ = task.shim.delete(Some(&exec_id));
                if let Some(st) = task.execs.lock().expect("execs lock").get_mut(&exec_id) {
                    st.exit = Some(code);
                }
                if let Some(me) = me.upgrade() {
                    let dir = me.paths.fifo_dir(&id);
                    for s in ["stdin", "stdout", "stderr"] {
                        let _ = std::fs::remove_file(dir.join(format!("{exec_id}-{s}")));
                    }
                    me.notify();
                }
            });
        Ok(())
    }

    pub fn resize_pty(
        &self,
        ns: &str,
        reference: &str,
        exec_id: &str,
        w: u32,
        h: u32,
    ) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let task = self.running_task(ns, &rec)?;
        task.shim
            .resize_pty(Some(exec_id).filter(|e| !e.is_empty()), w, h)
            .map_err(task_err(&rec.id, "resize"))
    }

    pub fn close_stdin(&self, ns: &str, reference: &str, exec_id: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let task = self.running_task(ns, &rec)?;
        if exec_id.is_empty() {
            task.stdin.lock().expect("stdin lock").take();
        }
        task.shim
            .close_io(Some(exec_id).filter(|e| !e.is_empty()))
            .map_err(task_err(&rec.id, "close stdin"))
    }

    /// The stdin FIFO of a container started with -i (empty without), and whether it has a tty.
    pub fn attach(&self, ns: &str, reference: &str) -> Result<(String, bool)> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        self.running_task(ns, &rec)?;
        let opts = options_of(&rec);
        let stdin = if opts.stdin_open {
            self.paths
                .fifo_dir(&rec.id)
                .join("stdin")
                .display()
                .to_string()
        } else {
            String::new()
        };
        Ok((stdin, opts.tty))
    }

    // ---- logs

    pub fn logs(&self, ns: &str, reference: &str, req: LogsRequest) -> Result<LogsResponse> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let logfile = self.paths.log_path(&rec.id);
        let q = logs::LogQuery {
            tail: req.tail,
            since: req.since,
            until: req.until,
            timestamps: false,
            follow: req.follow,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let bad_cursor = |e: &dyn std::fmt::Display| Error::InvalidArgument(e.to_string());
        let mut cursor = if req.cursor.is_empty() {
            logs::Cursor::seek(&logfile, &q).map_err(|e| bad_cursor(&e))?
        } else {
            logs::Cursor::from_token(&req.cursor).map_err(|e| bad_cursor(&e))?
        };
        // Whether the container can still write: checked before each read, so lines written
        // before it exited (its state changes once its logger is done) are read.
        let is_live = || {
            self.svc.db.get_container(ns, &rec.id).is_ok_and(|r| {
                r.state.status.has_task() || r.state.status == ContainerStatus::Restarting
            })
        };
        let deadline = Instant::now() + req.wait.min(MAX_WAIT);
        let (entries, live) = loop {
            let live = is_live();
            let slice = if req.follow && live {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(LOG_SLICE)
            } else {
                Duration::ZERO
            };
            let entries = logs::read_chunk(&logfile, &mut cursor, 1 << 20, slice).map_err(|e| {
                Error::Task {
                    id: rec.id.clone(),
                    what: "reading the log",
                    detail: e.to_string(),
                }
            })?;
            if !entries.is_empty() || !req.follow || !live || Instant::now() >= deadline {
                break (entries, live);
            }
        };
        let mut past_until = false;
        let mut out = Vec::new();
        for e in entries {
            if q.past_until(&e) {
                past_until = true;
                break;
            }
            if q.matches(&e) {
                out.push((e.stream.as_str().to_string(), e.time, e.log));
            }
        }
        let read_nothing = out.is_empty() && !past_until;
        // Not following, or the container is gone: done once a read finds nothing left.
        let done = past_until || (read_nothing && (!req.follow || !live));
        Ok(LogsResponse {
            entries: out,
            cursor: cursor.to_token(),
            done,
        })
    }

    // ---- stats, top, pause, rename, update

    pub fn stats(&self, ns: &str, reference: &str) -> Result<serde_json::Value> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let task = self.running_task(ns, &rec)?;
        let key = (ns.to_string(), rec.id.clone());
        let prev = self
            .cpu_samples
            .lock()
            .expect("cpu lock")
            .get(&key)
            .copied();
        let mut st = task.shim.stats().map_err(task_err(&rec.id, "stats"))?;
        let mut at = Instant::now();
        let prev = match prev {
            Some(p) => p,
            None => {
                // A first look: two samples a moment apart, as docker stats --no-stream.
                let first = (st.cpu_total_ns, at);
                std::thread::sleep(Duration::from_millis(200));
                st = task.shim.stats().map_err(task_err(&rec.id, "stats"))?;
                at = Instant::now();
                first
            }
        };
        self.cpu_samples
            .lock()
            .expect("cpu lock")
            .insert(key, (st.cpu_total_ns, at));
        let wall = at.duration_since(prev.1).as_nanos().max(1) as f64;
        let percent = st.cpu_total_ns.saturating_sub(prev.0) as f64 * 100.0 / wall;
        Ok(serde_json::json!({
            "id": rec.id,
            "name": rec.name,
            "cpu": {"total_ns": st.cpu_total_ns, "percent": percent},
            "memory": {
                "usage": st.memory_usage.saturating_sub(st.memory_inactive_file),
                "limit": st.memory_limit,
            },
            "pids": {"current": st.pids_current, "limit": st.pids_limit},
            "blkio": {"read": st.block_read_bytes, "write": st.block_write_bytes},
        }))
    }

    /// `ps` of the host filtered to the container's processes, as Docker does.
    pub fn top(
        &self,
        ns: &str,
        reference: &str,
        ps_args: &[String],
    ) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let task = self.running_task(ns, &rec)?;
        let pids = task.shim.pids().map_err(task_err(&rec.id, "top"))?;
        let args: Vec<String> = if ps_args.is_empty() {
            vec!["-ef".into()]
        } else {
            ps_args.to_vec()
        };
        let out = std::process::Command::new("ps")
            .args(&args)
            .output()
            .map_err(io_err("run", Path::new("ps")))?;
        if !out.status.success() {
            return Err(Error::InvalidArgument(format!(
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }

    pub fn pause(&self, ns: &str, reference: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        if rec.state.status == ContainerStatus::Paused {
            return Err(Error::Paused(rec.id));
        }
        let task = self.running_task(ns, &rec)?;
        task.shim.pause().map_err(task_err(&rec.id, "pause"))?;
        self.set_state(ns, &rec.id, |s| s.status = ContainerStatus::Paused)?;
        Ok(())
    }

    pub fn unpause(&self, ns: &str, reference: &str) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        if rec.state.status != ContainerStatus::Paused {
            return Err(Error::InvalidArgument(format!(
                "container {} is not paused",
                rec.id
            )));
        }
        let task = self.running_task(ns, &rec)?;
        task.shim.resume().map_err(task_err(&rec.id, "unpause"))?;
        self.set_state(ns, &rec.id, |s| s.status = ContainerStatus::Running)?;
        Ok(())
    }

    pub fn rename(&self, ns: &str, reference: &str, new_name: &str) -> Result<()> {
        let ns = namespace(ns);
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        super::validate_name(new_name)?;
        let rec = self.find(ns, reference)?;
        let (rec, ()) = self.svc.db.update_container(ns, &rec.id, |r| {
            r.name = new_name.to_string();
            if let Some(o) = r.options.as_object_mut() {
                o.insert("name".into(), new_name.into());
            }
            Ok(())
        })?;
        self.publish(
            ns,
            TOPIC_CONTAINER_UPDATE,
            &rec,
            serde_json::json!({"action": "rename"}),
        );
        Ok(())
    }

    /// Changes resources (live, through the shim, when running) and the restart policy.
    pub fn update(&self, ns: &str, reference: &str, update: serde_json::Value) -> Result<()> {
        let ns = namespace(ns);
        let rec = self.find(ns, reference)?;
        let obj = update
            .as_object()
            .ok_or_else(|| Error::InvalidArgument("update must be a JSON object".into()))?;
        let mut opts = options_of(&rec);
        if let Some(r) = obj.get("restart").and_then(|v| v.as_str()) {
            let p: Policy = r
                .parse()
                .map_err(|e: super::options::OptionsError| Error::InvalidArgument(e.to_string()))?;
            if opts.auto_remove && p != Policy::No {
                return Err(Error::InvalidArgument(
                    "restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                ));
            }
            opts.restart = r.to_string();
        }
        let mut res = serde_json::Map::new();
        let memory = obj.get("memory").and_then(|v| v.as_i64());
        let swap = obj.get("memory_swap").and_then(|v| v.as_i64());
        if memory.is_some() || swap.is_some() {
            let (limit, swap) = opts
                .update_memory(memory, swap)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let mut mem = serde_json::json!({ "limit": limit });
            if let Some(s) = swap.filter(|_| super::spec::swap_accounting()) {
                mem["swap"] = s.into();
            }
            res.insert("memory".into(), mem);
        }
        let mut cpu = serde_json::Map::new();
        if let Some(c) = obj.get("cpus").and_then(|v| v.as_f64()) {
            if c <= 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid --cpus {c}: must be above 0"
                )));
            }
            opts.cpus = Some(c);
            cpu.insert("quota".into(), ((c * 100_000.0) as i64).into());
            cpu.insert("period".into(), 100_000u64.into());
        }
        if let Some(s) = obj.get("cpu_shares").and_then(|v| v.as_u64()) {
            opts.cpu_shares = Some(s);
            cpu.insert("shares".into(), s.into());
        }
        if let Some(s) = obj.get("cpuset_cpus").and_then(|v| v.as_str()) {
            opts.cpuset_cpus = Some(s.to_string());
            cpu.insert("cpus".into(), s.into());
        }
        if !cpu.is_empty() {
            res.insert("cpu".into(), cpu.into());
        }
        if let Some(p) = obj.get("pids_limit").and_then(|v| v.as_i64()) {
            opts.pids_limit = Some(p);
            res.insert("pids".into(), serde_json::json!({"limit": p}));
        }
        if !res.is_empty() {
            if let Some(task) = self.task(ns, &rec.id) {
                task.shim
                    .update(&serde_json::Value::Object(res.clone()))
                    .map_err(task_err(&rec.id, "update"))?;
            }
        }
        let (rec, ()) = self.svc.db.update_container(ns, &rec.id, |r| {
            r.options = serde_json::to_value(&opts).expect("run options serialise");
            if let Some(spec_res) = r.spec.pointer_mut("/linux/resources") {
                if let (Some(sr), Some(res)) = (spec_res.as_object_mut(), Some(&res)) {
                    for (k, v) in res {
                        let e = sr.entry(k.clone()).or_insert_with(|| serde_json::json!({}));
                        if let (Some(e), Some(v)) = (e.as_object_mut(), v.as_object()) {
                            e.extend(v.clone());
                        }
                    }
                }
            }
            Ok(())
        })?;
        self.publish(
            ns,
            TOPIC_CONTAINER_UPDATE,
            &rec,
            serde_json::json!({"action": "update"}),
        );
        Ok(())
    }

    // ---- recovery

    fn wait_recovered(&self) {
        let mut done = self.recovered.lock().expect("recovered lock");
        while !*done {
            done = self.recovered_cv.wait(done).expect("recovered lock");
        }
    }

    /// At kapseld's start: reconnect to the shims of running containers, clean up after
    /// dead ones, and start the containers their restart policy says to; then serve requests.
    pub fn recover(&self) {
        self.recover_records();
        *self.recovered.lock().expect("recovered lock") = true;
        self.recovered_cv.notify_all();
    }

    fn recover_records(&self) {
        match crate::unpack::remove_interrupted_extractions(&*self.svc.snapshotter) {
            Ok(v) if !v.is_empty() => {
                tracing::info!(count = v.len(), "removed interrupted extractions")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("removing interrupted extractions: {e}"),
        }
        let all = match self.svc.db.all_containers() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("recovery: {e}");
                return;
            }
        };
        for (ns, rec) in all {
            let key = (ns.clone(), rec.id.clone());
            let was_running =
                rec.state.status.has_task() || rec.state.status == ContainerStatus::Restarting;
            let mut alive = false;
            if rec.state.status.has_task() {
                let spec = shim_spec(&self.paths, &ns, &rec.id, None);
                match Shim::connect(&spec) {
                    Ok(shim) => {
                        alive = true;
                        // What the task did while kapseld was down: the shim knows.
                        let state = shim.state(None);
                        let task = Arc::new(Task {
                            pid: state.as_ref().map_or(rec.state.pid, |s| s.pid),
                            shim,
                            ended: AtomicBool::new(false),
                            armed: AtomicBool::new(false),
                            stdin: Mutex::new(self.reopen_stdin(&rec)),
                            started: Instant::now(),
                            execs: Mutex::new(HashMap::new()),
                        });
                        let ended = match state {
                            Ok(st) if st.status == tasks::Status::Stopped => {
                                tracing::info!(
                                    id = rec.id.as_str(),
                                    exit_status = st.exit_status,
                                    "the task exited while kapseld was down"
                                );
                                Some(Ended::Exited(st.exit_status as i32))
                            }
                            Ok(_) => None,
                            Err(e) => Some(Ended::ShimLost(format!(
                                "the shim of the task no longer knows it: {e}"
                            ))),
                        };
                        match ended {
                            None => {
                                task.shim.release();
                                tracing::info!(
                                    id = rec.id.as_str(),
                                    name = rec.name.as_str(),
                                    "reconnected to the shim"
                                );
                                self.add_task(key.clone(), task);
                            }
                            // Handled before kapseld serves: `ps` right after is exact.
                            Some(how) => {
                                task.ended.store(true, Ordering::SeqCst);
                                self.tasks
                                    .lock()
                                    .expect("tasks lock")
                                    .insert(key.clone(), task.clone());
                                self.on_exit(&key, &task, how);
                            }
                        }
                    }
                    Err(e) => {
                        let exit = tasks::cleanup_dead_shim(&spec);
                        let (code, why) = match exit {
                            Ok(x) => (x.exit_status as i32, format!("the shim of the task died while kapseld was down ({e})")),
                            Err(ce) => (137, format!("the shim of the task died while kapseld was down ({e}); cleanup: {ce}")),
                        };
                        tracing::warn!(id = rec.id.as_str(), "{why}");
                        let _ = self.set_state(&ns, &rec.id, |s| {
                            s.status = ContainerStatus::Exited;
                            s.exit_code = code;
                            s.error = why;
                            s.pid = 0;
                            s.finished_at = now_nanos();
                            s.shim_address.clear();
                        });
                    }
                }
            }
            if alive {
                continue;
            }
            let Ok(rec) = self.svc.db.get_container(&ns, &rec.id) else {
                continue;
            };
            if options_of(&rec).auto_remove && rec.state.status == ContainerStatus::Exited {
                let _ = self.remove_record(&ns, &rec, true);
                continue;
            }
            if policy_of(&rec).start_with_daemon(was_running, rec.state.stopped_by_user) {
                if let Err(e) = self.start_task(&ns, &rec) {
                    tracing::warn!(id = rec.id.as_str(), "start by restart policy: {e}");
                }
            } else if rec.state.status == ContainerStatus::Restarting {
                let _ = self.set_state(&ns, &rec.id, |s| s.status = ContainerStatus::Exited);
            }
        }
    }

    fn reopen_stdin(&self, rec: &ContainerRecord) -> Option<File> {
        let p = self.paths.fifo_dir(&rec.id).join("stdin");
        File::options().read(true).write(true).open(p).ok()
    }
}

/// How long a shim told to exit may take to close its socket.
const SHIM_EXIT: Duration = Duration::from_secs(5);

/// Docker's exit codes for a container that could not start: 127 when the command does not
/// exist, 126 when it cannot be run, 125 otherwise.
pub fn exit_code_for_start_error(msg: &str) -> i32 {
    let m = msg.to_ascii_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("not found in $path")
    {
        127
    } else if m.contains("permission denied") || m.contains("is a directory") {
        126
    } else {
        125
    }
}

/// An exec's `-u` (`name`, `uid`, `name:group`, `uid:gid`, ...) resolved as `docker exec` does:
/// against the passwd and group files of the running container's rootfs.
fn exec_user(rootfs: &Path, u: &str) -> Result<serde_json::Value> {
    let user = super::user::resolve(rootfs, u)
        .map_err(|e| Error::InvalidArgument(format!("exec -u {u:?}: {e}")))?;
    Ok(serde_json::json!({
        "uid": user.uid,
        "gid": user.gid,
        "additionalGids": user.additional_gids,
    }))
}

/// `ps` output filtered to `pids` (its PID column).
fn parse_ps(out: &str, pids: &[u32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<String> = header.split_whitespace().map(String::from).collect();
    let pid_col = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        Error::InvalidArgument("ps output has no PID column: keep it in the ps options".into())
    })?;
    let mut rows = Vec::new();
    for l in lines {
        let cells: Vec<&str> = l.split_whitespace().collect();
        if cells.len() < titles.len() {
            continue;
        }
        let Ok(pid) = cells[pid_col].parse::<u32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        // The last column takes the rest (the command with its arguments).
        let mut row: Vec<String> = cells[..titles.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        row.push(cells[titles.len() - 1..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

/// Docker's `ps -f` filters: `name=`, `id=`, `status=`, `label=k[=v]`, `exited=`, `ancestor=`.
/// Whether `f` is a `ps -f` filter [`matches_filter`] knows: `KEY=VALUE` with one of its keys.
fn known_filter(f: &str) -> bool {
    f.split_once('=').is_some_and(|(k, _)| {
        matches!(
            k,
            "name" | "id" | "status" | "exited" | "label" | "ancestor"
        )
    })
}

fn matches_filter(rec: &ContainerRecord, f: &str) -> bool {
    let (k, v) = f.split_once('=').unwrap_or((f, ""));
    match k {
        "name" => rec.name.contains(v),
        "id" => rec.id.starts_with(v),
        "status" => rec.state.status.as_str() == v,
        "exited" => {
            rec.state.status == ContainerStatus::Exited && v.parse() == Ok(rec.state.exit_code)
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => rec.labels.get(lk).is_some_and(|x| x == lv),
            None => rec.labels.contains_key(v),
        },
        "ancestor" => rec.image == v || rec.image_name == v || rec.image_id.contains(v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_filters_are_checked() {
        for good in [
            "name=web",
            "status=exited",
            "label=a=b",
            "exited=0",
            "id=",
            "ancestor=busybox",
        ] {
            assert!(known_filter(good), "{good}");
        }
        for bad in ["nmae=web", "name", "", "=x"] {
            assert!(!known_filter(bad), "{bad}");
        }
    }

    #[test]
    fn start_errors_map_to_docker_exit_codes() {
        assert_eq!(
            exit_code_for_start_error("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            exit_code_for_start_error("exec /etc/passwd: permission denied"),
            126
        );
        assert_eq!(exit_code_for_start_error("cgroup: invalid argument"), 125);
    }

    #[test]
    fn ps_output_is_filtered_to_the_container() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nroot 42 1 0 10:01 ? 00:00:00 httpd -f -p 80\n";
        let (t, rows) = parse_ps(out, &[42]).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(
            rows,
            vec![vec![
                "root",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "httpd -f -p 80"
            ]]
        );
        assert!(parse_ps("UID CMD\n", &[1]).is_err());
    }

    #[test]
    fn exec_users_resolve_in_the_rootfs() {
        let dir = std::env::temp_dir().join(format!("kgaps-exec-user-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:nobody\n").unwrap();
        assert_eq!(
            exec_user(&dir, "1000:50").unwrap(),
            serde_json::json!({"uid": 1000, "gid": 50, "additionalGids": [50]})
        );
        assert_eq!(
            exec_user(&dir, "nobody").unwrap(),
            serde_json::json!({"uid": 65534, "gid": 65534, "additionalGids": [65534, 50]})
        );
        let e = exec_user(&dir, "nosuch").unwrap_err().to_string();
        assert!(e.contains("unable to find user nosuch"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
