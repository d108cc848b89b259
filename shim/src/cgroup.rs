//! Where a container's cgroup is on the host, read from `/proc/PID/cgroup` and the mount table:
//! the v1 memory hierarchy when memory is a v1 controller (also on hybrid hosts), else the v2
//! unified hierarchy. The OOM watcher and the v2 metrics read files there.

use std::path::{Path, PathBuf};

/// The cgroup of one process, in the hierarchy that holds its memory controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: the directory in the memory hierarchy.
    V1Memory(PathBuf),
    /// cgroup v2: the directory in the unified hierarchy.
    V2(PathBuf),
}

/// One cgroup mount: where, which root of the hierarchy it shows, v2 or the v1 controllers.
#[derive(Debug)]
struct CgroupMount<'a> {
    point: &'a str,
    root: &'a str,
    v2: bool,
    controllers: Vec<&'a str>,
}

/// The cgroup and cgroup2 mounts of a `/proc/self/mountinfo` text.
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount<'_>> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if !v2 && *fstype != "cgroup" {
            continue;
        }
        let controllers = right
            .get(2)
            .map(|o| o.split(',').collect())
            .unwrap_or_default();
        out.push(CgroupMount {
            point,
            root,
            v2,
            controllers,
        });
    }
    out
}

/// `path` (as `/proc/PID/cgroup` gives it) below the mount that shows hierarchy root `root`.
fn join_below(point: &str, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root)?
    };
    Some(Path::new(point).join(rel.trim_start_matches('/')))
}

/// The memory cgroup named by a `/proc/PID/cgroup` text, found through a mountinfo text.
pub fn locate_in(proc_cgroup: &str, mountinfo: &str) -> Option<Cgroup> {
    let mounts = cgroup_mounts(mountinfo);
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(hid), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if hid == "0" && ctrls.is_empty() {
            unified = Some(path);
            continue;
        }
        if ctrls.split(',').any(|c| c == "memory") {
            let m = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.contains(&"memory"))?;
            return join_below(m.point, m.root, path).map(Cgroup::V1Memory);
        }
    }
    let path = unified?;
    let m = mounts.iter().find(|m| m.v2)?;
    join_below(m.point, m.root, path).map(Cgroup::V2)
}

/// The memory cgroup of process `pid` (None when it is gone or has no memory cgroup).
pub fn locate(pid: u32) -> Option<Cgroup> {
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    locate_in(&proc_cgroup, &mountinfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_memory_wins_on_hybrid_hosts() {
        let pc = "4:memory:/ns/c1\n1:cpu:/ns/c1\n0::/ns/c1\n";
        assert_eq!(
            locate_in(pc, HYBRID),
            Some(Cgroup::V1Memory("/sys/fs/cgroup/memory/ns/c1".into()))
        );
    }

    #[test]
    fn unified_only_host() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            locate_in("0::/kt/c2\n", mi),
            Some(Cgroup::V2("/sys/fs/cgroup/kt/c2".into()))
        );
    }

    #[test]
    fn mount_of_a_subtree_strips_its_root() {
        let mi = "35 31 0:32 /outer /mnt/mem rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            locate_in("4:memory:/outer/c3\n", mi),
            Some(Cgroup::V1Memory("/mnt/mem/c3".into()))
        );
        assert_eq!(locate_in("4:memory:/elsewhere\n", mi), None);
    }

    #[test]
    fn no_memory_hierarchy_mounted() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(locate_in("4:memory:/c\n", mi), None);
    }
}
