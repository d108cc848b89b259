use std::sync::Arc;

use kapsel_proto::snapshots as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::{err, timestamp};
use crate::images::Service;

pub(super) struct Snapshots(pub Arc<Service>);

fn nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl kapsel_proto::snapshots_ttrpc::Snapshots for Snapshots {
    fn list(
        &self,
        _: &TtrpcContext,
        _: pb::ListSnapshotsRequest,
    ) -> ttrpc::Result<pb::ListSnapshotsResponse> {
        let sn = &self.0.snapshotter;
        let all = sn.walk().map_err(|e| err(e.into()))?;
        Ok(pb::ListSnapshotsResponse {
            snapshotter: sn.driver().to_string(),
            info: all
                .iter()
                .map(|i| pb::SnapshotInfo {
                    name: i.name.clone(),
                    parent: i.parent.clone().unwrap_or_default(),
                    kind: i.kind.to_string(),
                    created_at: Some(timestamp(nanos(i.created))).into(),
                    labels: i.labels.clone().into_iter().collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn usage(&self, _: &TtrpcContext, req: pb::UsageRequest) -> ttrpc::Result<pb::UsageResponse> {
        let sn = &self.0.snapshotter;
        let (size, inodes) = if req.key.is_empty() {
            total_usage(&**sn).map_err(|e| err(e.into()))?
        } else {
            let u = sn.usage(&req.key).map_err(|e| err(e.into()))?;
            (u.size, u.inodes)
        };
        Ok(pb::UsageResponse {
            size: size as i64,
            inodes: inodes as i64,
            ..Default::default()
        })
    }
}

/// The usage of every snapshot, summed.
pub(crate) fn total_usage(
    sn: &dyn crate::snapshots::Snapshotter,
) -> crate::snapshots::Result<(u64, u64)> {
    let mut size = 0;
    let mut inodes = 0;
    for i in sn.walk()? {
        if let Ok(u) = sn.usage(&i.name) {
            size += u.size;
            inodes += u.inodes;
        }
    }
    Ok((size, inodes))
}
