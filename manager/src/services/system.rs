use std::sync::Arc;

use kapsel_proto::system as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::err;
use crate::images::Service;

/// What the daemon was started with (for `kapsel info`).
#[derive(Debug, Clone, Default)]
pub struct DaemonInfo {
    pub root: String,
    pub state: String,
    pub address: String,
    pub log_level: String,
}

pub(super) struct System {
    pub svc: Arc<Service>,
    pub info: Arc<DaemonInfo>,
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), std::env::consts::ARCH.to_string()),
    }
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "linux".to_string())
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The filesystem type of `path` (Docker's "Backing Filesystem").
fn backing_fs(path: &std::path::Path) -> String {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => {
            let t = s.filesystem_type().0 as u64;
            match t {
                0xEF53 => "extfs".into(),
                0x5846_5342 => "xfs".into(),
                0x9123_683E => "btrfs".into(),
                0x0102_1994 => "tmpfs".into(),
                0x794C_7630 => "overlayfs".into(),
                0x2FC1_2FC1 => "zfs".into(),
                other => format!("0x{other:x}"),
            }
        }
        Err(_) => "unknown".into(),
    }
}

impl kapsel_proto::system_ttrpc::System for System {
    fn version(
        &self,
        _: &TtrpcContext,
        _: pb::VersionRequest,
    ) -> ttrpc::Result<pb::VersionResponse> {
        let (kernel, _) = uname();
        let arch = crate::registry::default_platform().architecture;
        Ok(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("KAPSEL_REVISION").unwrap_or("").to_string(),
            api_version: kapsel_proto::API_VERSION.to_string(),
            os: std::env::consts::OS.to_string(),
            arch,
            kernel,
            pid: i64::from(std::process::id()),
            ..Default::default()
        })
    }

    fn info(&self, _: &TtrpcContext, _: pb::InfoRequest) -> ttrpc::Result<pb::InfoResponse> {
        let svc = &self.svc;
        let sn = &svc.snapshotter;
        let walk = sn.walk().map_err(|e| err(e.into()))?;
        let (usage, inodes) = super::snapshots::total_usage(&**sn).map_err(|e| err(e.into()))?;
        let blobs = svc.store.list().map_err(|e| err(e.into()))?;
        let (kernel, arch) = uname();
        Ok(pb::InfoResponse {
            storage_driver: sn.driver().to_string(),
            snapshotter_root: sn.root().display().to_string(),
            snapshots: walk.len() as i64,
            snapshot_usage_bytes: usage as i64,
            snapshot_usage_inodes: inodes as i64,
            root: self.info.root.clone(),
            state: self.info.state.clone(),
            address: self.info.address.clone(),
            images: svc.db.count_images().map_err(|e| err(e.into()))? as i64,
            content_blobs: blobs.len() as i64,
            content_bytes: blobs.iter().map(|b| b.size).sum::<u64>() as i64,
            content_root: svc.content_root.display().to_string(),
            backing_filesystem: backing_fs(sn.root()),
            insecure_registries: svc.insecure.clone(),
            certs_dirs: svc
                .certs_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel,
            os: os_name(),
            arch,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as i64,
            memory_bytes: mem_total(),
            schema_version: svc.db.schema_version().map_err(|e| err(e.into()))? as u32,
            metadata_path: svc.db.path().display().to_string(),
            log_level: self.info.log_level.clone(),
            namespaces: svc.db.namespaces().map_err(|e| err(e.into()))?,
            ..Default::default()
        })
    }
}
