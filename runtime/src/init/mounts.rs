//! Root filesystem set-up: propagation, the spec's mounts, /dev, pivot_root, masked and
//! readonly paths. Runs inside the container's mount namespace, before the identity changes.

use super::InitError;
use crate::cgroups::Cgroup;
use crate::spec::{Mount, Spec};
use crate::syscall::{Kernel, Node};
use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// A mount option that is a flag, and whether it sets (`false`) or clears (`true`) it.
fn option_flag(opt: &str) -> Option<(bool, MsFlags)> {
    Some(match opt {
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "suid" => (true, MsFlags::MS_NOSUID),
        "nodev" => (false, MsFlags::MS_NODEV),
        "dev" => (true, MsFlags::MS_NODEV),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "atime" => (true, MsFlags::MS_NOATIME),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "rbind" => (false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "lazytime" => (false, MsFlags::MS_LAZYTIME),
        "nolazytime" => (true, MsFlags::MS_LAZYTIME),
        "silent" => (false, MsFlags::MS_SILENT),
        "loud" => (true, MsFlags::MS_SILENT),
        _ => return None,
    })
}

/// The propagation flags of a propagation option name (`shared`, `rslave`, ...).
pub fn propagation_flag(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A spec mount's options split into flags, propagation changes and the data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags that an explicit option cleared (`rw`, `suid`, ...); kept so a remount does not
    /// re-add what the user turned off.
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
        };
        for opt in options {
            if let Some((clear, flag)) = option_flag(opt) {
                if clear {
                    out.flags.remove(flag);
                    out.cleared.insert(flag);
                } else {
                    out.flags.insert(flag);
                    out.cleared.remove(flag);
                }
            } else if let Some(p) = propagation_flag(opt) {
                out.propagation.push(p);
            } else if matches!(
                opt.as_str(),
                "tmpcopyup" | "idmap" | "ridmap" | "rro" | "rrw"
            ) || opt.starts_with("x-")
            {
                // Options for other runtimes or userspace helpers; nothing for the kernel.
            } else {
                out.data.push(opt.clone());
            }
        }
        out
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Resolves `unsafe_path` inside `root` the way the container will see it: symlinks are
/// followed relative to `root`, and `..` never climbs above it. The result is always under `root`.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> io::Result<PathBuf> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Sys { what, source }
}

/// Everything the mount phase needs besides the spec.
pub struct RootfsContext<'a> {
    pub rootfs: &'a Path,
    pub cgroup: Option<&'a Cgroup>,
    pub in_userns: bool,
    pub new_cgroupns: bool,
}

/// Makes `/` of the new mount namespace non-shared, then bind-mounts the rootfs onto itself so it
/// is a mount point that `pivot_root` accepts.
pub fn prepare_root(k: &dyn Kernel, spec: &Spec, rootfs: &Path) -> Result<(), InitError> {
    let prop = spec
        .linux
        .as_ref()
        .and_then(|l| l.rootfs_propagation.as_deref())
        .and_then(propagation_flag)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    k.mount(None, Path::new("/"), None, prop, None)
        .map_err(err("set propagation of /"))?;
    if prop.contains(MsFlags::MS_SHARED) {
        // pivot_root refuses a new root whose parent mount is shared: make that one private.
        if let Some(parent) = shared_parent_mount(rootfs) {
            k.mount(None, &parent, None, MsFlags::MS_PRIVATE, None)
                .map_err(err(format!("make {} private", parent.display())))?;
        }
    }
    k.mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(err(format!("bind mount rootfs {}", rootfs.display())))?;
    Ok(())
}

/// The mount point holding `rootfs`'s parent directory, if that mount is shared.
fn shared_parent_mount(rootfs: &Path) -> Option<PathBuf> {
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(mp) = f.get(4).map(PathBuf::from) else {
            continue;
        };
        if !parent.starts_with(&mp) {
            continue;
        }
        let shared = f
            .iter()
            .skip(6)
            .take_while(|x| **x != "-")
            .any(|x| x.starts_with("shared:"));
        // Later lines stack on earlier ones at the same point: keep the last, longest one.
        if best
            .as_ref()
            .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mp, shared));
        }
    }
    best.filter(|(_, shared)| *shared).map(|(mp, _)| mp)
}

/// Mounts every entry of `spec.mounts` under the rootfs, in order.
pub fn mount_all(k: &dyn Kernel, spec: &Spec, ctx: &RootfsContext) -> Result<(), InitError> {
    for m in &spec.mounts {
        mount_one(k, m, ctx)?;
    }
    Ok(())
}

