//! `-u`/the image's `User`, resolved against the container's /etc/passwd and /etc/group the way
//! Docker does it (runc's `GetExecUser` semantics):
//!
//! - `name` or `uid`: the passwd entry gives uid and primary gid; the supplementary groups are
//!   the /etc/group entries that list the user's name. A uid missing from passwd is taken as
//!   it is, with gid 0; a name missing from passwd is an error.
//! - `user:group`: the group (name or gid) is the primary gid and there are no supplementary
//!   groups. A group name missing from /etc/group is an error, a missing gid is taken as it is.
//! - empty: root (uid 0, gid 0) with root's supplementary groups.
//!
//! The primary gid is always the first of the supplementary groups too, as Docker has done
//! since 20.10.18 (CVE-2022-36109: otherwise the groups of the runtime's caller could remain).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The identity the container's process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The passwd name, when the user has an entry.
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user {0:?}: a uid or gid must be 0 to 2147483647")]
    Range(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.trim().split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry { name, uid, gid })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.trim().split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        (!name.is_empty() && !name.starts_with('#')).then_some(GroupEntry { name, gid, members })
    })
}

/// The largest id Docker accepts (`int32` max).
const MAX_ID: u64 = i32::MAX as u64;

fn numeric(s: &str, spec: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(n) if n <= MAX_ID => Ok(Some(n as u32)),
        _ => Err(UserError::Range(spec.to_string())),
    }
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against the passwd and
/// group texts (`None`: the file is missing).
pub fn resolve_in(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let uid_arg = numeric(user_arg, spec)?;

    let entry = passwd_entries(passwd).find(|e| match (user_arg, uid_arg) {
        ("", _) => e.uid == 0,
        (_, Some(uid)) => e.uid == uid,
        (name, None) => e.name == name,
    });
    let mut out = match (&entry, uid_arg) {
        (Some(e), _) => ResolvedUser {
            uid: e.uid,
            gid: e.gid,
            additional_gids: Vec::new(),
            name: Some(e.name.to_string()),
        },
        (None, Some(uid)) => ResolvedUser {
            uid,
            gid: 0,
            additional_gids: Vec::new(),
            name: None,
        },
        (None, None) if user_arg.is_empty() => ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            name: None,
        },
        (None, None) => return Err(UserError::NoUser(user_arg.to_string())),
    };

    match group_arg {
        Some(g) if !g.is_empty() => {
            let gid_arg = numeric(g, spec)?;
            let found = group_entries(group).find(|e| match gid_arg {
                Some(gid) => e.gid == gid,
                None => e.name == g,
            });
            out.gid = match (found, gid_arg) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => return Err(UserError::NoGroup(g.to_string())),
            };
            out.additional_gids.push(out.gid);
        }
        _ => {
            out.additional_gids.push(out.gid);
            if let Some(name) = &out.name {
                for e in group_entries(group) {
                    if e.members.contains(&name.as_str()) && !out.additional_gids.contains(&e.gid) {
                        out.additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `--group-add`s: a gid is taken as it is, a name is looked up in the group text (Docker's
/// rule; an unknown name is an error). The result keeps the order and drops repeats.
pub fn groups_in(names: &[String], group: Option<&str>) -> Result<Vec<u32>, UserError> {
    let group = group.unwrap_or("");
    let mut out: Vec<u32> = Vec::new();
    for name in names {
        let gid = match numeric(name, name)? {
            Some(gid) => gid,
            None => group_entries(group)
                .find(|e| e.name == name)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup(name.clone()))?,
        };
        if !out.contains(&gid) {
            out.push(gid);
        }
    }
    Ok(out)
}

/// [`groups_in`] against `<rootfs>/etc/group`.
pub fn resolve_groups(rootfs: &Path, names: &[String]) -> Result<Vec<u32>, UserError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    groups_in(names, read_in_rootfs(rootfs, "etc/group").as_deref())
}

/// Resolves `spec` against `<rootfs>/etc/passwd` and `<rootfs>/etc/group` (either may be
/// missing: numeric ids still work).
pub fn resolve(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_in_rootfs(rootfs, "etc/passwd");
    let group = read_in_rootfs(rootfs, "etc/group");
    resolve_in(spec, passwd.as_deref(), group.as_deref())
}

/// A small file of the rootfs, read as the container would see it (symlinks stay inside).
fn read_in_rootfs(rootfs: &Path, rel: &str) -> Option<String> {
    let path = resolve_in_rootfs(rootfs, &Path::new("/").join(rel), false).ok()?;
    std::fs::read_to_string(path).ok()
}

/// `path` (a path in the container) as a host path inside `rootfs`, resolved the way the
/// container would see it: symlinks are followed component by component, absolute targets
/// from the rootfs, and `..` never climbs above it. With `create`, missing directories are made
/// (mode 0755). At most 40 symlinks, as the kernel allows.
pub fn resolve_in_rootfs(rootfs: &Path, path: &Path, create: bool) -> io::Result<PathBuf> {
    use std::ffi::OsString;
    use std::path::Component;
    let parts = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .rev()
            .collect()
    };
    let mut pending = parts(path);
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&part);
        let full = rootfs.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: too many levels of symbolic links", path.display()),
                    ));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                pending.extend(parts(&target));
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&full)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", full.display())))?;
                cur = next;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => cur = next,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", full.display()))),
        }
    }
    Ok(rootfs.join(cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        # comment\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        audio:x:29:app\n\
        app:x:1000:\n\
        staff:x:50:\n\
        nogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_in(spec, Some(PASSWD), Some(GROUP))
    }

    fn ids(u: ResolvedUser) -> (u32, u32, Vec<u32>) {
        (u.uid, u.gid, u.additional_gids)
    }

    #[test]
    fn names_and_uids_take_passwd_and_group_membership() {
        assert_eq!(ids(r("").unwrap()), (0, 0, vec![0, 10]));
        assert_eq!(ids(r("app").unwrap()), (1000, 1000, vec![1000, 10, 29]));
        assert_eq!(ids(r("1000").unwrap()), (1000, 1000, vec![1000, 10, 29]));
        assert_eq!(r("1000").unwrap().name.as_deref(), Some("app"));
        assert_eq!(ids(r("nobody").unwrap()), (65534, 65534, vec![65534]));
    }

    #[test]
    fn group_add_takes_gids_as_they_are_and_looks_names_up() {
        let g = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            groups_in(&names, Some(GROUP))
        };
        assert_eq!(g(&["audio", "4000", "staff", "29"]), Ok(vec![29, 4000, 50]));
        assert_eq!(g(&[]), Ok(vec![]));
        assert_eq!(g(&["video"]), Err(UserError::NoGroup("video".into())));
        assert_eq!(
            groups_in(&["audio".to_string()], None),
            Err(UserError::NoGroup("audio".into()))
        );
        assert!(matches!(g(&["99999999999"]), Err(UserError::Range(_))));
    }

    #[test]
    fn unknown_uid_is_taken_as_is_with_gid_0() {
        assert_eq!(ids(r("4242").unwrap()), (4242, 0, vec![0]));
        assert_eq!(r("4242").unwrap().name, None);
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        assert_eq!(ids(r("app:staff").unwrap()), (1000, 50, vec![50]));
        assert_eq!(ids(r("app:50").unwrap()), (1000, 50, vec![50]));
        assert_eq!(ids(r("1000:4242").unwrap()), (1000, 4242, vec![4242]));
        assert_eq!(ids(r("4242:4343").unwrap()), (4242, 4343, vec![4343]));
        // `user:` is `user`.
        assert_eq!(ids(r("app:").unwrap()), (1000, 1000, vec![1000, 10, 29]));
    }

    #[test]
    fn missing_names_are_errors_in_dockers_words() {
        assert_eq!(
            r("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert_eq!(
            resolve_in("app", None, None),
            Err(UserError::NoUser("app".into()))
        );
        assert_eq!(
            r("99999999999"),
            Err(UserError::Range("99999999999".into()))
        );
    }

    #[test]
    fn without_files_numeric_ids_still_work() {
        assert_eq!(ids(resolve_in("", None, None).unwrap()), (0, 0, vec![0]));
        assert_eq!(ids(resolve_in("5:6", None, None).unwrap()), (5, 6, vec![6]));
    }

    #[test]
    fn reads_files_of_the_rootfs_and_keeps_symlinks_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/share")).unwrap();
        std::fs::write(root.join("usr/share/passwd"), PASSWD).unwrap();
        // An absolute link is taken inside the rootfs, not on the host.
        std::os::unix::fs::symlink("/usr/share/passwd", root.join("etc/passwd")).unwrap();
        // A link that climbs out stays inside too: /../../group is /group of the rootfs.
        std::fs::write(dir.path().join("group"), "evil:x:10:app\n").unwrap();
        std::os::unix::fs::symlink("../../group", root.join("etc/group")).unwrap();
        let u = resolve(&root, "app").unwrap();
        assert_eq!(ids(u), (1000, 1000, vec![1000]));
    }

    #[test]
    fn paths_resolve_and_are_made_inside_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        std::os::unix::fs::symlink("/real/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str, create| resolve_in_rootfs(&root, Path::new(p), create);
        assert_eq!(
            r("/etc/passwd", false).unwrap(),
            root.join("real/etc/passwd")
        );
        assert_eq!(r("/real/up/etc", false).unwrap(), root.join("real/etc"));
        assert_eq!(r("/../../x", false).unwrap(), root.join("x"));
        // Made through the link, inside the rootfs.
        assert_eq!(
            r("/etc/app/data", true).unwrap(),
            root.join("real/etc/app/data")
        );
        assert!(root.join("real/etc/app/data").is_dir());
        assert_eq!(r("/real/up/made", true).unwrap(), root.join("made"));
        assert!(root.join("made").is_dir() && !dir.path().join("made").exists());
        assert!(r("/loop/x", false)
            .unwrap_err()
            .to_string()
            .contains("symbolic links"));
    }
}
