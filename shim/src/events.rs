//! Task events go to containerd through its publish binary:
//! `containerd --address ADDRESS publish --topic T --namespace NS`, the event as a protobuf
//! `Any` on stdin. One thread publishes them in order, so TaskExit never overtakes TaskStart.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use crate::reaper::Reaper;

/// Where events go.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    pub binary: PathBuf,
    /// containerd's gRPC address (what `publish` dials).
    pub address: String,
    pub namespace: String,
}

enum Item {
    Event(String, Any),
    /// Acknowledged once everything queued before it is published.
    Flush(mpsc::Sender<()>),
}

/// Queue of events to publish.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: Option<mpsc::Sender<Item>>,
}

/// Wrap a containerd event the way containerd's typeurl names it (`containerd.events.TaskExit`).
/// The name is built by hand: protobuf reflection would build every descriptor of the task API
/// in memory (hundreds of KiB an idle shim should not carry).
pub fn to_any<M: Message>(event: &M) -> Any {
    let mut any = Any::new();
    any.type_url = format!("containerd.events.{}", M::NAME);
    any.value = event.write_to_bytes().unwrap_or_default();
    any
}

impl Publisher {
    /// A publisher that drops everything (no `-publish-binary` given).
    pub fn disabled() -> Publisher {
        Publisher { tx: None }
    }

    /// Start the publishing thread.
    pub fn start(target: PublishTarget, reaper: Reaper) -> std::io::Result<Publisher> {
        let (tx, rx) = mpsc::channel::<Item>();
        std::thread::Builder::new()
            .name("publisher".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                for item in rx {
                    match item {
                        Item::Event(topic, any) => {
                            let _ = publish_once(&target, &reaper, &topic, &any);
                        }
                        Item::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })?;
        Ok(Publisher { tx: Some(tx) })
    }

    /// Queue `event` under `topic` (e.g. `/tasks/exit`).
    pub fn publish<M: Message>(&self, topic: &str, event: &M) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Item::Event(topic.to_string(), to_any(event)));
        }
    }

    /// Wait (at most `limit`) until every event queued so far is published: the shim must not
    /// exit with TaskExit/TaskDelete still in the queue.
    pub fn flush(&self, limit: std::time::Duration) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::channel();
            if tx.send(Item::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(limit);
            }
        }
    }
}

fn publish_once(
    target: &PublishTarget,
    reaper: &Reaper,
    topic: &str,
    any: &Any,
) -> std::io::Result<()> {
    let data = any.write_to_bytes().map_err(std::io::Error::other)?;
    let mut child = Command::new(&target.binary)
        .arg("--address")
        .arg(&target.address)
        .arg("publish")
        .arg("--topic")
        .arg(topic)
        .arg("--namespace")
        .arg(&target.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&data);
    }
    let status = reaper.wait(child.id() as i32);
    if status != 0 {
        return Err(std::io::Error::other(format!(
            "publish {topic}: exit {status}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::TaskExit;

    #[test]
    fn any_carries_containerd_type_name() {
        let mut e = TaskExit::new();
        e.container_id = "c1".into();
        e.exit_status = 3;
        let any = to_any(&e);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.exit_status, 3);
    }
}
