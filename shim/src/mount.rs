//! Mounting the rootfs containerd describes in CreateTaskRequest (overlay from the snapshotter,
//! or a bind mount) onto `<bundle>/rootfs`, and unmounting it on delete.
//!
//! The kernel takes at most one page of mount data. An overlay of many layers passes that with
//! absolute layer paths, so its data is rewritten with paths relative to the directory all
//! layers share, and the mount is made by a short-lived child that changes into that directory
//! first (the shim's threads share one working directory, which must not move under them).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::reaper::Reaper;

/// Room for the data the kernel adds to the option page, as containerd leaves it.
const DATA_LIMIT: usize = 4096 - 512;

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {kind} {source_path} on {target}: {errno}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        #[source]
        errno: nix::Error,
    },
    #[error(
        "mount {kind} on {target}: its options are {len} bytes even with layer paths relative \
         to {common}, past the kernel's {DATA_LIMIT}-byte limit: use fewer layers"
    )]
    OptionsTooLong {
        kind: String,
        target: PathBuf,
        len: usize,
        common: PathBuf,
    },
    #[error("mount {kind} on {target}: {what} contains a NUL byte")]
    Nul {
        kind: String,
        target: PathBuf,
        what: String,
    },
}

/// containerd's mount options, split the way mount(8) reads them.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// `private`, `rshared`, ...: applied by separate calls after the mount.
    pub propagation: Vec<MsFlags>,
    /// What goes to the filesystem (`lowerdir=...`).
    pub data: Vec<String>,
}

/// `(clears, flag)` for a flag option; None for anything else.
fn flag_of(opt: &str) -> Option<(bool, MsFlags)> {
    use MsFlags as F;
    let set = |f| Some((false, f));
    let clear = |f| Some((true, f));
    match opt {
        "ro" => set(F::MS_RDONLY),
        "rw" => clear(F::MS_RDONLY),
        "bind" => set(F::MS_BIND),
        "rbind" => set(F::MS_BIND | F::MS_REC),
        "nosuid" => set(F::MS_NOSUID),
        "suid" => clear(F::MS_NOSUID),
        "nodev" => set(F::MS_NODEV),
        "dev" => clear(F::MS_NODEV),
        "noexec" => set(F::MS_NOEXEC),
        "exec" => clear(F::MS_NOEXEC),
        "sync" => set(F::MS_SYNCHRONOUS),
        "async" => clear(F::MS_SYNCHRONOUS),
        "dirsync" => set(F::MS_DIRSYNC),
        "mand" => set(F::MS_MANDLOCK),
        "nomand" => clear(F::MS_MANDLOCK),
        "noatime" => set(F::MS_NOATIME),
        "atime" => clear(F::MS_NOATIME),
        "nodiratime" => set(F::MS_NODIRATIME),
        "diratime" => clear(F::MS_NODIRATIME),
        "relatime" => set(F::MS_RELATIME),
        "norelatime" => clear(F::MS_RELATIME),
        "strictatime" => set(F::MS_STRICTATIME),
        "nostrictatime" => clear(F::MS_STRICTATIME),
        "lazytime" => set(F::MS_LAZYTIME),
        "nolazytime" => clear(F::MS_LAZYTIME),
        "defaults" => Some((false, F::empty())),
        _ => None,
    }
}

fn propagation_of(opt: &str) -> Option<MsFlags> {
    use MsFlags as F;
    Some(match opt {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
        };
        for o in options {
            if let Some((clears, f)) = flag_of(o) {
                if clears {
                    out.flags.remove(f);
                } else {
                    out.flags.insert(f);
                }
            } else if let Some(p) = propagation_of(o) {
                out.propagation.push(p);
            } else if !o.starts_with("x-") {
                // `x-*` options are for userspace helpers (containerd's `x-containerd.*`),
                // never for the kernel.
                out.data.push(o.clone());
            }
        }
        out
    }
}

