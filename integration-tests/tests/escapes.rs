//! Regression tests for the container escapes runc has suffered: each test
//! tries the mechanism of one CVE (or a class of them) and asserts that it
//! does not work.
//!
//! - CVE-2019-5736: overwriting the runtime binary through /proc/<pid>/exe
//!   (/proc/self/exe during `exec`).
//! - CVE-2024-21626: a host directory fd leaked into the container, reached
//!   through `process.cwd = /proc/self/fd/N`.
//! - CVE-2021-30465: a mount destination swapped for a symlink while a second
//!   container using the same rootfs starts.
//! - CVE-2019-16884 / CVE-2019-19921: an image whose /proc is a symlink, so
//!   that proc or the masks land somewhere else.
//! - Masked and read-only paths undone from inside (umount, remount rw,
//!   nested user namespaces).
//! - `exec` that does not get the container's restrictions.
//! - Leaks under load and after the runtime is killed mid-`create`.
//!
//! Every expectation here is shared with runc: validate it with
//! `KAPSEL_RUNTIME=/usr/sbin/runc` first.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use kapsel_integration_tests::host::{cgroup_dirs_present, ns_of};
use kapsel_integration_tests::runtime::reaper_binary;
use kapsel_integration_tests::{
    host_ok, parse_cap_hex, pid_alive, status_field, unique, wait_until, Bundle, Cmd, Runtime,
    SETTLE,
};
use serde_json::json;

/// sha256 of a host file, by `sha256sum`.
#[track_caller]
fn sha256(path: &Path) -> String {
    let out = host_ok("sha256sum", &[path.to_str().expect("utf-8 path")]);
    out.stdout
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

/// The lines of the host's mount table.
fn host_mount_lines() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Mounts that appeared on the host since `before` whose mount point is
/// outside /tmp, or under one of `mine`. Other tests (and other test binaries
/// running at the same time) mount things in their own temp dirs and add
/// network namespaces under /run/netns: those are not ours to judge.
fn new_host_mounts(before: &BTreeSet<String>, mine: &[&Path]) -> Vec<String> {
    host_mount_lines()
        .difference(before)
        .filter(|l| {
            let Some(mount_point) = l.split(' ').nth(4) else {
                return true;
            };
            let point = Path::new(mount_point);
            if mine.iter().any(|m| point.starts_with(m)) {
                return true;
            }
            !point.starts_with("/tmp") && !mount_point.contains("/netns/")
        })
        .cloned()
        .collect()
}

/// Number of open file descriptors of this test process.
fn my_fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Pids of zombie processes on the host.
fn zombies() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("Z") {
            out.insert(pid);
        }
    }
    out
}

/// `ls -l /proc/self/fd` output -> (fd name, link target) pairs.
fn parse_ls_fds(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let name = left.split_whitespace().last()?;
            Some((name.to_string(), target.to_string()))
        })
        .collect()
}

/// Only 0, 1, 2, plus at most the one descriptor `ls` opened on /proc/self/fd itself.
#[track_caller]
fn assert_only_stdio_fds(what: &str, out: &kapsel_integration_tests::CmdOutput) {
    let fds = parse_ls_fds(&out.stdout);
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.starts_with(&["0", "1", "2"]),
        "{what}: stdio fds missing from ls -l /proc/self/fd:\n{out}"
    );
    let extra: Vec<&(String, String)> = fds.iter().skip(3).collect();
    assert!(
        extra.len() <= 1
            && extra
                .iter()
                .all(|(_, t)| t.starts_with("/proc/") && t.ends_with("/fd")),
        "{what}: a descriptor leaked into the container (only 0, 1, 2 and the one ls opens \
         on /proc/self/fd are expected): {extra:?}\n{out}"
    );
}

// ---------------------------------------------------------------------------
// CVE-2019-5736: overwriting the runtime binary through /proc/<pid>/exe.
// ---------------------------------------------------------------------------

