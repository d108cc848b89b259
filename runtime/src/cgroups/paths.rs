//! Where a container's cgroup lives: the cgroup mounts in /proc/self/mountinfo, this process's own
//! cgroups in /proc/self/cgroup, and runc's `cgroupsPath` rules for the cgroupfs driver:
//!
//! - absolute `/a/b`: `<mountpoint>/a/b` in every hierarchy (relative to the mounted root);
//! - relative `a/b`: `<mountpoint>/<own cgroup>/a/b`, below the caller's own cgroup;
//! - unset: as the relative path `<id>`;
//! - `slice:prefix:name` is the systemd driver's form, which this runtime does not have.

use super::{Cgroup, CgroupError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The controllers the kernel can mount as (or in) a v1 hierarchy.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// systemd's named v1 hierarchy (process tracking only, no controller); containers join it too, as
/// with runc, so that systemd tools see them apart from the runtime.
pub(super) const SYSTEMD_HIERARCHY: &str = "name=systemd";

#[derive(Debug, Clone, PartialEq)]
struct Mount {
    /// Where the hierarchy is mounted, e.g. /sys/fs/cgroup/memory.
    mountpoint: PathBuf,
    /// Which cgroup of the hierarchy is mounted there: "/" unless a cgroup namespace or a bind
    /// mount shows only a subtree.
    root: String,
}

#[derive(Debug, PartialEq)]
enum Hierarchies {
    /// Controller (or "name=systemd") -> its mount; co-mounted controllers share one mount.
    V1(BTreeMap<String, Mount>),
    /// The unified hierarchy.
    V2(Mount),
}

pub(super) fn resolve(
    mountinfo: &str,
    proc_self_cgroup: &str,
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Cgroup, CgroupError> {
    let request = Request::parse(cgroups_path, id)?;
    let own = if request.absolute {
        BTreeMap::new()
    } else {
        parse_proc_cgroup(proc_self_cgroup)?
    };
    let (v2, mounts) = match parse_mountinfo(mountinfo)? {
        Hierarchies::V1(mounts) => (false, mounts),
        Hierarchies::V2(mount) => (true, BTreeMap::from([(String::new(), mount)])),
    };
    let mut paths = BTreeMap::new();
    for (key, mount) in mounts {
        let base = if request.absolute {
            mount.mountpoint.clone()
        } else {
            own_dir(&mount, &key, &own)?
        };
        let dir = request.components.iter().fold(base, |dir, c| dir.join(c));
        paths.insert(key, dir);
    }
    Ok(Cgroup { v2, paths })
}

/// A checked `cgroupsPath` (or container id): whether it is absolute, and its clean components.
#[derive(Debug, PartialEq)]
struct Request {
    absolute: bool,
    components: Vec<String>,
}

impl Request {
    fn parse(cgroups_path: Option<&str>, id: &str) -> Result<Request, CgroupError> {
        let invalid = |path: &str, reason: &str| CgroupError::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let Some(path) = cgroups_path.filter(|p| !p.is_empty()) else {
            if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
                return Err(invalid(
                    id,
                    "the container id cannot name a cgroup (set linux.cgroupsPath)",
                ));
            }
            return Ok(Request {
                absolute: false,
                components: vec![id.to_string()],
            });
        };
        if path.contains('\0') {
            return Err(invalid(path, "it contains a NUL byte"));
        }
        let absolute = path.starts_with('/');
        if !absolute && path.split(':').count() == 3 {
            return Err(CgroupError::Systemd {
                path: path.to_string(),
            });
        }
        let mut components: Vec<String> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if components.pop().is_none() {
                        return Err(invalid(
                            path,
                            if absolute {
                                "\"..\" would leave the cgroup hierarchy"
                            } else {
                                "\"..\" would leave the cgroup of the runtime"
                            },
                        ));
                    }
                }
                part => components.push(part.to_string()),
            }
        }
        if components.is_empty() {
            return Err(invalid(
                path,
                if absolute {
                    "it names the root cgroup, which containers must not take over"
                } else {
                    "it names the cgroup of the runtime itself"
                },
            ));
        }
        Ok(Request {
            absolute,
            components,
        })
    }
}

/// The directory of this process's own cgroup in the hierarchy mounted at `mount`.
fn own_dir(
    mount: &Mount,
    key: &str,
    own: &BTreeMap<String, String>,
) -> Result<PathBuf, CgroupError> {
    let hierarchy = || {
        if key.is_empty() {
            "cgroup2".to_string()
        } else {
            key.to_string()
        }
    };
    let cgroup = own.get(key).ok_or_else(|| CgroupError::OwnCgroupUnknown {
        hierarchy: hierarchy(),
    })?;
    let outside = || CgroupError::OutsideMount {
        hierarchy: hierarchy(),
        cgroup: cgroup.clone(),
        mount_root: mount.root.clone(),
    };
    let rest = if mount.root == "/" {
        cgroup.as_str()
    } else if cgroup == &mount.root {
        ""
    } else {
        cgroup
            .strip_prefix(mount.root.as_str())
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(outside)?
    };
    let mut dir = mount.mountpoint.clone();
    for part in rest.split('/').filter(|p| !p.is_empty() && *p != ".") {
        // A cgroup namespace shows cgroups outside it as "/../..": not reachable through the mount.
        if part == ".." {
            return Err(outside());
        }
        dir.push(part);
    }
    Ok(dir)
}