/// Mount one containerd mount on `target`.
pub fn mount_one(
    reaper: &Reaper,
    kind: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), MountError> {
    let opts = MountOptions::parse(options);
    let mut flags = opts.flags;
    if kind == "bind" {
        flags |= MsFlags::MS_BIND;
    }
    let err = |errno| MountError::Mount {
        kind: kind.to_string(),
        source_path: source.to_string(),
        target: target.to_path_buf(),
        errno,
    };
    let bind = flags.contains(MsFlags::MS_BIND);
    let data = opts.data.join(",");
    if bind {
        mount(
            Some(source),
            target,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(err)?;
        // A bind mount takes its other flags only from a remount.
        let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            let r = mount(
                None::<&str>,
                target,
                None::<&str>,
                extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            );
            if let Err(e) = r {
                unmount_all(target);
                return Err(err(e));
            }
        }
    } else if kind == "overlay" && data.len() > DATA_LIMIT {
        mount_overlay_relative(reaper, source, &opts, target)?;
    } else {
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(source), target, Some(kind), flags, data).map_err(err)?;
    }
    for p in &opts.propagation {
        if let Err(e) = mount(None::<&str>, target, None::<&str>, *p, None::<&str>) {
            unmount_all(target);
            return Err(err(e));
        }
    }
    Ok(())
}

/// The directory every overlay layer (lower, upper, work) lies in, and `data` with those paths
/// made relative to it.
fn relative_overlay_data(data: &[String]) -> (PathBuf, String) {
    let layer_dirs = |opt: &str| -> Vec<PathBuf> {
        if let Some(v) = opt.strip_prefix("lowerdir=") {
            v.split(':').map(PathBuf::from).collect()
        } else if let Some(v) = opt
            .strip_prefix("upperdir=")
            .or_else(|| opt.strip_prefix("workdir="))
        {
            vec![PathBuf::from(v)]
        } else {
            Vec::new()
        }
    };
    let dirs: Vec<PathBuf> = data.iter().flat_map(|o| layer_dirs(o)).collect();
    let mut common: Option<Vec<Component>> = None;
    for d in &dirs {
        let parent: Vec<Component> = d.parent().unwrap_or(d).components().collect();
        common = Some(match common {
            None => parent,
            Some(c) => {
                let n = c.iter().zip(&parent).take_while(|(a, b)| a == b).count();
                c[..n].to_vec()
            }
        });
    }
    let common: PathBuf = common.unwrap_or_default().iter().collect();
    if !common.is_absolute() {
        return (PathBuf::from("/"), data.join(","));
    }
    let relative = |p: &str| match Path::new(p).strip_prefix(&common) {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => p.to_string(),
    };
    let rewritten: Vec<String> = data
        .iter()
        .map(|o| match o.split_once('=') {
            Some((key @ "lowerdir", v)) => {
                let layers: Vec<String> = v.split(':').map(relative).collect();
                format!("{key}={}", layers.join(":"))
            }
            Some((key @ ("upperdir" | "workdir"), v)) => format!("{key}={}", relative(v)),
            _ => o.clone(),
        })
        .collect();
    (common, rewritten.join(","))
}

fn cstring(kind: &str, target: &Path, what: &[u8]) -> Result<CString, MountError> {
    CString::new(what).map_err(|_| MountError::Nul {
        kind: kind.to_string(),
        target: target.to_path_buf(),
        what: String::from_utf8_lossy(what).into_owned(),
    })
}