/// The container's process (root, default capabilities) scans /proc in a
/// loop. Every process whose executable it can read — a runtime process that
/// joined the container, or the runtime binary run as the container's process
/// by `exec ID /proc/self/exe` (and through a `#!/proc/self/exe` script) — it
/// tries to write at once (`echo x >> /proc/PID/exe`) and, holding a read-only
/// fd, again after the process is gone (through `/proc/self/fd/3`, the way the
/// original exploit reopened the binary for writing). The runtime binary run
/// that way blocks on `--log FIFO` until the attacker has its fd. Meanwhile the
/// test runs `exec` again and again. Afterwards the binary is unchanged and no
/// write succeeded. The runtime under test is a copy, so a successful escape
/// damages only the copy.
#[test]
fn cve_2019_5736_runtime_binary_cannot_be_overwritten_through_proc_exe() {
    let original = Runtime::new();
    let copy_dir = tempfile::Builder::new()
        .prefix("kapsel-it-bincopy-")
        .tempdir()
        .expect("temp dir for the runtime copy");
    let copy = copy_dir.path().join(
        original
            .bin()
            .file_name()
            .expect("the runtime binary has a file name"),
    );
    fs::copy(original.bin(), &copy).expect("copy the runtime binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    drop(original);
    let before = sha256(&copy);

    let rt = Runtime::with_binary(&copy);
    let mut b = Bundle::new(&rt);
    let out_dir = b.host_dir("out");
    b.bind(&out_dir, "/var", &[])
        .mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
        .sh(concat!(
            "mkfifo /tmp/kt-fifo; ",
            "printf '#!/proc/self/exe --log=/tmp/kt-fifo\\n' > /tmp/kt-evil; chmod 755 /tmp/kt-evil; ",
            "echo ready > /var/ready; ",
            "while :; do ",
            "  for d in /proc/[0-9]*; do ",
            "    p=${d#/proc/}; ",
            "    t=$(readlink $d/exe 2>/dev/null) || continue; ",
            "    case \"$t\" in /bin/busybox|'') continue;; esac; ",
            "    ( exec 3< $d/exe || exit 0; ",
            "      echo \"$p $t\" >> /var/seen; ",
            "      if echo kt-pwned >> $d/exe; then echo \"direct $p $t\" >> /var/wrote; fi; ",
            "      exec 4<> /tmp/kt-fifo; exec 4<&-; ",
            "      n=0; while [ -e $d ] && [ $n -lt 300 ]; do usleep 10000; n=$((n+1)); done; ",
            // Every runtime process running the binary makes the write fail with
            // ETXTBSY: keep trying for 3 s, the test leaves gaps between execs.
            "      n=0; while [ $n -lt 300 ]; do ",
            "        if echo kt-pwned >> /proc/self/fd/3; then echo \"reopen $p $t\" >> /var/wrote; break; fi; ",
            "        usleep 10000; n=$((n+1)); ",
            "      done ",
            "    ) 2>/dev/null; ",
            "  done; ",
            // Release a runtime blocked on the fifo that the scan did not catch.
            "  ( exec 4<> /tmp/kt-fifo; exec 4<&- ) 2>/dev/null; ",
            "done",
        ));
    let id = rt.new_id("cve5736");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    assert!(
        wait_until(SETTLE, || out_dir.join("ready").exists()),
        "the attacking container did not start"
    );

    let mut results = Vec::new();
    for i in 0..15 {
        let args: Vec<&str> = match i % 3 {
            0 => vec![
                "exec",
                &id,
                "/proc/self/exe",
                "--log",
                "/tmp/kt-fifo",
                "state",
                "kt-none",
            ],
            1 => vec!["exec", &id, "/tmp/kt-evil", "state", "kt-none"],
            _ => vec!["exec", &id, "true"],
        };
        let out = rt
            .command(&args)
            .timeout(Duration::from_secs(20))
            .output_result();
        results.push(match out {
            Ok(o) => format!("{:?} -> {:?}", args[2], o.code),
            Err(e) => format!("{:?} -> {e}", args[2]),
        });
        // A gap in which no runtime process runs the binary (no ETXTBSY).
        thread::sleep(Duration::from_millis(300));
    }
    rt.run_ok(&["delete", "-f", &id]);

    let after = sha256(&copy);
    let seen = fs::read_to_string(out_dir.join("seen")).unwrap_or_default();
    let wrote = fs::read_to_string(out_dir.join("wrote")).unwrap_or_default();
    eprintln!("executables the container could open:\n{seen}\nexec results: {results:#?}");
    assert!(
        wrote.trim().is_empty(),
        "the container opened a runtime/host executable for writing:\n{wrote}\nseen:\n{seen}"
    );
    assert_eq!(
        before,
        after,
        "the runtime binary {} was modified from inside a container",
        copy.display()
    );
}

// ---------------------------------------------------------------------------
// CVE-2024-21626: leaked fds, process.cwd = /proc/self/fd/N.
// ---------------------------------------------------------------------------

#[test]
fn cve_2024_21626_no_fd_leaks_into_run_or_exec() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["ls", "-l", "/proc/self/fd"]);
    let id = rt.new_id("fds-run");
    let out = rt.run_ok(&["run", "--bundle", b.dir_str(), &id]);
    assert_only_stdio_fds("run", &out);

    b.args(&["sleep", "1000"]);
    let id = rt.new_id("fds-exec");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    for _ in 0..3 {
        let out = rt.run_ok(&["exec", &id, "ls", "-l", "/proc/self/fd"]);
        assert_only_stdio_fds("exec", &out);
    }
}

