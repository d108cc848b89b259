//! `containerd.services.events.ttrpc.v1.Events/Forward` on kapseld's socket: where shims started
//! with `TTRPC_ADDRESS=<kapseld.sock>` send their task events. Each is decoded, handed to the
//! task sink (the containers service) and republished on kapseld's event stream.

use std::sync::Arc;

use containerd_shim_protos::api::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};

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
        match events::decode(&env.topic, env.event.as_ref()) {
            Ok(ev) => {
                self.svc
                    .events
                    .publish(&env.namespace, ev.topic(), ev.to_json());
                if let Some(sink) = &self.sink {
                    sink(&env.namespace, ev);
                }
            }
            // Not a task event (or one we cannot read): still shown, never refused, or the
            // shim would retry it for nothing.
            Err(e) => {
                tracing::warn!(namespace = env.namespace.as_str(), "shim event: {e}");
                let type_url = env.event.as_ref().map(|a| a.type_url.clone());
                self.svc.events.publish(
                    &env.namespace,
                    &env.topic,
                    serde_json::json!({"type_url": type_url, "error": e.to_string()}),
                );
            }
        }
        Ok(Empty::new())
    }
}