/// An overlay whose data is too long with absolute paths: from a forked child that changes
/// into the layers' common directory and mounts with relative ones.
fn mount_overlay_relative(
    reaper: &Reaper,
    source: &str,
    opts: &MountOptions,
    target: &Path,
) -> Result<(), MountError> {
    let kind = "overlay";
    let (common, data) = relative_overlay_data(&opts.data);
    if data.len() > DATA_LIMIT {
        return Err(MountError::OptionsTooLong {
            kind: kind.to_string(),
            target: target.to_path_buf(),
            len: data.len(),
            common,
        });
    }
    let err = |errno| MountError::Mount {
        kind: kind.to_string(),
        source_path: source.to_string(),
        target: target.to_path_buf(),
        errno,
    };
    // The child's relative paths must not change what `target` names.
    let target_abs = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?
            .join(target)
    };
    let c_dir = cstring(kind, target, common.as_os_str().as_bytes())?;
    let c_source = cstring(kind, target, source.as_bytes())?;
    let c_target = cstring(kind, target, target_abs.as_os_str().as_bytes())?;
    let c_type = cstring(kind, target, kind.as_bytes())?;
    let c_data = cstring(kind, target, data.as_bytes())?;
    let flags = opts.flags.bits();
    // SAFETY: the child makes only async-signal-safe calls (chdir, mount, _exit) on strings
    // made before the fork, so forking this multi-threaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err(nix::Error::last()));
    }
    if pid == 0 {
        // SAFETY: see above; every pointer is a NUL-terminated string alive until _exit.
        unsafe {
            let rc = if libc::chdir(c_dir.as_ptr()) == 0 {
                libc::mount(
                    c_source.as_ptr(),
                    c_target.as_ptr(),
                    c_type.as_ptr(),
                    flags,
                    c_data.as_ptr().cast(),
                )
            } else {
                -1
            };
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    // The child exits with the errno of what failed (chdir or mount), all below 128.
    match reaper.wait(pid) {
        0 => Ok(()),
        errno if errno < 128 => Err(err(nix::Error::from_raw(errno))),
        _ => Err(err(nix::Error::ECHILD)),
    }
}

/// Unmount everything on `target` (tolerates nothing mounted).
pub fn unmount_all(target: &Path) {
    while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let o = MountOptions::parse(&strings(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
        ]));
        assert!(o.flags.is_empty());
        assert_eq!(
            o.data.join(","),
            "index=off,workdir=/w,upperdir=/u,lowerdir=/l"
        );
    }

    #[test]
    fn flags_propagation_and_helper_options() {
        let o = MountOptions::parse(&strings(&[
            "rbind",
            "ro",
            "nosuid",
            "rslave",
            "x-containerd.foo=bar",
            "rw",
            "ro",
            "size=1m",
        ]));
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, strings(&["size=1m"]));
        let o = MountOptions::parse(&strings(&["ro", "rw", "defaults", "private"]));
        assert!(o.flags.is_empty());
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE]);
        assert!(o.data.is_empty());
    }

    #[test]
    fn long_overlay_data_is_made_relative_to_the_common_directory() {
        let lowers: Vec<String> = (1..=200)
            .map(|i| format!("/var/lib/kapsel/snapshots/overlayfs/snapshots/{i}/fs"))
            .collect();
        let data = vec![
            "index=off".to_string(),
            "workdir=/var/lib/kapsel/snapshots/overlayfs/snapshots/201/work".to_string(),
            "upperdir=/var/lib/kapsel/snapshots/overlayfs/snapshots/201/fs".to_string(),
            format!("lowerdir={}", lowers.join(":")),
        ];
        assert!(data.join(",").len() > DATA_LIMIT);
        let (common, out) = relative_overlay_data(&data);
        assert_eq!(
            common,
            Path::new("/var/lib/kapsel/snapshots/overlayfs/snapshots")
        );
        assert!(out.starts_with("index=off,workdir=201/work,upperdir=201/fs,lowerdir=1/fs:2/fs:"));
        assert!(out.ends_with(":200/fs"));
        assert!(out.len() < DATA_LIMIT);
    }

    #[test]
    fn layers_without_a_common_directory_stay_absolute() {
        let data = strings(&["lowerdir=/a/fs:/b/fs", "upperdir=relative/u"]);
        let (common, out) = relative_overlay_data(&data);
        assert_eq!(common, Path::new("/"));
        assert_eq!(out, "lowerdir=/a/fs:/b/fs,upperdir=relative/u");
    }
}