/// What a process whose cwd might be on the host sees: `pwd`, then the names
/// in the directory reached by going up many times.
const CWD_PROBE: &str = "pwd; cd ../../../../../../../../..; echo ===; ls -a";

/// The probe's output must not list a host-only name (`/work` exists on the
/// host, not in the fixture rootfs).
#[track_caller]
fn assert_probe_inside(what: &str, out: &kapsel_integration_tests::CmdOutput) {
    let listing = out.stdout.split_once("===\n").map_or("", |(_, l)| l);
    assert!(
        !listing.lines().any(|l| l.trim() == "work"),
        "{what}: the process reached the host's root (it lists `work`):\n{out}"
    );
    assert!(
        listing.lines().any(|l| l.trim() == "bin"),
        "{what}: the process is not in the container's root:\n{out}"
    );
}

#[test]
fn cve_2024_21626_cwd_through_proc_self_fd_stays_inside() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    assert!(
        Path::new("/work").is_dir() && !b.rootfs().join("work").exists(),
        "precondition: /work exists on the host and not in the rootfs"
    );
    let mut outcomes = Vec::new();
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        b.set("/process/cwd", json!(cwd)).sh(CWD_PROBE);
        let id = rt.new_id("cwd-fd");
        let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
        if out.success() {
            assert_probe_inside(&format!("run with process.cwd={cwd}"), &out);
        }
        outcomes.push(format!("run cwd={cwd}: {:?}", out.code));
    }

    b.set("/process/cwd", json!("/")).args(&["sleep", "1000"]);
    let id = rt.new_id("cwd-fd-exec");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = rt.cmd(&["exec", "--cwd", &cwd, &id, "sh", "-c", CWD_PROBE]);
        if out.success() {
            assert_probe_inside(&format!("exec --cwd {cwd}"), &out);
        }
        outcomes.push(format!("exec --cwd {cwd}: {:?}", out.code));
    }
    eprintln!("{outcomes:#?}");
}

// ---------------------------------------------------------------------------
// CVE-2021-30465: a mount destination swapped for a symlink during start.
// ---------------------------------------------------------------------------

