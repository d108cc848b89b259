use std::sync::Arc;
use std::time::Duration;

use kapsel_proto::events as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::timestamp;
use crate::images::Service;

pub(super) struct Events(pub Arc<Service>);

/// Longest a Subscribe call waits (the client's request timeout must be above it).
const MAX_WAIT: Duration = Duration::from_secs(30);

impl kapsel_proto::events_ttrpc::Events for Events {
    fn subscribe(
        &self,
        _: &TtrpcContext,
        req: pb::SubscribeRequest,
    ) -> ttrpc::Result<pb::SubscribeResponse> {
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_WAIT);
        let b = self.0.events.subscribe(req.after_seq, wait, &req.topics);
        Ok(pb::SubscribeResponse {
            events: b
                .events
                .iter()
                .map(|e| pb::Envelope {
                    seq: e.seq,
                    timestamp: Some(timestamp(e.timestamp)).into(),
                    namespace: e.namespace.clone(),
                    topic: e.topic.clone(),
                    event: e.event.to_string(),
                    ..Default::default()
                })
                .collect(),
            last_seq: b.last_seq,
            missed: b.missed,
            ..Default::default()
        })
    }
}