/// The cgroup hierarchies mounted in this mount namespace. v1 wins as soon as a real v1 controller
/// is mounted (the hybrid layout keeps a controller-less cgroup2 beside them); otherwise the
/// cgroup2 mount at /sys/fs/cgroup (or the first one) is the unified hierarchy.
fn parse_mountinfo(text: &str) -> Result<Hierarchies, CgroupError> {
    let mut v1: BTreeMap<String, Mount> = BTreeMap::new();
    let mut v2: Vec<Mount> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // id parent maj:min root mountpoint options [optional fields...] - fstype source superoptions
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .map(|i| i + 6)
            .filter(|i| fields.len() > i + 3)
            .ok_or_else(|| CgroupError::Mountinfo {
                line: line.to_string(),
            })?;
        let mount = Mount {
            root: unescape(fields[3]),
            mountpoint: PathBuf::from(unescape(fields[4])),
        };
        match fields[separator + 1] {
            "cgroup" => {
                for option in fields[separator + 3].split(',') {
                    if V1_CONTROLLERS.contains(&option) || option == SYSTEMD_HIERARCHY {
                        v1.entry(option.to_string())
                            .or_insert_with(|| mount.clone());
                    }
                }
            }
            "cgroup2" => v2.push(mount),
            _ => {}
        }
    }
    if v1.keys().any(|k| k != SYSTEMD_HIERARCHY) {
        return Ok(Hierarchies::V1(v1));
    }
    let preferred = v2
        .iter()
        .position(|m| m.mountpoint == Path::new("/sys/fs/cgroup"))
        .unwrap_or(0);
    if v2.is_empty() {
        return Err(CgroupError::NoCgroupMounts);
    }
    Ok(Hierarchies::V2(v2.swap_remove(preferred)))
}

/// /proc/<pid>/cgroup: "hierarchy-id:controller,list:/path" per line; v2's line has an empty
/// controller list and is returned under the key "".
fn parse_proc_cgroup(text: &str) -> Result<BTreeMap<String, String>, CgroupError> {
    let mut own = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::ProcSelfCgroup {
                line: line.to_string(),
            });
        };
        if controllers.is_empty() {
            own.insert(String::new(), path.to_string());
        }
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            own.insert(controller.to_string(), path.to_string());
        }
    }
    Ok(own)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// This host's layout: separate cpu and cpuacct mounts, a named systemd hierarchy and a
    /// controller-less cgroup2 at /sys/fs/cgroup/unified.
    pub(in crate::cgroups) const MOUNTINFO_V1_SEPARATE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    pub(in crate::cgroups) const PROC_CGROUP_V1: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/59ea
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A typical systemd hybrid host: cpu,cpuacct and net_cls,net_prio co-mounted, optional
    /// fields present, the runtime in a user session.
    const MOUNTINFO_V1_COMOUNTED: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
";

    const PROC_CGROUP_COMOUNTED: &str = "\
5:memory:/user.slice/user-1000.slice/session-2.scope
4:net_cls,net_prio:/
3:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
";

    const MOUNTINFO_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