/// Container A (writable private rootfs) keeps replacing `/kt-race/t` with a
/// directory and with symlinks to `/`, `../../../..` and a host directory H.
/// Container B, on the same rootfs, is started 50 times with a bind mount on
/// `/kt-race/t/<name>`. Nothing may be created or mounted outside the rootfs:
/// not `/<name>`, not `H/<name>`, and no new mount in the host's mount table.
#[test]
fn cve_2021_30465_symlink_swap_race_stays_inside_the_rootfs() {
    let rt = Runtime::new();
    let mounts_before = host_mount_lines();
    let host_target = tempfile::Builder::new()
        .prefix("kapsel-it-race-host-")
        .tempdir()
        .expect("host directory H");
    let h = host_target.path().to_str().expect("utf-8").to_string();
    let name = unique("kt-race-sub");

    let mut a = Bundle::new(&rt);
    a.private_rootfs().writable_root();
    fs::create_dir(a.rootfs().join("kt-race")).expect("mkdir kt-race");
    a.sh(&format!(
        "echo ready > /kt-race/ready; \
         while :; do for l in / ../../../.. {h}; do \
           mkdir /kt-race/t 2>/dev/null; rm -rf /kt-race/t; \
           ln -s $l /kt-race/t; rm -f /kt-race/t; \
         done; done"
    ));
    let id_a = rt.new_id("race-a");
    rt.run_ok(&["run", "-d", "--bundle", a.dir_str(), &id_a]);
    let shared_root = a.rootfs().to_path_buf();
    assert!(
        wait_until(SETTLE, || shared_root.join("kt-race/ready").exists()),
        "the swapping container did not start"
    );

    let mut b = Bundle::new(&rt);
    let source = b.host_dir("source");
    fs::write(source.join("marker"), "kt").expect("write marker");
    let dest = format!("/kt-race/t/{name}");
    b.set(
        "/root/path",
        json!(shared_root.to_str().expect("utf-8 rootfs")),
    )
    .edit(|c| {
        c["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": dest,
            "type": "bind",
            "source": source.to_str().expect("utf-8"),
            "options": ["rbind"],
        }))
    })
    .args(&["true"]);

    let mut ok = 0;
    let mut failed = Vec::new();
    for _ in 0..50 {
        let id = rt.new_id("race-b");
        let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
        if out.success() {
            ok += 1;
        } else if failed.len() < 3 {
            failed.push(out.to_string());
        }
        let _ = rt.cmd(&["delete", "-f", &id]);
    }
    rt.run_ok(&["delete", "-f", &id_a]);
    eprintln!("{ok}/50 starts succeeded; first failures: {failed:#?}");

    let on_root = Path::new("/").join(&name);
    let in_h = host_target.path().join(&name);
    let (root_escape, h_escape) = (on_root.exists(), in_h.exists());
    let new = new_host_mounts(&mounts_before, &[a.path(), b.path(), host_target.path()]);
    let _ = fs::remove_dir(&on_root);
    let _ = fs::remove_dir(&in_h);
    let mut problems = Vec::new();
    for (escaped, path) in [(root_escape, &on_root), (h_escape, &in_h)] {
        if escaped {
            problems.push(format!(
                "the mount destination {dest} was created on the host as {}",
                path.display()
            ));
        }
    }
    if !new.is_empty() {
        problems.push(format!("mounts appeared on the host:\n{}", new.join("\n")));
    }
    assert!(
        problems.is_empty(),
        "a symlink swapped during start led the runtime out of the rootfs \
         ({ok}/50 starts succeeded):\n{}\nfirst failed starts: {failed:#?}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// CVE-2019-16884 / CVE-2019-19921: an image whose /proc is a symlink.
// ---------------------------------------------------------------------------

/// For every masked path: absent, or an empty character device (/dev/null).
const MASK_PROBE: &str = "for f in /proc/timer_list /proc/keys; do \
       if [ ! -e $f ]; then echo \"$f absent\"; \
       elif [ -c $f ]; then echo \"$f masked $(wc -c < $f)\"; \
       else echo \"$f OPEN $(wc -c < $f)\"; fi; \
     done";

#[test]
fn cve_2019_16884_proc_symlink_in_the_image_never_unmasks() {
    let mounts_before = host_mount_lines();
    let mut problems = Vec::new();
    for target in ["/tmp/kt-fakeproc", "/", "../../../.."] {
        let rt = Runtime::new();
        let mut b = Bundle::new(&rt);
        b.private_rootfs();
        let root = b.rootfs().to_path_buf();
        fs::create_dir_all(root.join("tmp/kt-fakeproc")).expect("mkdir fakeproc");
        fs::remove_dir(root.join("proc")).expect("rmdir rootfs/proc");
        std::os::unix::fs::symlink(target, root.join("proc")).expect("symlink proc");
        b.sh(MASK_PROBE);
        let id = rt.new_id("proc-link");
        let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
        eprintln!("/proc -> {target}:\n{out}");
        if out.success() {
            for f in ["/proc/timer_list", "/proc/keys"] {
                let line = out
                    .stdout
                    .lines()
                    .find(|l| l.starts_with(&format!("{f} ")))
                    .unwrap_or("(no line)");
                if line != format!("{f} absent") && line != format!("{f} masked 0") {
                    problems.push(format!(
                        "/proc -> {target}: {f} is not masked ({line}):\n{out}"
                    ));
                }
            }
        } else if !out.stderr.contains("proc") {
            problems.push(format!(
                "/proc -> {target}: the runtime refused, but its error does not say why \
                 (it should name proc):\n{out}"
            ));
        }
        // Nothing of the container's was mounted or left on the host.
        let new = new_host_mounts(&mounts_before, &[b.path()]);
        if !new.is_empty() {
            problems.push(format!(
                "/proc -> {target}: mounts appeared on the host:\n{}",
                new.join("\n")
            ));
        }
        let left = fs::read_dir(root.join("tmp/kt-fakeproc"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left != 0 {
            problems.push(format!(
                "/proc -> {target}: {left} files left in the image's /tmp/kt-fakeproc"
            ));
        }
    }
    // The host's own /proc is intact.
    assert!(
        fs::metadata("/proc/timer_list").is_ok_and(|m| m.is_file()),
        "the host's /proc/timer_list is no longer a proc file"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n======\n"));
}

// ---------------------------------------------------------------------------
// Masked and read-only paths cannot be undone from inside.
// ---------------------------------------------------------------------------

/// Each attempt prints `NAME=RC`; then the state of the masks and of /proc/sys.
/// The `unshare -Um` attempts run in a nested user namespace, where the
/// process holds every capability (left unmapped: mapping root needs
/// CAP_SETFCAP, which the container does not have): the mounts it inherits
/// are locked, so it cannot umount or remount them, nor mount a fresh procfs
/// that would show what the masks hide.
const UNMASK_ATTEMPTS: &str = "\
    umount /proc/keys; echo umount-keys=$?; \
    umount -l /proc/timer_list; echo umount-l-timer=$?; \
    mount -o remount,rw /proc/sys; echo remount-sys=$?; \
    mount -o remount,bind,rw /proc/sys; echo remount-bind-sys=$?; \
    umount /proc/sys; echo umount-sys=$?; \
    unshare -Um true; echo nested-userns-possible=$?; \
    unshare -Um sh -c 'umount /proc/keys'; echo nested-umount-keys=$?; \
    unshare -Um sh -c 'umount -l /proc/timer_list'; echo nested-umount-timer=$?; \
    unshare -Um sh -c 'mount -o remount,bind,rw /proc/sys'; echo nested-remount-sys=$?; \
    unshare -Um sh -c 'umount /proc/sys'; echo nested-umount-sys=$?; \
    unshare -Umpf sh -c 'mount -t proc proc /proc'; echo nested-fresh-proc=$?; \
    if [ -c /proc/keys ]; then echo keys=masked; else echo keys=OPEN; fi; \
    if [ -c /proc/timer_list ]; then echo timer=masked; else echo timer=OPEN; fi; \
    if echo kt > /proc/sys/kernel/hostname; then echo sys=WRITABLE; else echo sys=ro; fi";

#[track_caller]
fn assert_unmask_attempts_failed(what: &str, out: &kapsel_integration_tests::CmdOutput) {
    assert!(out.success(), "{what}: the probe did not run:\n{out}");
    for line in out.stdout.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        match name {
            "nested-userns-possible" => {
                eprintln!(
                    "{what}: a nested user namespace could be made: {}",
                    value == "0"
                )
            }
            "keys" | "timer" => assert_eq!(value, "masked", "{what}: {line}\n{out}"),
            "sys" => assert_eq!(value, "ro", "{what}: /proc/sys writable\n{out}"),
            _ => assert_ne!(value, "0", "{what}: `{name}` succeeded\n{out}"),
        }
    }
    assert!(
        out.stdout.contains("keys=") && out.stdout.contains("sys="),
        "{what}: the probe stopped early:\n{out}"
    );
}

#[test]
fn masked_and_readonly_paths_cannot_be_undone_from_inside() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.sh(UNMASK_ATTEMPTS);
    let id = rt.new_id("unmask");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_unmask_attempts_failed("no user namespace", &out);
}

#[test]
fn masked_and_readonly_paths_cannot_be_undone_from_inside_a_user_namespace() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .sh(UNMASK_ATTEMPTS);
    let id = rt.new_id("unmask-userns");
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert_unmask_attempts_failed("user namespace", &out);
}

// ---------------------------------------------------------------------------
// exec gets the container's restrictions.
// ---------------------------------------------------------------------------

#[test]
fn exec_gets_the_containers_nnp_caps_seccomp_and_namespaces() {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.set("/process/noNewPrivileges", json!(true))
        .set(
            "/linux/seccomp",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
            }),
        )
        .mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}))
        .args(&["sleep", "1000"]);
    let id = rt.new_id("exec-restrict");
    rt.run_ok(&["run", "-d", "--bundle", b.dir_str(), &id]);
    let init = rt.pid(&id);
    let init_status =
        fs::read_to_string(format!("/proc/{init}/status")).expect("read the init's status");
    let out = rt.run_ok(&["exec", &id, "cat", "/proc/self/status"]);
    for field in [
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
    ] {
        assert_eq!(
            status_field(&out.stdout, field),
            status_field(&init_status, field),
            "{field} of the exec'd process differs from the container's init:\n{out}\ninit:\n{init_status}"
        );
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "1", "{out}");
    assert_eq!(status_field(&out.stdout, "Seccomp"), "2", "{out}");
    let mine = fs::read_to_string("/proc/self/status").expect("read own status");
    assert_ne!(
        parse_cap_hex(status_field(&out.stdout, "CapBnd")),
        parse_cap_hex(status_field(&mine, "CapBnd")),
        "the exec'd process has the runtime's full bounding set:\n{out}"
    );
    // The filter acts on the exec'd process, not only shows up.
    let out = rt.cmd(&["exec", &id, "mkdir", "/tmp/kt-d"]);
    assert_eq!(out.code, Some(1), "mkdir was not blocked in exec:\n{out}");
    // Every namespace of the exec'd process is the init's.
    let out = rt.run_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "for n in $(ls /proc/self/ns); do echo $n $(readlink /proc/self/ns/$n); done",
    ]);
    let names: Vec<String> = fs::read_dir(format!("/proc/{init}/ns"))
        .expect("read init ns")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.is_empty());
    for n in &names {
        let want = ns_of(&init.to_string(), n);
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n.as_str()))
            .unwrap_or_else(|| panic!("exec'd process has no ns/{n}:\n{out}"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(want.as_str()),
            "ns/{n} of the exec'd process differs from the init's:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Leaks under load.
// ---------------------------------------------------------------------------

/// One container's whole life (create, start, kill, delete) and its leak checks.
fn one_lifecycle(barrier: &Barrier) -> Result<(), String> {
    let rt = Runtime::new();
    let mut b = Bundle::new(&rt);
    b.args(&["sleep", "1000"]);
    let id = rt.new_id("many");
    barrier.wait();
    let step = |args: &[&str]| -> Result<(), String> {
        let out = rt.cmd(args);
        if out.success() {
            Ok(())
        } else {
            Err(format!("{id}: {out}"))
        }
    };
    step(&["create", "--bundle", b.dir_str(), &id])?;
    step(&["start", &id])?;
    let pid = rt.pid(&id);
    step(&["kill", &id, "KILL"])?;
    if !wait_until(SETTLE, || rt.status(&id).as_deref() == Some("stopped")) {
        return Err(format!("{id}: not stopped after kill KILL"));
    }
    step(&["delete", &id])?;
    if rt.root_mentions(&id) || !rt.list_ids().is_empty() {
        return Err(format!(
            "{id}: state left after delete: {:?}",
            rt.root_entries()
        ));
    }
    if !wait_until(SETTLE, || cgroup_dirs_present(b.cgroups_path()).is_empty()) {
        return Err(format!(
            "{id}: cgroups left after delete: {:?}",
            cgroup_dirs_present(b.cgroups_path())
        ));
    }
    if !wait_until(SETTLE, || !pid_alive(pid)) {
        return Err(format!("{id}: init {pid} alive after delete"));
    }
    Ok(())
}

#[test]
fn hundred_concurrent_containers_leave_nothing_behind() {
    let _ = Runtime::new(); // root check, runtime found
    let fds_before = my_fd_count();
    let mounts_before = host_mount_lines();
    let zombies_before = zombies();
    const N: usize = 100;
    let barrier = Barrier::new(N);
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| s.spawn(|| one_lifecycle(&barrier)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    Err(p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".to_string()))
                })
            })
            .collect()
    });
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} of {N} containers failed:\n{}",
        errors.len(),
        errors
            .iter()
            .take(5)
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let mut new_zombies = BTreeSet::new();
    let settled = wait_until(SETTLE, || {
        new_zombies = zombies().difference(&zombies_before).copied().collect();
        new_zombies.is_empty()
    });
    assert!(settled, "zombies left: {new_zombies:?}");
    let new = new_host_mounts(&mounts_before, &[]);
    assert!(
        new.is_empty(),
        "mounts left on the host:\n{}",
        new.join("\n")
    );
    let fds_after = my_fd_count();
    assert_eq!(
        fds_before,
        fds_after,
        "the test process has {} more open fds",
        fds_after as isize - fds_before as isize
    );
}

