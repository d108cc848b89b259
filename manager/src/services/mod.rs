//! Thin ttrpc adapters: proto requests → `images::Service` calls → proto responses. The only
//! place errors become ttrpc status codes.

use std::collections::HashMap;
use std::sync::Arc;

use kapsel_proto::descriptor as pt;
use kapsel_proto::ttrpc;

use crate::images::{self, Service};
use crate::oci::{Descriptor, Digest};

mod containers;
mod content;
mod events;
mod images_svc;
mod shim_events;
mod snapshots;
mod system;
mod transfer;
mod volumes;

pub use system::DaemonInfo;

/// Every service's method table, for `ttrpc::Server::register_service`. `task_events` gets
/// the task events shims forward (they are republished on the event stream either way).
pub fn methods(
    svc: Arc<Service>,
    ctrs: Arc<crate::containers::Containers>,
    info: Arc<DaemonInfo>,
    task_events: Option<crate::tasks::EventSink>,
) -> Vec<HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>> {
    vec![
        containerd_shim_protos::shim::events_ttrpc::create_events(Arc::new(
            shim_events::ShimEvents {
                svc: svc.clone(),
                sink: task_events,
            },
        )),
        kapsel_proto::volumes_ttrpc::create_volumes(Arc::new(volumes::Volumes(
            ctrs.volumes().clone(),
        ))),
        kapsel_proto::containers_ttrpc::create_containers(Arc::new(containers::Containers(ctrs))),
        kapsel_proto::images_ttrpc::create_images(Arc::new(images_svc::Images(svc.clone()))),
        kapsel_proto::content_ttrpc::create_content(Arc::new(content::Content(svc.clone()))),
        kapsel_proto::transfer_ttrpc::create_transfer(Arc::new(transfer::Transfer(svc.clone()))),
        kapsel_proto::snapshots_ttrpc::create_snapshots(Arc::new(snapshots::Snapshots(
            svc.clone(),
        ))),
        kapsel_proto::events_ttrpc::create_events(Arc::new(events::Events(svc.clone()))),
        kapsel_proto::system_ttrpc::create_system(Arc::new(system::System { svc, info })),
    ]
}

fn code_of(c: i32) -> ttrpc::Code {
    use ttrpc::Code;
    match c {
        1 => Code::CANCELLED,
        3 => Code::INVALID_ARGUMENT,
        4 => Code::DEADLINE_EXCEEDED,
        5 => Code::NOT_FOUND,
        6 => Code::ALREADY_EXISTS,
        7 => Code::PERMISSION_DENIED,
        8 => Code::RESOURCE_EXHAUSTED,
        9 => Code::FAILED_PRECONDITION,
        10 => Code::ABORTED,
        11 => Code::OUT_OF_RANGE,
        12 => Code::UNIMPLEMENTED,
        14 => Code::UNAVAILABLE,
        15 => Code::DATA_LOSS,
        16 => Code::UNAUTHENTICATED,
        _ => Code::INTERNAL,
    }
}

pub(crate) fn status(code: i32, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code_of(code), msg))
}

pub(crate) fn err(e: images::Error) -> ttrpc::Error {
    status(e.code(), e)
}

pub(crate) fn invalid(msg: impl ToString) -> ttrpc::Error {
    status(images::code::INVALID_ARGUMENT, msg)
}

pub(crate) fn timestamp(nanos: i64) -> pt::Timestamp {
    pt::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
        ..Default::default()
    }
}

pub(crate) fn descriptor_to_proto(d: &Descriptor) -> pt::Descriptor {
    pt::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn descriptor_from_proto(d: &pt::Descriptor) -> Result<Descriptor, ttrpc::Error> {
    let digest: Digest = d.digest.parse().map_err(invalid)?;
    Ok(Descriptor {
        media_type: d.media_type.clone(),
        digest,
        size: d.size.max(0) as u64,
        urls: None,
        annotations: if d.annotations.is_empty() {
            None
        } else {
            Some(d.annotations.clone().into_iter().collect())
        },
        platform: None,
    })
}
