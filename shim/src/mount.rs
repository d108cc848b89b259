//! Mounting the rootfs containerd describes in CreateTaskRequest (overlay from the snapshotter,
//! or a bind mount) onto `<bundle>/rootfs`, and unmounting it on delete.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mount {kind} {source_path} on {target}: {errno}")]
pub struct MountError {
    pub kind: String,
    pub source_path: String,
    pub target: PathBuf,
    #[source]
    pub errno: nix::Error,
}

/// Split containerd's mount options into flags and the data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "suid" | "dev" | "exec" | "defaults" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mount one containerd mount on `target`.
pub fn mount_one(
    kind: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), MountError> {
    let (mut flags, data) = parse_options(options);
    if kind == "bind" {
        flags |= MsFlags::MS_BIND;
    }
    let err = |errno| MountError {
        kind: kind.to_string(),
        source_path: source.to_string(),
        target: target.to_path_buf(),
        errno,
    };
    let fstype = if flags.contains(MsFlags::MS_BIND) {
        None
    } else {
        Some(kind)
    };
    let data = if data.is_empty() {
        None
    } else {
        Some(data.as_str())
    };
    mount(Some(source), target, fstype, flags, data).map_err(err)?;
    // A bind mount ignores MS_RDONLY until remounted.
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Unmount everything on `target` (tolerates nothing mounted).
pub fn unmount_all(target: &Path) {
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_become_data() {
        let o: Vec<String> = ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (f, d) = parse_options(&o);
        assert!(f.is_empty());
        assert_eq!(d, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
    }

    #[test]
    fn bind_ro_flags() {
        let o = vec!["rbind".to_string(), "ro".to_string()];
        let (f, d) = parse_options(&o);
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert!(d.is_empty());
    }
}