// ---------------------------------------------------------------------------
// The runtime killed during create.
// ---------------------------------------------------------------------------

/// The children of `pid` (from /proc/PID/task/PID/children).
fn children_of(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// What one round of "SIGKILL the runtime during create, then delete -f" left.
struct KilledCreate {
    delay_ms: u64,
    id: String,
    /// `pid cmdline` lines of processes still alive after `delete -f` (the reaper's report).
    processes: String,
    /// Names under --root that mention the id.
    state: Vec<String>,
    /// Cgroup directories of the container still present after `delete -f`.
    cgroups: Vec<std::path::PathBuf>,
    create: kapsel_integration_tests::CmdOutput,
    delete: kapsel_integration_tests::CmdOutput,
}

impl std::fmt::Display for KilledCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SIGKILL {} ms into `create {id}`, then `delete -f {id}`:\n\
             processes left (pid cmdline): {:?}\nstate under --root: {:?}\n\
             cgroup dirs left: {:?}\ncreate:\n{}\ndelete -f:\n{}",
            self.delay_ms,
            self.processes,
            self.state,
            self.cgroups,
            self.create,
            self.delete,
            id = self.id,
        )
    }
}

/// `create` runs under `kapsel-it-reaper` (a child subreaper, which adopts
/// every process the runtime leaves behind); the runtime is SIGKILLed after
/// 1..80 ms, three times each, then `delete -f ID` runs at once (within the
/// reaper's two-second grace). Returns what each round left behind; the
/// leftovers are cleaned up.
fn kill_during_create(rt: &Runtime) -> Vec<KilledCreate> {
    let mut b = Bundle::new(rt);
    b.args(&["sleep", "1000"]);
    let mut rounds = Vec::new();
    for delay_ms in [1u64, 3, 5, 10, 20, 40, 80] {
        for _ in 0..3 {
            let cg = format!("/{}", unique("kt-cg-kill"));
            rt.track_cgroup(&cg);
            b.set("/linux/cgroupsPath", json!(cg));
            let id = rt.new_id("killed");
            let report = tempfile::NamedTempFile::new().expect("report file");
            let reaper = Cmd::new(reaper_binary())
                .arg(report.path())
                .arg("--")
                .arg(rt.bin())
                .arg("--root")
                .arg(rt.root())
                .args(["create", "--bundle", b.dir_str(), &id])
                .spawn();
            let start = Instant::now();
            let runtime_pid = loop {
                if let Some(&p) = children_of(reaper.pid()).first() {
                    break p;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the reaper did not start the runtime"
                );
                thread::sleep(Duration::from_micros(100));
            };
            thread::sleep(Duration::from_millis(delay_ms));
            // SAFETY: kill has no memory-safety preconditions; the pid is the
            // runtime our reaper child started, which the reaper reaps only
            // after it died, so the pid cannot have been reused yet.
            unsafe { libc::kill(runtime_pid as i32, libc::SIGKILL) };
            let delete = rt.cmd(&["delete", "-f", &id]);
            let create = reaper.wait();
            let processes = fs::read_to_string(report.path()).unwrap_or_default();
            let state: Vec<String> = rt
                .root_entries()
                .into_iter()
                .filter(|n| n.contains(&id))
                .collect();
            wait_until(Duration::from_secs(2), || {
                cgroup_dirs_present(&cg).is_empty()
            });
            let cgroups = cgroup_dirs_present(&cg);
            if !state.is_empty() || !cgroups.is_empty() {
                // Do not let one leftover spoil the next rounds.
                let _ = rt.cmd(&["delete", "-f", &id]);
                kapsel_integration_tests::host::force_remove_cgroup(&cg);
            }
            rounds.push(KilledCreate {
                delay_ms,
                id,
                processes: processes.trim().to_string(),
                state,
                cgroups,
                create,
                delete,
            });
        }
    }
    for r in &rounds {
        eprintln!(
            "{} ms: create {:?}/{:?}, delete -f {:?} {:?}",
            r.delay_ms,
            r.create.code,
            r.create.signal,
            r.delete.code,
            r.delete.stderr.trim()
        );
    }
    rounds
}

