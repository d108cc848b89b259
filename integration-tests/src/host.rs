//! What the host sees: cgroup files, processes, namespaces; and test network namespaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::command::{host, host_ok};
use crate::env::unique;

/// Where the cgroup (v1) hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `/sys/fs/cgroup/<controller>/<cgroups_path>`.
pub fn cgroup_dir(controller: &str, cgroups_path: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join(controller)
        .join(cgroups_path.trim_start_matches('/'))
}

/// The v1 hierarchies mounted under /sys/fs/cgroup (cpu, memory, pids, name=systemd's
/// `systemd`...), without the v2 `unified` mount.
pub fn cgroup_v1_hierarchies() -> Vec<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // fields: id parent major:minor root mountpoint options ... - fstype source superopts
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(dash + 1) != Some(&"cgroup") {
            continue;
        }
        if let Some(name) = fields[4].strip_prefix("/sys/fs/cgroup/") {
            if !name.contains('/') {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every hierarchy in which the cgroup `cgroups_path` exists (none for an empty path: the
/// hierarchy roots are no container's).
pub fn cgroup_dirs_present(cgroups_path: &str) -> Vec<PathBuf> {
    if cgroups_path.trim_matches('/').is_empty() {
        return Vec::new();
    }
    let mut dirs: Vec<PathBuf> = cgroup_v1_hierarchies()
        .iter()
        .map(|h| cgroup_dir(h, cgroups_path))
        .collect();
    dirs.push(cgroup_dir("unified", cgroups_path));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// The trimmed contents of a file in a container's cgroup; panics when unreadable.
#[track_caller]
pub fn read_cgroup_file(controller: &str, cgroups_path: &str, file: &str) -> String {
    let path = cgroup_dir(controller, cgroups_path).join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The pids listed in a cgroup's `cgroup.procs` (empty when the cgroup does not exist).
pub fn cgroup_procs(controller: &str, cgroups_path: &str) -> Vec<i32> {
    fs::read_to_string(cgroup_dir(controller, cgroups_path).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Best-effort cleanup of a cgroup a test created: thaw it, SIGKILL what is
/// left in it, then remove the directory in every hierarchy. Never panics.
pub fn force_remove_cgroup(cgroups_path: &str) {
    if cgroups_path.trim_matches('/').is_empty() {
        return;
    }
    let freezer = cgroup_dir("freezer", cgroups_path).join("freezer.state");
    if freezer.exists() {
        let _ = fs::write(&freezer, "THAWED");
    }
    for dir in cgroup_dirs_present(cgroups_path) {
        for _ in 0..50 {
            let procs: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for pid in &procs {
                // SAFETY: kill has no memory-safety preconditions; the pid comes
                // from a cgroup this test created, so it is the test's own process.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if dir.exists() {
            eprintln!("cleanup: could not remove cgroup {}", dir.display());
        }
    }
}

/// The v1 memory cgroup directory of `pid`.
#[track_caller]
pub fn memory_cgroup_of(pid: i32) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == "memory").then_some(path)
        })
        .unwrap_or_else(|| panic!("no memory cgroup for {pid}:\n{text}"));
    Path::new(CGROUP_ROOT)
        .join("memory")
        .join(path.trim_start_matches('/'))
}

/// An OCI runtime-spec Process for an exec as root in `/`, as containerd sends it.
pub fn exec_process(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": false,
    })
}

/// Is `pid` a live (not zombie) process?
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — comm may hold spaces and parentheses: split at the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes whose root directory or working directory is `dir` or below it.
pub fn processes_using(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let uses = ["root", "cwd"].iter().any(|link| {
            fs::read_link(format!("/proc/{pid}/{link}")).is_ok_and(|target| target.starts_with(dir))
        });
        if uses && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A field of `/proc/<pid>/status` (e.g. "Uid", "CapEff"), without the label.
pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// The namespace a process is in, as the kernel names it (`net:[4026531840]`).
#[track_caller]
pub fn ns_of(pid: &str, ns: &str) -> String {
    let link = format!("/proc/{pid}/ns/{ns}");
    fs::read_link(&link)
        .unwrap_or_else(|e| panic!("readlink {link}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace made for one test with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `kt-<tag>-<pid>-<n>` with `lo` up.
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        let name = unique(&format!("kt-{tag}"));
        host_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        host_ok("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`, what `linux.namespaces[].path` takes.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = host("ip", &["netns", "del", &self.name]);
        if !out.success() {
            eprintln!("cleanup: ip netns del {} failed:\n{out}", self.name);
        }
    }
}
