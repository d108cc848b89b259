//! `containerd.services.events.ttrpc.v1.Events/Forward` on kapseld's socket: where shims started
//! with `TTRPC_ADDRESS=<kapseld.sock>` send their task events. Each is decoded, republished on
//! kapseld's event stream and handed to the task sink (the containers service).

use std::sync::Arc;

use containerd_shim_protos::api::Empty;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};

use crate::events::Events;
use crate::images::Service;
use crate::tasks::{events, EventSink};

pub(super) struct ShimEvents {
    pub svc: Arc<Service>,
    pub sink: Option<EventSink>,
}

impl containerd_shim_protos::shim::events_ttrpc::Events for ShimEvents {
    fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(env) = req.envelope.into_option() else {
            return Err(super::invalid("Forward without an envelope"));
        };
        deliver(&self.svc.events, self.sink.as_ref(), env);
        Ok(Empty::new())
    }
}

/// Republishes one shim event and hands it to `sink`. An event that is not a task event (or
/// cannot be read) is still shown, never refused: the shim would only retry it for nothing.
fn deliver(stream: &Events, sink: Option<&EventSink>, env: Envelope) {
    match events::decode(&env.topic, env.event.as_ref()) {
        Ok(ev) => {
            stream.publish(&env.namespace, ev.topic(), ev.to_json());
            if let Some(sink) = sink {
                sink(&env.namespace, ev);
            }
        }
        Err(e) => {
            tracing::warn!(namespace = env.namespace.as_str(), "shim event: {e}");
            let type_url = env.event.as_ref().map(|a| a.type_url.clone());
            stream.publish(
                &env.namespace,
                &env.topic,
                serde_json::json!({"type_url": type_url, "error": e.to_string()}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskEvent;
    use containerd_shim_protos::events::task::TaskExit;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::protobuf::Message;
    use std::sync::Mutex;
    use std::time::Duration;

    fn envelope(type_url: &str, value: Vec<u8>) -> Envelope {
        let mut any = Any::new();
        any.type_url = type_url.into();
        any.value = value;
        let mut env = Envelope::new();
        env.namespace = "ns1".into();
        env.topic = "/tasks/exit".into();
        env.event = Some(any).into();
        env
    }

    #[test]
    fn task_events_reach_the_stream_and_the_sink() {
        let stream = Events::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let sink: EventSink = Arc::new(move |ns: &str, ev: TaskEvent| {
            seen2.lock().unwrap().push((ns.to_string(), ev));
        });
        let mut exit = TaskExit::new();
        exit.container_id = "web".into();
        exit.id = "web".into();
        exit.pid = 9;
        exit.exit_status = 2;
        let env = envelope("containerd.events.TaskExit", exit.write_to_bytes().unwrap());
        deliver(&stream, Some(&sink), env);
        // Not a task event: shown, not handed to the sink.
        deliver(
            &stream,
            Some(&sink),
            envelope("containerd.events.Other", vec![]),
        );

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "ns1");
        assert!(matches!(
            &seen[0].1,
            TaskEvent::Exit {
                pid: 9,
                exit_status: 2,
                ..
            }
        ));
        let b = stream.subscribe(0, Duration::ZERO, &[]);
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.events[0].topic, "/tasks/exit");
        assert_eq!(b.events[0].namespace, "ns1");
        assert_eq!(b.events[0].event["exit_status"], 2);
        assert_eq!(b.events[1].event["type_url"], "containerd.events.Other");
    }
}
