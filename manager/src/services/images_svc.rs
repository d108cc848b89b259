use std::sync::Arc;

use kapsel_proto::images as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::{descriptor_from_proto, descriptor_to_proto, err, invalid, timestamp};
use crate::images::{Service, Summary};
use crate::metadata::ImageRecord;

pub(super) struct Images(pub Arc<Service>);

fn image_to_proto(r: &ImageRecord) -> pb::Image {
    pb::Image {
        name: r.name.clone(),
        target: Some(descriptor_to_proto(&r.target)).into(),
        labels: r.labels.clone().into_iter().collect(),
        created_at: Some(timestamp(r.created_at)).into(),
        updated_at: Some(timestamp(r.updated_at)).into(),
        ..Default::default()
    }
}

fn summary_to_proto(s: &Summary) -> pb::ImageSummary {
    pb::ImageSummary {
        image: Some(image_to_proto(&s.record)).into(),
        config_digest: s.config.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        manifest_digest: s
            .manifest
            .as_ref()
            .map(|d| d.digest.to_string())
            .unwrap_or_default(),
        size: s.size as i64,
        config_created: s.config_created.map(timestamp).into(),
        incomplete: s.incomplete,
        unpacked: s.unpacked,
        ..Default::default()
    }
}

fn image_from(
    req: Option<&pb::Image>,
) -> ttrpc::Result<(
    String,
    crate::oci::Descriptor,
    std::collections::BTreeMap<String, String>,
)> {
    let img = req.ok_or_else(|| invalid("image is required"))?;
    let target = img
        .target
        .as_ref()
        .ok_or_else(|| invalid(format!("image {:?}: target is required", img.name)))?;
    Ok((
        img.name.clone(),
        descriptor_from_proto(target)?,
        img.labels.clone().into_iter().collect(),
    ))
}

impl kapsel_proto::images_ttrpc::Images for Images {
    fn get(
        &self,
        _: &TtrpcContext,
        req: pb::GetImageRequest,
    ) -> ttrpc::Result<pb::GetImageResponse> {
        let found = self.0.find(&req.namespace, &req.name).map_err(err)?;
        Ok(pb::GetImageResponse {
            image: Some(summary_to_proto(&found[0])).into(),
            ..Default::default()
        })
    }

    fn list(
        &self,
        _: &TtrpcContext,
        req: pb::ListImagesRequest,
    ) -> ttrpc::Result<pb::ListImagesResponse> {
        let list = self.0.list(&req.namespace, &req.filter).map_err(err)?;
        Ok(pb::ListImagesResponse {
            images: list.iter().map(summary_to_proto).collect(),
            ..Default::default()
        })
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: pb::CreateImageRequest,
    ) -> ttrpc::Result<pb::CreateImageResponse> {
        let (name, target, labels) = image_from(req.image.as_ref())?;
        let name = crate::registry::Reference::parse(&name)
            .map_err(invalid)?
            .to_string();
        let rec = self
            .0
            .create(&req.namespace, &name, target, labels)
            .map_err(err)?;
        Ok(pb::CreateImageResponse {
            image: Some(image_to_proto(&rec)).into(),
            ..Default::default()
        })
    }

    fn update(
        &self,
        _: &TtrpcContext,
        req: pb::UpdateImageRequest,
    ) -> ttrpc::Result<pb::UpdateImageResponse> {
        let (name, target, labels) = image_from(req.image.as_ref())?;
        let ns = crate::images::namespace(&req.namespace).to_string();
        self.0.db.get_image(&ns, &name).map_err(|e| err(e.into()))?;
        let rec = self.0.create(&ns, &name, target, labels).map_err(err)?;
        Ok(pb::UpdateImageResponse {
            image: Some(image_to_proto(&rec)).into(),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: pb::DeleteImageRequest,
    ) -> ttrpc::Result<pb::DeleteImageResponse> {
        let d = self
            .0
            .delete(&req.namespace, &req.reference, req.force, req.no_gc)
            .map_err(err)?;
        Ok(pb::DeleteImageResponse {
            untagged: d.untagged,
            deleted: d.deleted,
            reclaimed_bytes: d.bytes as i64,
            ..Default::default()
        })
    }

    fn inspect(
        &self,
        _: &TtrpcContext,
        req: pb::InspectImageRequest,
    ) -> ttrpc::Result<pb::InspectImageResponse> {
        let v = self
            .0
            .inspect(&req.namespace, &req.reference)
            .map_err(err)?;
        Ok(pb::InspectImageResponse {
            json: serde_json::to_string_pretty(&v).expect("json serialises"),
            ..Default::default()
        })
    }

    fn prune(
        &self,
        _: &TtrpcContext,
        req: pb::PruneImagesRequest,
    ) -> ttrpc::Result<pb::PruneImagesResponse> {
        let d = self.0.prune(&req.namespace, req.all).map_err(err)?;
        Ok(pb::PruneImagesResponse {
            untagged: d.untagged,
            deleted: d.deleted,
            reclaimed_bytes: d.bytes as i64,
            ..Default::default()
        })
    }
}