/// No process and no state is left after the runtime was SIGKILLed during
/// `create` and `delete -f` ran.
#[test]
fn sigkill_during_create_then_delete_force_leaves_no_process_or_state() {
    let rt = Runtime::new();
    let problems: Vec<String> = kill_during_create(&rt)
        .iter()
        .filter(|r| !r.processes.is_empty() || !r.state.is_empty())
        .map(|r| r.to_string())
        .collect();
    assert!(
        problems.is_empty(),
        "{} of the killed creates left a process or state behind:\n{}",
        problems.len(),
        problems.join("\n======\n")
    );
}

/// Nor any cgroup directory. Ours only: runc 1.1.5 leaves the cpuset
/// directory behind when it is killed between making the cgroups and writing
/// its state, and then `delete -f` succeeds without removing it.
#[test]
fn kapsel_sigkill_during_create_then_delete_force_leaves_no_cgroup() {
    let rt = Runtime::new();
    if !kapsel_integration_tests::kapsel_only(&rt) {
        return;
    }
    let problems: Vec<String> = kill_during_create(&rt)
        .iter()
        .filter(|r| !r.cgroups.is_empty())
        .map(|r| r.to_string())
        .collect();
    assert!(
        problems.is_empty(),
        "{} of the killed creates left a cgroup behind:\n{}",
        problems.len(),
        problems.join("\n======\n")
    );
}