27 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn paths(cg: &Cgroup) -> Vec<(&str, &str)> {
        cg.paths
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn v1_separate_mounts_absolute() {
        let cg = resolve(
            MOUNTINFO_V1_SEPARATE,
            PROC_CGROUP_V1,
            Some("/kapsel/web"),
            "web",
        )
        .unwrap();
        assert!(!cg.v2);
        assert_eq!(
            paths(&cg),
            vec![
                ("blkio", "/sys/fs/cgroup/blkio/kapsel/web"),
                ("cpu", "/sys/fs/cgroup/cpu/kapsel/web"),
                ("cpuacct", "/sys/fs/cgroup/cpuacct/kapsel/web"),
                ("cpuset", "/sys/fs/cgroup/cpuset/kapsel/web"),
                ("devices", "/sys/fs/cgroup/devices/kapsel/web"),
                ("freezer", "/sys/fs/cgroup/freezer/kapsel/web"),
                ("memory", "/sys/fs/cgroup/memory/kapsel/web"),
                ("name=systemd", "/sys/fs/cgroup/systemd/kapsel/web"),
                ("pids", "/sys/fs/cgroup/pids/kapsel/web"),
            ]
        );
    }

    #[test]
    fn v1_separate_mounts_relative_and_unset() {
        let cg = resolve(
            MOUNTINFO_V1_SEPARATE,
            PROC_CGROUP_V1,
            Some("ctr/web"),
            "web",
        )
        .unwrap();
        assert_eq!(
            cg.paths["memory"],
            Path::new("/sys/fs/cgroup/memory/process_api/59ea/ctr/web")
        );
        assert_eq!(cg.paths["cpu"], Path::new("/sys/fs/cgroup/cpu/ctr/web"));
        let cg = resolve(MOUNTINFO_V1_SEPARATE, PROC_CGROUP_V1, None, "web").unwrap();
        assert_eq!(
            cg.paths["memory"],
            Path::new("/sys/fs/cgroup/memory/process_api/59ea/web")
        );
        assert_eq!(cg.paths["pids"], Path::new("/sys/fs/cgroup/pids/web"));
        // An empty cgroupsPath counts as unset, as in runc.
        assert_eq!(
            resolve(MOUNTINFO_V1_SEPARATE, PROC_CGROUP_V1, Some(""), "web").unwrap(),
            cg
        );
    }

    #[test]
    fn v1_comounted() {
        let cg = resolve(
            MOUNTINFO_V1_COMOUNTED,
            PROC_CGROUP_COMOUNTED,
            Some("/kapsel/web"),
            "web",
        )
        .unwrap();
        assert_eq!(
            paths(&cg),
            vec![
                ("cpu", "/sys/fs/cgroup/cpu,cpuacct/kapsel/web"),
                ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct/kapsel/web"),
                ("memory", "/sys/fs/cgroup/memory/kapsel/web"),
                ("name=systemd", "/sys/fs/cgroup/systemd/kapsel/web"),
                ("net_cls", "/sys/fs/cgroup/net_cls,net_prio/kapsel/web"),
                ("net_prio", "/sys/fs/cgroup/net_cls,net_prio/kapsel/web"),
            ]
        );
        let cg = resolve(MOUNTINFO_V1_COMOUNTED, PROC_CGROUP_COMOUNTED, None, "web").unwrap();
        assert_eq!(
            cg.paths["cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/user.slice/web")
        );
        assert_eq!(
            cg.paths["memory"],
            Path::new("/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-2.scope/web")
        );
    }

    #[test]
    fn pure_v2() {
        let own = "0::/user.slice/user-1000.slice/session-2.scope\n";
        let cg = resolve(MOUNTINFO_V2, own, Some("/kapsel/web"), "web").unwrap();
        assert!(cg.v2);
        assert_eq!(paths(&cg), vec![("", "/sys/fs/cgroup/kapsel/web")]);
        let cg = resolve(MOUNTINFO_V2, own, Some("a/b"), "web").unwrap();
        assert_eq!(
            paths(&cg),
            vec![(
                "",
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/a/b"
            )]
        );
        let cg = resolve(MOUNTINFO_V2, own, None, "web").unwrap();
        assert_eq!(
            paths(&cg),
            vec![(
                "",
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/web"
            )]
        );
    }

    #[test]
    fn namespaced_mount_root_is_stripped() {
        // Inside a container without a cgroup namespace: the mount shows only /docker/abc.
        let mountinfo = "40 30 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = resolve(mountinfo, "0::/docker/abc/sub\n", Some("x"), "x").unwrap();
        assert_eq!(cg.paths[""], Path::new("/sys/fs/cgroup/sub/x"));
        let err = resolve(mountinfo, "0::/other\n", Some("x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::OutsideMount { .. }), "{err}");
        let err = resolve(mountinfo, "0::/../..\n", Some("x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::OutsideMount { .. }), "{err}");
    }

    #[test]
    fn escapes_and_roots_are_rejected() {
        for bad in [
            "/../etc",
            "/a/../../b",
            "../x",
            "a/../..",
            "/",
            "/a/..",
            ".",
            "a/..",
        ] {
            let err = resolve(MOUNTINFO_V1_SEPARATE, PROC_CGROUP_V1, Some(bad), "web").unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
        for bad_id in ["", "..", "a/b"] {
            let err = resolve(MOUNTINFO_V1_SEPARATE, PROC_CGROUP_V1, None, bad_id).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidPath { .. }), "{err}");
        }
        // ".." that stays inside is only cleaned up.
        let cg = resolve(MOUNTINFO_V2, "0::/\n", Some("/a/../b/./c"), "web").unwrap();
        assert_eq!(cg.paths[""], Path::new("/sys/fs/cgroup/b/c"));
    }

    #[test]
    fn systemd_form_is_refused() {
        let err = resolve(
            MOUNTINFO_V2,
            "0::/\n",
            Some("system.slice:docker:abc"),
            "abc",
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::Systemd { .. }));
        assert!(err.to_string().contains("systemd"), "{err}");
    }

    #[test]
    fn missing_mounts_and_bad_lines() {
        let err = resolve("22 1 8:1 / / rw - ext4 /dev/vda rw\n", "", Some("/x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroupMounts));
        let err = resolve("garbage\n", "", Some("/x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::Mountinfo { .. }));
        let err = resolve(MOUNTINFO_V2, "nonsense\n", Some("x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::ProcSelfCgroup { .. }));
        let err = resolve(MOUNTINFO_V1_SEPARATE, "0::/\n", Some("x"), "x").unwrap_err();
        assert!(matches!(err, CgroupError::OwnCgroupUnknown { .. }));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(unescape(r"/x\09"), r"/x\09");
    }
}
