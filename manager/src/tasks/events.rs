//! Task events from shims: they call `containerd.services.events.ttrpc.v1.Events/Forward` on
//! kapseld's socket (the shim's `TTRPC_ADDRESS`) with an envelope holding a protobuf `Any`
//! named `containerd.events.TaskExit` and so on. [`decode`] turns one into a [`TaskEvent`];
//! `services` hands it to an [`EventSink`] and republishes it on kapseld's own event stream.

use std::sync::Arc;
use std::time::SystemTime;

use super::time_of;

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::topics;

/// What a shim reported about a task. Exec ids are empty for the init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        container_id: String,
        bundle: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    Exit {
        container_id: String,
        /// The process: the container id for the init process, else the exec id.
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    Oom {
        container_id: String,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    Paused {
        container_id: String,
    },
    Resumed {
        container_id: String,
    },
    Delete {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
}

/// Where decoded events go: `(namespace, event)`. Called on a ttrpc server thread, in the order
/// the shim sent them; it must not block for long.
pub type EventSink = Arc<dyn Fn(&str, TaskEvent) + Send + Sync>;

/// A Forward that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event envelope without an event (topic {topic:?})")]
    Empty { topic: String },
    #[error("event of type {type_url:?} (topic {topic:?}) is not a task event kapseld knows")]
    Unknown { type_url: String, topic: String },
    #[error("event {type_url:?} cannot be decoded: {message}")]
    Malformed { type_url: String, message: String },
}

fn parse<M: Message>(any: &Any) -> Result<M, DecodeError> {
    M::parse_from_bytes(&any.value).map_err(|e| DecodeError::Malformed {
        type_url: any.type_url.clone(),
        message: e.to_string(),
    })
}

/// Decodes one event by its `Any` type (`containerd.events.TaskExit`, with or without a
/// `types.containerd.io/` style prefix).
pub fn decode(topic: &str, event: Option<&Any>) -> Result<TaskEvent, DecodeError> {
    let any = event.ok_or_else(|| DecodeError::Empty {
        topic: topic.to_string(),
    })?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let name = name.strip_prefix("containerd.events.").unwrap_or(name);
    Ok(match name {
        "TaskCreate" => {
            let e: ev::TaskCreate = parse(any)?;
            TaskEvent::Create {
                container_id: e.container_id,
                bundle: e.bundle,
                pid: e.pid,
            }
        }
        "TaskStart" => {
            let e: ev::TaskStart = parse(any)?;
            TaskEvent::Start {
                container_id: e.container_id,
                pid: e.pid,
            }
        }
        "TaskExit" => {
            let e: ev::TaskExit = parse(any)?;
            TaskEvent::Exit {
                exited_at: time_of(&e.exited_at),
                container_id: e.container_id,
                id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        "TaskOOM" => {
            let e: ev::TaskOOM = parse(any)?;
            TaskEvent::Oom {
                container_id: e.container_id,
            }
        }
        "TaskExecAdded" => {
            let e: ev::TaskExecAdded = parse(any)?;
            TaskEvent::ExecAdded {
                container_id: e.container_id,
                exec_id: e.exec_id,
            }
        }
        "TaskExecStarted" => {
            let e: ev::TaskExecStarted = parse(any)?;
            TaskEvent::ExecStarted {
                container_id: e.container_id,
                exec_id: e.exec_id,
                pid: e.pid,
            }
        }
        "TaskPaused" => {
            let e: ev::TaskPaused = parse(any)?;
            TaskEvent::Paused {
                container_id: e.container_id,
            }
        }
        "TaskResumed" => {
            let e: ev::TaskResumed = parse(any)?;
            TaskEvent::Resumed {
                container_id: e.container_id,
            }
        }
        "TaskDelete" => {
            let e: ev::TaskDelete = parse(any)?;
            TaskEvent::Delete {
                exited_at: time_of(&e.exited_at),
                container_id: e.container_id,
                id: e.id,
                pid: e.pid,
                exit_status: e.exit_status,
            }
        }
        _ => {
            return Err(DecodeError::Unknown {
                type_url: any.type_url.clone(),
                topic: topic.to_string(),
            })
        }
    })
}

fn nanos(t: &Option<SystemTime>) -> serde_json::Value {
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) => serde_json::json!(d.as_nanos() as i64),
        None => serde_json::Value::Null,
    }
}

impl TaskEvent {
    /// containerd's topic for the event (`/tasks/exit`, ...).
    pub fn topic(&self) -> &'static str {
        match self {
            TaskEvent::Create { .. } => topics::TASK_CREATE_EVENT_TOPIC,
            TaskEvent::Start { .. } => topics::TASK_START_EVENT_TOPIC,
            TaskEvent::Exit { .. } => topics::TASK_EXIT_EVENT_TOPIC,
            TaskEvent::Oom { .. } => topics::TASK_OOM_EVENT_TOPIC,
            TaskEvent::ExecAdded { .. } => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskEvent::ExecStarted { .. } => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskEvent::Paused { .. } => topics::TASK_PAUSED_EVENT_TOPIC,
            TaskEvent::Resumed { .. } => topics::TASK_RESUMED_EVENT_TOPIC,
            TaskEvent::Delete { .. } => topics::TASK_DELETE_EVENT_TOPIC,
        }
    }

    pub fn container_id(&self) -> &str {
        match self {
            TaskEvent::Create { container_id, .. }
            | TaskEvent::Start { container_id, .. }
            | TaskEvent::Exit { container_id, .. }
            | TaskEvent::Oom { container_id }
            | TaskEvent::ExecAdded { container_id, .. }
            | TaskEvent::ExecStarted { container_id, .. }
            | TaskEvent::Paused { container_id }
            | TaskEvent::Resumed { container_id }
            | TaskEvent::Delete { container_id, .. } => container_id,
        }
    }

    /// The event as kapseld's event stream shows it (times in nanoseconds since the epoch).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            TaskEvent::Create {
                container_id,
                bundle,
                pid,
            } => json!({"container_id": container_id, "bundle": bundle, "pid": pid}),
            TaskEvent::Start { container_id, pid } => {
                json!({"container_id": container_id, "pid": pid})
            }
            TaskEvent::Exit {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            }
            | TaskEvent::Delete {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            } => json!({
                "container_id": container_id,
                "id": id,
                "pid": pid,
                "exit_status": exit_status,
                "exited_at": nanos(exited_at),
            }),
            TaskEvent::Oom { container_id }
            | TaskEvent::Paused { container_id }
            | TaskEvent::Resumed { container_id } => json!({"container_id": container_id}),
            TaskEvent::ExecAdded {
                container_id,
                exec_id,
            } => json!({"container_id": container_id, "exec_id": exec_id}),
            TaskEvent::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => json!({"container_id": container_id, "exec_id": exec_id, "pid": pid}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
    use containerd_shim_protos::protobuf::MessageField;

    fn any_of<M: Message>(name: &str, m: &M) -> Any {
        let mut a = Any::new();
        a.type_url = format!("containerd.events.{name}");
        a.value = m.write_to_bytes().unwrap();
        a
    }

    #[test]
    fn exit_events_decode_with_their_time() {
        let mut e = ev::TaskExit::new();
        e.container_id = "web".into();
        e.id = "web".into();
        e.pid = 42;
        e.exit_status = 137;
        let mut t = Timestamp::new();
        t.seconds = 1_700_000_000;
        e.exited_at = MessageField::some(t);
        let got = decode("/tasks/exit", Some(&any_of("TaskExit", &e))).unwrap();
        assert_eq!(got.topic(), "/tasks/exit");
        assert_eq!(got.container_id(), "web");
        let j = got.to_json();
        assert_eq!(j["exit_status"], 137);
        assert_eq!(j["exited_at"], 1_700_000_000_000_000_000i64);
    }

    #[test]
    fn exec_started_and_paused_decode() {
        let mut e = ev::TaskExecStarted::new();
        e.container_id = "c".into();
        e.exec_id = "e1".into();
        e.pid = 7;
        assert_eq!(
            decode("/tasks/exec-started", Some(&any_of("TaskExecStarted", &e))).unwrap(),
            TaskEvent::ExecStarted {
                container_id: "c".into(),
                exec_id: "e1".into(),
                pid: 7
            }
        );
        let mut p = ev::TaskPaused::new();
        p.container_id = "c".into();
        let mut a = any_of("TaskPaused", &p);
        a.type_url = format!("types.containerd.io/{}", a.type_url);
        assert_eq!(
            decode("/tasks/paused", Some(&a)).unwrap().topic(),
            "/tasks/paused"
        );
    }

    #[test]
    fn unknown_empty_and_broken_events_are_errors() {
        assert!(matches!(
            decode("/tasks/x", None),
            Err(DecodeError::Empty { .. })
        ));
        let mut a = Any::new();
        a.type_url = "containerd.events.ImageCreate".into();
        assert!(matches!(
            decode("/images/create", Some(&a)),
            Err(DecodeError::Unknown { .. })
        ));
        a.type_url = "containerd.events.TaskExit".into();
        a.value = vec![0xff, 0xff, 0xff];
        assert!(matches!(
            decode("/tasks/exit", Some(&a)),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
