//! Mounting a snapshot's [`Mount`] list on a directory, and unmounting it.
//!
//! Overlay mounts whose option string would pass the kernel's limit (one page, less what the
//! kernel adds) are mounted from a short-lived child that changes into the longest directory
//! common to every layer first, so the layer paths can be given relative to it (containerd's
//! mount helper does the same).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::Mount;

/// The option data of one mount must fit in a page; leave room as containerd does.
const OPTION_LIMIT: usize = 4096 - 512;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {kind} {source_path} on {target}: {err}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("mount {kind} on {target}: options are {len} bytes, past the {OPTION_LIMIT}-byte limit even relative to {common}")]
    OptionsTooLong {
        kind: String,
        target: PathBuf,
        len: usize,
        common: PathBuf,
    },
    #[error("unmount {target}: {err}")]
    Unmount {
        target: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("invalid mount path {0:?} (contains NUL)")]
    InvalidPath(String),
}

/// Mounts every mount of `mounts` in order on `target` (or on `target/<mount.target>`).
/// On failure, what was mounted already is unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    for (i, m) in mounts.iter().enumerate() {
        let at = match &m.target {
            Some(t) => target.join(t.trim_start_matches('/')),
            None => target.to_path_buf(),
        };
        if let Err(e) = mount_one(m, &at) {
            for prev in mounts[..i].iter().rev() {
                let at = match &prev.target {
                    Some(t) => target.join(t.trim_start_matches('/')),
                    None => target.to_path_buf(),
                };
                let _ = unmount_all(&at);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything mounted on `target` (stacked mounts included). Not being a mount point
/// is not an error. A busy mount is retried for a second, then detached (lazy unmount).
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    let c = cpath(target)?;
    let mut busy = 0;
    loop {
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) };
        if rc == 0 {
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(()),
            Some(libc::EBUSY) if busy < 100 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Some(libc::EBUSY) => {
                // SAFETY: as above.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) }
                    != 0
                {
                    return Err(MountError::Unmount {
                        target: target.to_path_buf(),
                        err: std::io::Error::last_os_error(),
                    });
                }
            }
            _ => {
                return Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    err,
                })
            }
        }
    }
}

/// Mounts a list on a directory and unmounts it when dropped (errors at drop are logged).
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    mounted: bool,
}

impl MountGuard {
    pub fn mount(mounts: &[Mount], target: &Path) -> Result<MountGuard, MountError> {
        mount_all(mounts, target)?;
        Ok(MountGuard {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting the error.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.mounted = false;
        unmount_all(&self.target)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount_all(&self.target) {
                tracing::warn!(error = %e, "unmount at drop failed");
            }
        }
    }
}

struct Parsed {
    flags: libc::c_ulong,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "nosuid" => flags |= libc::MS_NOSUID,
            "suid" => flags &= !libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "dev" => flags &= !libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "exec" => flags &= !libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "private" => {}
            _ => data.push(o.clone()),
        }
    }
    Parsed { flags, data }
}

fn cpath(p: &Path) -> Result<CString, MountError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| MountError::InvalidPath(p.display().to_string()))
}

fn cstr(s: &str) -> Result<CString, MountError> {
    CString::new(s).map_err(|_| MountError::InvalidPath(s.to_string()))
}

fn mount_one(m: &Mount, target: &Path) -> Result<(), MountError> {
    let p = parse_options(&m.options);
    let err = |err: std::io::Error| MountError::Mount {
        kind: m.kind.clone(),
        source_path: m.source.clone(),
        target: target.to_path_buf(),
        err,
    };
    let ctarget = cpath(target)?;
    let csource = cstr(&m.source)?;
    if m.kind == "bind" || p.flags & libc::MS_BIND != 0 {
        let flags = libc::MS_BIND | (p.flags & libc::MS_REC);
        sys_mount(&csource, &ctarget, None, flags, None).map_err(err)?;
        let extra = p.flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | extra;
            if let Err(e) = sys_mount(&csource, &ctarget, None, flags, None) {
                let _ = unmount_all(target);
                return Err(err(e));
            }
        }
        return Ok(());
    }
    let ctype = cstr(&m.kind)?;
    let data = p.data.join(",");
    if m.kind == "overlay" && data.len() > OPTION_LIMIT {
        let (common, data) = compact_overlay(&p.data);
        if data.len() > OPTION_LIMIT {
            return Err(MountError::OptionsTooLong {
                kind: m.kind.clone(),
                target: target.to_path_buf(),
                len: data.len(),
                common,
            });
        }
        let target_abs = if target.is_absolute() {
            target.to_path_buf()
        } else {
            std::env::current_dir().map_err(&err)?.join(target)
        };
        let ctarget = cpath(&target_abs)?;
        let cdata = cstr(&data)?;
        let cdir = cpath(&common)?;
        return mount_in_dir(&cdir, &csource, &ctarget, &ctype, p.flags, &cdata).map_err(err);
    }
    let cdata = cstr(&data)?;
    sys_mount(&csource, &ctarget, Some(&ctype), p.flags, Some(&cdata)).map_err(err)
}

