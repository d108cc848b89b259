use std::sync::Arc;

use kapsel_proto::ttrpc::{self, TtrpcContext};
use kapsel_proto::volumes as pb;

use super::{status, timestamp};
use crate::volumes::{self, Volume, Volumes as Store};

pub(super) struct Volumes(pub Arc<Store>);

fn err(e: volumes::Error) -> ttrpc::Error {
    status(e.code(), e)
}

fn to_proto(v: Volume) -> pb::Volume {
    pb::Volume {
        name: v.record.name,
        driver: volumes::DRIVER.to_string(),
        mountpoint: v.mountpoint.display().to_string(),
        created_at: Some(timestamp(v.record.created_at)).into(),
        labels: v.record.labels.into_iter().collect(),
        anonymous: v.record.anonymous,
        used_by: v.used_by,
        ..Default::default()
    }
}

impl kapsel_proto::volumes_ttrpc::Volumes for Volumes {
    fn create(&self, _: &TtrpcContext, r: pb::CreateVolumeRequest) -> ttrpc::Result<pb::Volume> {
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let labels = r.labels.into_iter().collect();
        let v = self.0.create(&r.namespace, name, labels).map_err(err)?;
        Ok(to_proto(v))
    }

    fn get(&self, _: &TtrpcContext, r: pb::GetVolumeRequest) -> ttrpc::Result<pb::Volume> {
        Ok(to_proto(self.0.get(&r.namespace, &r.name).map_err(err)?))
    }

    fn list(
        &self,
        _: &TtrpcContext,
        r: pb::ListVolumesRequest,
    ) -> ttrpc::Result<pb::ListVolumesResponse> {
        let list = self.0.list(&r.namespace, &r.filters).map_err(err)?;
        Ok(pb::ListVolumesResponse {
            volumes: list.into_iter().map(to_proto).collect(),
            ..Default::default()
        })
    }

    fn remove(&self, _: &TtrpcContext, r: pb::RemoveVolumeRequest) -> ttrpc::Result<pb::Empty> {
        self.0.remove(&r.namespace, &r.name).map_err(err)?;
        Ok(pb::Empty::default())
    }

    fn prune(
        &self,
        _: &TtrpcContext,
        r: pb::PruneVolumesRequest,
    ) -> ttrpc::Result<pb::PruneVolumesResponse> {
        let (deleted, bytes) = self.0.prune(&r.namespace, r.all).map_err(err)?;
        Ok(pb::PruneVolumesResponse {
            deleted,
            space_reclaimed: bytes,
            ..Default::default()
        })
    }
}
