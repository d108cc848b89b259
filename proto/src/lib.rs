//! kapseld's API: protobuf messages and ttrpc services generated from `protos/kapsel/**`.
//!
//! | package | service | what |
//! |---|---|---|
//! | `kapsel.services.images.v1` | `Images` | image records: get, list, create (tag), update, delete, inspect, prune |
//! | `kapsel.services.content.v1` | `Content` | blobs: info, list, delete, ingests, garbage collection |
//! | `kapsel.services.transfer.v1` | `Transfer` | pull, push, import, export as jobs; `Progress` long-polls them |
//! | `kapsel.services.snapshots.v1` | `Snapshots` | list, usage |
//! | `kapsel.services.events.v1` | `Events` | `Subscribe` long-polls the event ring |
//! | `kapsel.services.system.v1` | `System` | version, info |
//! | `kapsel.services.containers.v1` | `Containers` | create, start, stop, kill, remove, list, inspect, wait, exec, logs, attach, stats, top, pause, rename, update, prune |
//! | `kapsel.services.volumes.v1` | `Volumes` | create, get, list, remove, prune |
//!
//! Requests carry a `namespace` where records are namespaced; empty means `default`.

pub use protobuf;
pub use ttrpc;

/// The version of these services the daemon reports (`kapsel version`).
pub const API_VERSION: &str = "1";

macro_rules! generated {
    ($($name:ident),* $(,)?) => {
        $(
            #[allow(clippy::all, non_camel_case_types, non_upper_case_globals, unused_mut)]
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/kapsel/", stringify!($name), ".rs"));
            }
        )*
    };
}

generated!(
    descriptor,
    images,
    images_ttrpc,
    content,
    content_ttrpc,
    transfer,
    transfer_ttrpc,
    snapshots,
    snapshots_ttrpc,
    events,
    events_ttrpc,
    system,
    system_ttrpc,
    containers,
    containers_ttrpc,
    volumes,
    volumes_ttrpc,
);