fn mount_one(k: &dyn Kernel, m: &Mount, ctx: &RootfsContext) -> Result<(), InitError> {
    let opts = MountOptions::parse(&m.options);
    let typ = m
        .typ
        .as_deref()
        .unwrap_or(if opts.is_bind() { "bind" } else { "" });
    // proc and sysfs over a symlink would let an image redirect them (CVE-2019-16884):
    // they go on ordinary directories only.
    if matches!(typ, "proc" | "sysfs") {
        let lexical = ctx
            .rootfs
            .join(m.destination.strip_prefix("/").unwrap_or(&m.destination));
        if std::fs::symlink_metadata(&lexical).is_ok_and(|md| md.file_type().is_symlink()) {
            return Err(InitError::Config(format!(
                "filesystem {typ:?} must be mounted on an ordinary directory, but {} is a symlink in the rootfs",
                m.destination.display()
            )));
        }
    }
    let make = |node| {
        k.make_in_root(ctx.rootfs, &m.destination, node)
            .map_err(err(format!(
                "create mount point {}",
                m.destination.display()
            )))
    };
    let what = |s: &str| format!("mount {} on {}", s, m.destination.display());
    if opts.is_bind() || typ == "bind" {
        let source = m.source.as_deref().ok_or_else(|| {
            InitError::Config(format!(
                "bind mount on {} has no source",
                m.destination.display()
            ))
        })?;
        let md = std::fs::metadata(source).map_err(|e| {
            InitError::Config(format!(
                "bind mount source {} of {}: {e}",
                source.display(),
                m.destination.display()
            ))
        })?;
        let target = make(if md.is_dir() { Node::Dir } else { Node::File })?;
        let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        k.mount(Some(source), &target.path, None, bind, None)
            .map_err(err(what(&source.display().to_string())))?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            // Reopen: the new mount, not the directory under it.
            let mounted = make(Node::Existing)?;
            remount_bind(k, &mounted.path, extra).map_err(err(what("(remount)")))?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(k, m, &opts, ctx)?;
    } else {
        if typ.is_empty() {
            return Err(InitError::Config(format!(
                "mount on {} has no type",
                m.destination.display()
            )));
        }
        let target = make(Node::Dir)?;
        let dest = &target.path;
        let source = m.source.clone().unwrap_or_else(|| PathBuf::from(typ));
        let data = opts.data();
        let res = k.mount(Some(&source), dest, Some(typ), opts.flags, data.as_deref());
        match res {
            // In a user namespace sysfs cannot be mounted without a network namespace of its
            // own; bind the host's instead, read-only, as runc does.
            Err(e) if typ == "sysfs" && e.raw_os_error() == Some(libc::EPERM) && ctx.in_userns => {
                k.mount(
                    Some(Path::new("/sys")),
                    dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(err(what("sysfs (bind)")))?;
                let mounted = make(Node::Existing)?;
                remount_bind(k, &mounted.path, opts.flags | MsFlags::MS_RDONLY)
                    .map_err(err(what("sysfs (remount)")))?;
                // The recursive bind brings the host's mounts under /sys along (cgroup
                // hierarchies, debugfs, bpf...), writable: a fresh sysfs would have none, so
                // they are made read-only too, or uncovering one (umount of what the
                // container mounts over it) would reach the host's writable instance.
                for sub in submounts(&mounted.path) {
                    remount_bind(k, &sub, opts.flags | MsFlags::MS_RDONLY).map_err(err(
                        format!("make {} read-only (under the bind of /sys)", sub.display()),
                    ))?;
                }
            }
            // An mqueue mount without an ipc namespace of its own: bind the host's.
            Err(e) if typ == "mqueue" && e.raw_os_error() == Some(libc::EPERM) => {
                k.mount(
                    Some(Path::new("/dev/mqueue")),
                    dest,
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .map_err(err(what("mqueue (bind)")))?;
            }
            r => r.map_err(err(what(typ)))?,
        }
    }
    if !opts.propagation.is_empty() {
        let mounted = make(Node::Existing)?;
        for p in &opts.propagation {
            k.mount(None, &mounted.path, None, *p, None)
                .map_err(err(format!(
                    "set propagation of {}",
                    m.destination.display()
                )))?;
        }
    }
    Ok(())
}

/// The mount points strictly below `mount` (a path or a /proc/self/fd link to it), deepest
/// last, from /proc/self/mountinfo. Mount points with escaped characters are skipped.
fn submounts(mount: &Path) -> Vec<PathBuf> {
    let Ok(top) = std::fs::canonicalize(mount) else {
        return Vec::new();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| !mp.contains('\\'))
        .map(PathBuf::from)
        .filter(|mp| mp != &top && mp.starts_with(&top))
        .collect();
    out.dedup();
    out
}

fn remount_bind(k: &dyn Kernel, dest: &Path, flags: MsFlags) -> io::Result<()> {
    let flags = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match k.mount(None, dest, None, flags, None) {
        // A bind mount of a filesystem mounted nodev/nosuid/noexec (locked in a user
        // namespace) must keep those flags on remount: retry with them.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let locked = locked_flags(dest);
            k.mount(None, dest, None, flags | locked, None)
        }
        r => r,
    }
}

fn locked_flags(path: &Path) -> MsFlags {
    match nix::sys::statvfs::statvfs(path) {
        Ok(st) => {
            use nix::sys::statvfs::FsFlags;
            let f = st.flags();
            let mut out = MsFlags::empty();
            for (a, b) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(a) {
                    out |= b;
                }
            }
            out
        }
        Err(_) => MsFlags::empty(),
    }
}

