//! The runtime under test against real runc on the same bundle: what a
//! container sees must be identical. (Nothing to compare when the runtime
//! under test is runc itself.)

use kapsel_integration_tests::{runc_for_comparison, Bundle, Runtime};
use serde_json::json;

/// Run `script` in the same bundle with both runtimes (one after the other,
/// so they may share the bundle's cgroup path) and return both stdouts.
fn both(tag: &str, edit: impl Fn(&mut Bundle), script: &str) -> Option<(String, String)> {
    let rt = Runtime::new();
    let runc = runc_for_comparison(&rt)?;
    let mut b = Bundle::new(&rt);
    edit(&mut b);
    b.sh(script);
    let mut outs = Vec::new();
    for r in [&rt, &runc] {
        let id = r.new_id(tag);
        let out = r.cmd(&["run", "--bundle", b.dir_str(), &id]);
        assert!(out.success(), "{} failed:\n{out}", r.version());
        outs.push(out.stdout);
    }
    let runc_out = outs.pop().unwrap();
    let ours = outs.pop().unwrap();
    Some((ours, runc_out))
}

#[track_caller]
fn assert_same(what: &str, ours: &str, runc: &str) {
    if ours == runc {
        return;
    }
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = runc.lines().collect();
    let only_ours: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_runc: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    panic!(
        "{what} differs from runc's\n  only with the runtime under test: {only_ours:#?}\n  only with runc: {only_runc:#?}\n--- ours ---\n{ours}--- runc ---\n{runc}"
    );
}

fn sorted_lines(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn same_mount_points_as_runc() {
    // Compared as a set: the per-controller mounts under /sys/fs/cgroup may come in
    // another order (runc follows /proc/self/cgroup), which nothing can observe.
    let Some((ours, runc)) = both(
        "cmp-mounts",
        |_| {},
        "cat /proc/self/mountinfo | awk '{print $5}'",
    ) else {
        return;
    };
    assert_same(
        "the list of mount points",
        &sorted_lines(&ours),
        &sorted_lines(&runc),
    );
    // The masked and read-only paths come after everything else, as with runc.
    let tail = |s: &str| s.lines().skip_while(|l| *l != "/proc/bus").count();
    assert_eq!(tail(&ours), tail(&runc), "ours:\n{ours}runc:\n{runc}");
}

#[test]
fn mount_types_same_and_flags_at_least_as_strict_as_runc() {
    // Mount point and fs type identical; per-mount flags (ro, nosuid, nodev, noexec)
    // may be stricter than runc's, never looser.
    let Some((ours, runc)) = both(
        "cmp-mount-flags",
        |_| {},
        "cat /proc/self/mountinfo | while read -r _ _ _ _ mp opts rest; do \
           t=${rest#*- }; t=${t%% *}; f=''; \
           for o in ro nosuid nodev noexec; do case \",$opts,\" in *,$o,*) f=\"$f $o\";; esac; done; \
           echo \"$mp $t$f\"; done",
    ) else {
        return;
    };
    let parse = |s: &str| -> Vec<(String, String, Vec<String>)> {
        let mut v: Vec<_> = s
            .lines()
            .map(|l| {
                let mut f = l.split_whitespace().map(str::to_string);
                let mp = f.next().unwrap();
                let ty = f.next().unwrap();
                (mp, ty, f.collect())
            })
            .collect();
        v.sort();
        v
    };
    let (o, r) = (parse(&ours), parse(&runc));
    let kinds = |v: &[(String, String, Vec<String>)]| -> Vec<String> {
        v.iter().map(|(m, t, _)| format!("{m} {t}\n")).collect()
    };
    assert_same(
        "mount points and types",
        &kinds(&o).concat(),
        &kinds(&r).concat(),
    );
    for ((mp, _, ours_flags), (_, _, runc_flags)) in o.iter().zip(&r) {
        for flag in runc_flags {
            assert!(
                ours_flags.contains(flag),
                "{mp}: runc mounts it {flag}, the runtime under test does not ({ours_flags:?})"
            );
        }
    }
}

#[test]
fn same_capabilities_as_runc() {
    let Some((ours, runc)) = both("cmp-caps", |_| {}, "grep Cap /proc/self/status") else {
        return;
    };
    assert_same("the Cap* lines of /proc/self/status", &ours, &runc);
}

#[test]
fn same_capabilities_as_runc_for_a_non_root_user() {
    let Some((ours, runc)) = both(
        "cmp-caps-user",
        |b| {
            b.set(
                "/process/user",
                json!({"uid": 1000, "gid": 1000, "additionalGids": [5]}),
            );
        },
        "grep -E '^(Cap|Uid|Gid|Groups|NoNewPrivs|Seccomp)' /proc/self/status; id",
    ) else {
        return;
    };
    assert_same("identity and capabilities of a non-root user", &ours, &runc);
}

#[test]
fn same_dev_as_runc() {
    let Some((ours, runc)) = both(
        "cmp-dev",
        |_| {},
        "for f in /dev/* /dev/pts/* /dev/shm /dev/mqueue; do stat -c '%n %F %a %u %g %t,%T %N' $f; done",
    ) else {
        return;
    };
    assert_same("/dev", &ours, &runc);
}

#[test]
fn same_ls_dev_as_runc() {
    // `ls -l /dev` without the dates.
    let Some((ours, runc)) = both(
        "cmp-ls-dev",
        |_| {},
        "ls -ln /dev | sed 's/ [A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]* / /'",
    ) else {
        return;
    };
    assert_same("ls -l /dev", &ours, &runc);
}

#[test]
fn same_environment_as_runc() {
    let Some((ours, runc)) = both("cmp-env", |_| {}, "env | sort; umask; pwd") else {
        return;
    };
    assert_same("the environment", &ours, &runc);
}

#[test]
fn same_limits_as_runc() {
    let Some((ours, runc)) = both("cmp-limits", |_| {}, "cat /proc/self/limits") else {
        return;
    };
    assert_same("/proc/self/limits", &ours, &runc);
}

#[test]
fn same_cgroup_view_as_runc() {
    // Both run in the bundle's cgroup path, one after the other.
    let Some((ours, runc)) = both(
        "cmp-cgroup",
        |b| {
            b.set("/linux/resources/memory", json!({"limit": 67108864}))
                .set("/linux/resources/pids", json!({"limit": 50}));
        },
        "cat /proc/self/cgroup | sort; ls /sys/fs/cgroup; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
    ) else {
        return;
    };
    assert_same("the cgroup view", &ours, &runc);
}

#[test]
fn same_sysfs_and_proc_protection_as_runc() {
    let Some((ours, runc)) = both(
        "cmp-protect",
        |_| {},
        "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/acpi /proc/scsi /sys/firmware; do \
           if [ -e $p ]; then stat -c '%n %F %s' $p; else echo \"$p absent\"; fi; done; \
         ls /sys/firmware | wc -l",
    ) else {
        return;
    };
    assert_same("masked paths", &ours, &runc);
}