fn sys_mount(
    source: &CString,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> std::io::Result<()> {
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Rewrites `lowerdir=`, `upperdir=` and `workdir=` relative to the longest directory common to
/// all of them.
fn compact_overlay(data: &[String]) -> (PathBuf, String) {
    let mut paths: Vec<&Path> = Vec::new();
    for opt in data {
        if let Some(v) = opt.strip_prefix("lowerdir=") {
            paths.extend(v.split(':').map(Path::new));
        } else if let Some(v) = opt
            .strip_prefix("upperdir=")
            .or_else(|| opt.strip_prefix("workdir="))
        {
            paths.push(Path::new(v));
        }
    }
    let mut common: Vec<Component> = match paths.first() {
        Some(p) => p.parent().unwrap_or(p).components().collect(),
        None => return (PathBuf::from("/"), data.join(",")),
    };
    for p in &paths[1..] {
        let comps: Vec<Component> = p.parent().unwrap_or(p).components().collect();
        let n = common
            .iter()
            .zip(comps.iter())
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    let common: PathBuf = common.iter().collect();
    let rel = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map(|r| r.as_os_str())
            .unwrap_or(OsStr::new(p))
            .to_string_lossy()
            .into_owned()
    };
    let out: Vec<String> = data
        .iter()
        .map(|opt| {
            if let Some(v) = opt.strip_prefix("lowerdir=") {
                let parts: Vec<String> = v.split(':').map(rel).collect();
                format!("lowerdir={}", parts.join(":"))
            } else if let Some(v) = opt.strip_prefix("upperdir=") {
                format!("upperdir={}", rel(v))
            } else if let Some(v) = opt.strip_prefix("workdir=") {
                format!("workdir={}", rel(v))
            } else {
                opt.clone()
            }
        })
        .collect();
    (common, out.join(","))
}

/// Mounts from a forked child whose working directory is `dir` (the parent's cwd is shared by
/// all its threads and must not change).
fn mount_in_dir(
    dir: &CString,
    source: &CString,
    target: &CString,
    fstype: &CString,
    flags: libc::c_ulong,
    data: &CString,
) -> std::io::Result<()> {
    // SAFETY: the child only makes async-signal-safe system calls (chdir, mount, _exit) on
    // memory prepared before the fork, so forking a multi-threaded process is sound here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; every pointer is a valid NUL-terminated string.
        unsafe {
            if libc::chdir(dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location() & 0xff);
            }
            let rc = libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location() & 0xff
            });
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for the child we just forked; status is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    } else {
        Err(std::io::Error::other(format!(
            "mount helper child ended abnormally (status {status:#x})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_makes_layer_paths_relative() {
        let lowers: Vec<String> = (1..=3)
            .map(|i| format!("/var/lib/k/snapshots/{i}/fs"))
            .collect();
        let data = vec![
            "workdir=/var/lib/k/snapshots/9/work".to_string(),
            "upperdir=/var/lib/k/snapshots/9/fs".to_string(),
            format!("lowerdir={}", lowers.join(":")),
        ];
        let (common, out) = compact_overlay(&data);
        assert_eq!(common, Path::new("/var/lib/k/snapshots"));
        assert_eq!(out, "workdir=9/work,upperdir=9/fs,lowerdir=1/fs:2/fs:3/fs");
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&["ro".into(), "rbind".into(), "lowerdir=/a".into()]);
        assert_eq!(p.flags, libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC);
        assert_eq!(p.data, vec!["lowerdir=/a".to_string()]);
    }
}