/// `cgroup` mounts: on cgroup v2 a cgroup2 filesystem (the container's own cgroup as root when
/// it has a cgroup namespace, else a bind of its directory); on v1 a tmpfs holding one bind
/// mount per hierarchy of the container's cgroup directories.
fn mount_cgroup(
    k: &dyn Kernel,
    m: &Mount,
    opts: &MountOptions,
    ctx: &RootfsContext,
) -> Result<(), InitError> {
    let make = |node| {
        k.make_in_root(ctx.rootfs, &m.destination, node)
            .map_err(err(format!(
                "create mount point {}",
                m.destination.display()
            )))
    };
    let target = make(Node::Dir)?;
    let dest = target.path.as_path();
    let flags = opts.flags - MsFlags::MS_BIND - MsFlags::MS_REC;
    let Some(cg) = ctx.cgroup else {
        return Ok(());
    };
    if cg.v2 {
        if ctx.new_cgroupns {
            k.mount(
                Some(Path::new("cgroup2")),
                dest,
                Some("cgroup2"),
                flags,
                None,
            )
            .map_err(err(format!("mount cgroup2 on {}", m.destination.display())))?;
        } else if let Some(dir) = cg.paths.get("") {
            k.mount(
                Some(dir),
                dest,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(err(format!("bind cgroup on {}", m.destination.display())))?;
            let mounted = make(Node::Existing)?;
            remount_bind(k, &mounted.path, flags).map_err(err("remount cgroup"))?;
        }
        return Ok(());
    }
    k.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(err(format!("mount tmpfs on {}", m.destination.display())))?;
    // From here on, work inside the new tmpfs (reopened: `target` names the directory under it).
    let inner = make(Node::Existing)?;
    let dest = inner.path.as_path();
    // One bind mount per hierarchy, named as on the host (`cpu,cpuacct` where co-mounted), and
    // a symlink for each controller whose name differs, as runc lays it out.
    let mut mounted: Vec<String> = Vec::new();
    for (controller, dir) in &cg.paths {
        let name = controller.strip_prefix("name=").unwrap_or(controller);
        let hierarchy = dir
            .strip_prefix("/sys/fs/cgroup")
            .ok()
            .and_then(|rel| rel.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or(name)
            .to_string();
        if !mounted.contains(&hierarchy) {
            let target = dest.join(&hierarchy);
            k.mkdir_all(&target, 0o755)
                .map_err(err(format!("create {}", target.display())))?;
            k.mount(Some(dir), &target, None, MsFlags::MS_BIND, None)
                .map_err(err(format!("bind cgroup {controller}")))?;
            remount_bind(
                k,
                &target,
                flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            )
            .map_err(err(format!("remount cgroup {controller}")))?;
            mounted.push(hierarchy.clone());
        }
        if name != hierarchy {
            let link = dest.join(name);
            match k.symlink(Path::new(&hierarchy), &link) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(err(format!("symlink {}", link.display()))(e))
                }
                _ => {}
            }
        }
    }
    if !opts.flags.contains(MsFlags::MS_RDONLY) {
        return Ok(());
    }
    remount_bind(
        k,
        dest,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )
    .map_err(err("remount cgroup tmpfs read-only"))
}

