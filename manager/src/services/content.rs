use std::sync::Arc;

use kapsel_proto::content as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::{err, invalid, timestamp};
use crate::content::Info;
use crate::images::Service;
use crate::oci::Digest;

pub(super) struct Content(pub Arc<Service>);

fn info_to_proto(i: &Info) -> pb::ContentInfo {
    pb::ContentInfo {
        digest: i.digest.to_string(),
        size: i.size as i64,
        created_at: Some(timestamp(i.created_at as i64 * 1_000_000_000)).into(),
        labels: i.labels.clone().into_iter().collect(),
        ..Default::default()
    }
}

fn digest(s: &str) -> ttrpc::Result<Digest> {
    s.parse().map_err(invalid)
}

impl kapsel_proto::content_ttrpc::Content for Content {
    fn info(&self, _: &TtrpcContext, req: pb::InfoRequest) -> ttrpc::Result<pb::InfoResponse> {
        let i = self
            .0
            .store
            .info(&digest(&req.digest)?)
            .map_err(|e| err(e.into()))?;
        Ok(pb::InfoResponse {
            info: Some(info_to_proto(&i)).into(),
            ..Default::default()
        })
    }

    fn list(
        &self,
        _: &TtrpcContext,
        _: pb::ListContentRequest,
    ) -> ttrpc::Result<pb::ListContentResponse> {
        let all = self.0.store.list().map_err(|e| err(e.into()))?;
        Ok(pb::ListContentResponse {
            info: all.iter().map(info_to_proto).collect(),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: pb::DeleteContentRequest,
    ) -> ttrpc::Result<pb::DeleteContentResponse> {
        let d = digest(&req.digest)?;
        let _g = self.0.gc_lock.lock().expect("gc lock");
        self.0.store.delete(&d).map_err(|e| err(e.into()))?;
        self.0.events.publish(
            crate::metadata::DEFAULT_NAMESPACE,
            crate::events::TOPIC_CONTENT_DELETE,
            serde_json::json!({"digest": d}),
        );
        Ok(pb::DeleteContentResponse::default())
    }

    fn list_statuses(
        &self,
        _: &TtrpcContext,
        _: pb::ListStatusesRequest,
    ) -> ttrpc::Result<pb::ListStatusesResponse> {
        let all = self.0.store.ingests().map_err(|e| err(e.into()))?;
        Ok(pb::ListStatusesResponse {
            statuses: all
                .iter()
                .map(|s| pb::IngestStatus {
                    ref_: s.reference.clone(),
                    offset: s.offset as i64,
                    total: s.total.unwrap_or(0) as i64,
                    expected: s
                        .expected
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    updated_at: Some(timestamp(s.updated_at as i64 * 1_000_000_000)).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn garbage_collect(
        &self,
        _: &TtrpcContext,
        _: pb::GarbageCollectRequest,
    ) -> ttrpc::Result<pb::GarbageCollectResponse> {
        let c = self.0.collect().map_err(err)?;
        let mut deleted: Vec<String> = c.content.iter().map(|d| d.to_string()).collect();
        deleted.extend(c.snapshots.iter().map(|s| format!("snapshot {s}")));
        Ok(pb::GarbageCollectResponse {
            deleted,
            reclaimed_bytes: c.bytes as i64,
            ..Default::default()
        })
    }
}
