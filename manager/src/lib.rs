//! kapseld and the kapsel CLI: images, content, snapshots, containers and tasks.
//!
//! Layout (see ../shared/design/STYLE.md): one module per domain with its types and traits
//! (`content`, `snapshots`, `images`), implementations beside them (`content/local.rs`,
//! `snapshots/{overlay,native}.rs`), and thin ttrpc adapters in `services/`.

pub mod archive;
pub mod cli;
pub mod config;
pub mod containers;
pub mod content;
pub mod daemon;
pub mod events;
pub mod gc;
pub mod images;
pub mod log;
pub mod logs;
pub mod metadata;
pub mod oci;
pub mod registry;
pub mod services;
pub mod snapshots;
pub mod tasks;
pub mod unpack;
pub mod volumes;