/// Whether the spec mounts its own /dev that is not a bind mount; then the runtime makes the
/// default device nodes and symlinks in it, as runc does.
pub fn needs_dev_setup(spec: &Spec) -> bool {
    spec.mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && !MountOptions::parse(&m.options).is_bind())
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Creates the default devices and the spec's `linux.devices`: mknod where allowed, otherwise
/// (in a user namespace) a bind mount of the host's node.
pub fn create_devices(
    k: &dyn Kernel,
    spec: &Spec,
    ctx: &RootfsContext,
    default_devices: bool,
) -> Result<(), InitError> {
    let mut devices: Vec<crate::spec::Device> = Vec::new();
    if default_devices {
        for (path, major, minor) in DEFAULT_DEVICES {
            devices.push(crate::spec::Device {
                typ: "c".into(),
                path: PathBuf::from(path),
                major: *major as i64,
                minor: *minor as i64,
                file_mode: Some(0o666),
                uid: Some(0),
                gid: Some(0),
            });
        }
    }
    if let Some(linux) = &spec.linux {
        for d in &linux.devices {
            devices.retain(|x| x.path != d.path);
            devices.push(d.clone());
        }
    }
    // Device modes are exact, not filtered through the runtime's umask.
    k.umask(0);
    let res = make_devices(k, &devices, ctx);
    k.umask(0o022);
    res
}

fn make_devices(
    k: &dyn Kernel,
    devices: &[crate::spec::Device],
    ctx: &RootfsContext,
) -> Result<(), InitError> {
    for d in devices {
        let node = k
            .make_in_root(ctx.rootfs, &d.path, Node::Parent)
            .map_err(err(format!("create the directory of {}", d.path.display())))?;
        let dest = node.path.as_path();
        if ctx.in_userns {
            k.touch(dest)
                .map_err(err(format!("create {}", d.path.display())))?;
            k.mount(Some(&d.path), dest, None, MsFlags::MS_BIND, None)
                .map_err(err(format!("bind device {}", d.path.display())))?;
            continue;
        }
        let kind = match d.typ.as_str() {
            "b" => libc::S_IFBLK,
            "p" => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let dev = libc::makedev(d.major as u32, d.minor as u32);
        let _ = k.remove_file(dest);
        k.mknod(dest, kind, d.file_mode.unwrap_or(0o666) & 0o7777, dev)
            .map_err(err(format!("mknod {}", d.path.display())))?;
        if d.uid.is_some() || d.gid.is_some() {
            k.chown(dest, d.uid, d.gid)
                .map_err(err(format!("chown {}", d.path.display())))?;
        }
    }
    Ok(())
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/ptmx` and `/dev/core` symlinks.
pub fn dev_symlinks(k: &dyn Kernel, rootfs: &Path) -> Result<(), InitError> {
    let mut links = vec![
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "dev/core"));
    }
    for (target, link) in links {
        match k.symlink(Path::new(target), &rootfs.join(link)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(err(format!("symlink /{link}"))(e))
            }
            _ => {}
        }
    }
    let ptmx = rootfs.join("dev/ptmx");
    let _ = k.remove_file(&ptmx);
    k.symlink(Path::new("pts/ptmx"), &ptmx)
        .map_err(err("symlink /dev/ptmx"))?;
    Ok(())
}

/// Makes the rootfs the root: `pivot_root` with the old root stacked on the new one and then
/// detached, or (with `--no-pivot`) a move mount and chroot.
pub fn pivot(k: &dyn Kernel, rootfs: &Path, no_pivot: bool) -> Result<(), InitError> {
    k.chdir(rootfs)
        .map_err(err(format!("chdir {}", rootfs.display())))?;
    if no_pivot {
        k.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)
            .map_err(err("move rootfs to /"))?;
        k.chroot(Path::new(".")).map_err(err("chroot"))?;
        return k.chdir(Path::new("/")).map_err(err("chdir /"));
    }
    // Keep a handle on the old root: after pivot_root it is stacked on top of the new root,
    // and "." must name it (not the new root) for the rslave and detach below.
    let old_root = std::fs::File::open("/").map_err(err("open the old root"))?;
    k.pivot_root(Path::new("."), Path::new("."))
        .map_err(err("pivot_root"))?;
    k.fchdir(old_root.as_raw_fd())
        .map_err(err("fchdir to the old root"))?;
    drop(old_root);
    // Make the old root a slave so the detach does not propagate to the host, then detach it.
    k.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(err("make old root rslave"))?;
    k.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(err("detach old root"))?;
    k.chdir(Path::new("/")).map_err(err("chdir /"))
}

/// Hides `linux.maskedPaths` (a /dev/null bind over files, an empty read-only tmpfs over
/// directories) and makes `linux.readonlyPaths` read-only. Paths that do not exist are skipped.
pub fn mask_and_protect(k: &dyn Kernel, spec: &Spec) -> Result<(), InitError> {
    let Some(linux) = &spec.linux else {
        return Ok(());
    };
    for p in &linux.readonly_paths {
        match k.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => r.map_err(err(format!("bind readonly path {}", p.display())))?,
        }
        remount_bind(
            k,
            p,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )
        .map_err(err(format!("remount {} read-only", p.display())))?;
    }
    for p in &linux.masked_paths {
        let is_dir = match std::fs::symlink_metadata(p) {
            Ok(md) => md.is_dir(),
            Err(_) => continue,
        };
        let res = if is_dir {
            k.mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
        } else {
            k.mount(
                Some(Path::new("/dev/null")),
                p,
                None,
                MsFlags::MS_BIND,
                None,
            )
        };
        match res {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => r.map_err(err(format!("mask {}", p.display())))?,
        }
    }
    Ok(())
}

/// Remounts the root read-only when `root.readonly` is set.
pub fn finish_root(k: &dyn Kernel, spec: &Spec) -> Result<(), InitError> {
    if spec.root.as_ref().is_some_and(|r| r.readonly) {
        remount_bind(k, Path::new("/"), MsFlags::MS_RDONLY).map_err(err("remount / read-only"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::{Call, Recorder};

    fn opts(v: &[&str]) -> MountOptions {
        MountOptions::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = opts(&[
            "nosuid",
            "noexec",
            "rbind",
            "rslave",
            "mode=755",
            "size=65536k",
        ]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data(), Some("mode=755,size=65536k".into()));
        let o = opts(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn resolve_keeps_symlinks_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/escape/tmp")).unwrap(),
            root.join("tmp")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/up/x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
    }

    #[test]
    fn resolve_detects_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let e = resolve_in_root(dir.path(), Path::new("/a/x")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }

    fn spec_with_mounts(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/"},
            "mounts": mounts,
        }))
        .unwrap()
    }

    #[test]
    fn proc_and_bind_mounts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let src = dir.path().join("src.txt");
        std::fs::write(&src, "x").unwrap();
        let spec = spec_with_mounts(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data.txt", "type": "bind", "source": src, "options": ["rbind", "ro"]},
        ]));
        let k = Recorder::new();
        let ctx = RootfsContext {
            rootfs: root,
            cgroup: None,
            in_userns: false,
            new_cgroupns: false,
        };
        mount_all(&k, &spec, &ctx).unwrap();
        let calls = k.take();
        assert_eq!(
            calls,
            vec![
                Call::MkdirAll(root.join("proc")),
                Call::Mount {
                    source: Some("proc".into()),
                    target: root.join("proc"),
                    fstype: Some("proc".into()),
                    flags: MsFlags::empty(),
                    data: None
                },
                Call::Touch(root.join("data.txt")),
                Call::Mount {
                    source: Some(src.clone()),
                    target: root.join("data.txt"),
                    fstype: None,
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                    data: None
                },
                Call::Mount {
                    source: None,
                    target: root.join("data.txt"),
                    fstype: None,
                    flags: MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                    data: None
                },
            ]
        );
    }

    #[test]
    fn missing_bind_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with_mounts(serde_json::json!([
            {"destination": "/x", "type": "bind", "source": "/nonexistent/kapsel", "options": ["bind"]},
        ]));
        let ctx = RootfsContext {
            rootfs: dir.path(),
            cgroup: None,
            in_userns: false,
            new_cgroupns: false,
        };
        let e = mount_all(&Recorder::new(), &spec, &ctx).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kapsel"), "{e}");
    }

    #[test]
    fn pivot_detaches_old_root() {
        let k = Recorder::new();
        pivot(&k, Path::new("/r"), false).unwrap();
        let calls = k.take();
        assert_eq!(calls[0], Call::Chdir("/r".into()));
        assert_eq!(calls[1], Call::PivotRoot(".".into()));
        assert_eq!(calls[2], Call::Fchdir);
        assert!(matches!(&calls[3], Call::Mount { target, .. } if target == Path::new(".")));
        assert_eq!(calls[4], Call::Umount(".".into()));
        assert_eq!(calls[5], Call::Chdir("/".into()));
    }

    #[test]
    fn failed_mount_reports_destination_and_errno() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with_mounts(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
        ]));
        let k = Recorder::new();
        k.fail_on(|c| matches!(c, Call::Mount { .. }), libc::EPERM);
        let ctx = RootfsContext {
            rootfs: dir.path(),
            cgroup: None,
            in_userns: false,
            new_cgroupns: false,
        };
        let e = mount_all(&k, &spec, &ctx).unwrap_err().to_string();
        assert!(e.contains("mount proc on /proc"), "{e}");
    }
}
