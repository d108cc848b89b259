//! The default profile of Debian's golang-github-containers-common
//! (`/usr/share/containers/seccomp.json`) as shipped, on the real kernel.
//!
//! The file is in docker's profile format: rules carry `includes`/`excludes` by capability and
//! architecture, and `archMap` lists the architectures. [`profile_for`] turns it into OCI
//! `linux.seccomp` the way podman and docker do before they write config.json: rules kept for
//! the container's capabilities (docker's default set unless a test says otherwise) on amd64.
//! The container gets the same capabilities, as it would from docker.
//!
//! Syscalls busybox cannot make are made by `sysprobe` (`helpers/sysprobe.c`), built static
//! with gcc here and copied into a private rootfs; it prints `ok RESULT` or `errno N`.
//! Where the kernel itself would refuse a syscall (no capability), the test also runs it
//! without the profile, so that an errno is only credited to the filter when the filter is
//! what makes the difference.
//!
//! What this profile (containers-common 0.50) does NOT filter, unlike docker's built-in one:
//! `clone`, `clone3`, `unshare`, `mount` are allowed outright; only capabilities stop them.
//! [`docker_style_clone_rule`] tests docker's argument rule for clone on top of it.
//!
//! The small per-action profiles are in process.rs; the compiler's semantics (operators,
//! architectures, ENOSYS for newer syscalls) in the runtime's unit tests.

use kapsel_integration_tests::{sysprobe, Bundle, CmdOutput, Runtime};
use serde_json::{json, Value};

const PROFILE: &str = "/usr/share/containers/seccomp.json";

/// docker's default capabilities (kapseld's copy of moby's list), which podman's defaults
/// are a subset of.
const DOCKER_CAPS: &[&str] = &kapsel_manager::containers::options::DEFAULT_CAPS;

// x86_64 syscall numbers.
const SYS_PERSONALITY: &str = "135";
const SYS_SETHOSTNAME: &str = "170";
const SYS_ADD_KEY: &str = "248";
const SYS_USERFAULTFD: &str = "323";

const EPERM: &str = "errno 1";
const ENOSYS: &str = "errno 38";

const CLONE_NEWNS: &str = "0x00020000";
const CLONE_NEWUTS: &str = "0x04000000";
const CLONE_NEWUSER: &str = "0x10000000";

/// The shipped profile, parsed.
fn shipped() -> Value {
    let text = std::fs::read_to_string(PROFILE).unwrap_or_else(|e| {
        panic!(
            "{PROFILE}: {e}: apt-get install golang-github-containers-common \
             (scripts/install-deps.sh installs it)"
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{PROFILE} is not JSON: {e}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `linux.seccomp` for a container with `caps` on amd64, as podman and docker write it: a rule
/// is dropped when its excludes name the architecture or one of the caps, or when its includes
/// name other architectures only, or capabilities not all held.
fn profile_for(v: &Value, caps: &[&str]) -> Value {
    const ARCH: &str = "amd64";
    let mut rules = Vec::new();
    for s in v["syscalls"].as_array().expect("syscalls is a list") {
        let (inc, exc) = (&s["includes"], &s["excludes"]);
        if strings(&exc["arches"]).contains(&ARCH)
            || strings(&exc["caps"]).iter().any(|c| caps.contains(c))
        {
            continue;
        }
        let arches = strings(&inc["arches"]);
        if !arches.is_empty() && !arches.contains(&ARCH) {
            continue;
        }
        if !strings(&inc["caps"]).iter().all(|c| caps.contains(c)) {
            continue;
        }
        let mut rule = json!({"names": s["names"], "action": s["action"]});
        if !s["errnoRet"].is_null() {
            rule["errnoRet"] = s["errnoRet"].clone();
        }
        if s["args"].as_array().is_some_and(|a| !a.is_empty()) {
            rule["args"] = s["args"].clone();
        }
        rules.push(rule);
    }
    let map = v["archMap"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["architecture"] == "SCMP_ARCH_X86_64"))
        .expect("archMap has SCMP_ARCH_X86_64");
    let mut arches = vec![map["architecture"].clone()];
    arches.extend(
        map["subArchitectures"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    json!({
        "defaultAction": v["defaultAction"],
        "defaultErrnoRet": v["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": rules,
    })
}

/// A bundle with `caps` in every set but inheritable and ambient (as docker sets them), a
/// private rootfs holding /bin/sysprobe, and `seccomp` as linux.seccomp (none when null).
fn bundle(rt: &Runtime, caps: &[&str], seccomp: Value) -> Bundle {
    let mut b = Bundle::new(rt);
    b.private_rootfs();
    std::fs::copy(sysprobe(), b.rootfs().join("bin/sysprobe")).expect("copy sysprobe");
    for set in ["bounding", "effective", "permitted"] {
        b.set(&format!("/process/capabilities/{set}"), json!(caps));
    }
    b.set("/process/capabilities/inheritable", json!([]))
        .set("/process/capabilities/ambient", json!([]));
    if seccomp.is_null() {
        b.edit(|c| {
            c["linux"].as_object_mut().map(|l| l.remove("seccomp"));
        });
    } else {
        b.set("/linux/seccomp", seccomp);
    }
    b
}

#[track_caller]
fn run_sh(rt: &Runtime, b: &mut Bundle, tag: &str, script: &str) -> CmdOutput {
    b.sh(script);
    let id = rt.new_id(tag);
    let out = rt.cmd(&["run", "--bundle", b.dir_str(), &id]);
    assert!(out.success(), "{tag}: run failed:\n{out}");
    out
}

/// Runs `sysprobe ARGS` for each line of `probes` in one container; returns one answer per
/// line ("ok N" / "errno N").
#[track_caller]
fn probe(rt: &Runtime, b: &mut Bundle, tag: &str, probes: &[&[&str]]) -> Vec<String> {
    let script: Vec<String> = probes
        .iter()
        .map(|args| format!("/bin/sysprobe {}", args.join(" ")))
        .collect();
    let out = run_sh(rt, b, tag, &script.join("; "));
    let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        probes.len(),
        "{tag}: one answer per probe:\n{out}"
    );
    lines
}

/// Only the errno part matters for "ok N" answers whose N is a fd or pid.
fn ok(answer: &str) -> bool {
    answer.starts_with("ok ")
}

#[test]
fn everyday_commands_work_under_the_profile() {
    let rt = Runtime::new();
    let mut b = bundle(&rt, DOCKER_CAPS, profile_for(&shipped(), DOCKER_CAPS));
    let out = run_sh(
        &rt,
        &mut b,
        "seccomp-cc-everyday",
        "grep '^Seccomp:' /proc/self/status; ls / >/dev/null && echo ls ok; \
         date +%Y >/dev/null && echo date ok; sh -c 'echo sh ok'; \
         echo x > /dev/null && cat /proc/self/stat >/dev/null && echo io ok; \
         linux32 uname -m",
    );
    assert_eq!(
        out.stdout, "Seccomp:\t2\nls ok\ndate ok\nsh ok\nio ok\ni686\n",
        "with the containers-common profile:\n{out}"
    );
}

#[test]
fn blocked_syscalls_get_the_profiles_errno() {
    // userfaultfd(UFFD_USER_MODE_ONLY) needs no capability, add_key with null arguments fails
    // with EFAULT/EINVAL, and sethostname is allowed with CAP_SYS_ADMIN, which the container
    // gets here while the profile is the one for docker's set: without the filter all three
    // reach the kernel; with it, the two listed answer EPERM and add_key, not listed at all,
    // gets the default errno, ENOSYS.
    let rt = Runtime::new();
    let mut caps = DOCKER_CAPS.to_vec();
    caps.push("CAP_SYS_ADMIN");
    let probes: &[&[&str]] = &[
        &["call", SYS_USERFAULTFD, "1"],
        &["call", SYS_ADD_KEY],
        &["call", SYS_SETHOSTNAME, "0", "0"],
    ];
    let mut plain = bundle(&rt, &caps, Value::Null);
    let without = probe(&rt, &mut plain, "seccomp-cc-blocked-plain", probes);
    assert!(ok(&without[0]), "userfaultfd without a filter: {without:?}");
    assert!(
        without[1] == "errno 14" || without[1] == "errno 22",
        "add_key without a filter: {without:?}"
    );
    assert_eq!(
        without[2], "ok 0",
        "sethostname(\"\") with CAP_SYS_ADMIN: {without:?}"
    );

    let mut filtered = bundle(&rt, &caps, profile_for(&shipped(), DOCKER_CAPS));
    let with = probe(&rt, &mut filtered, "seccomp-cc-blocked", probes);
    assert_eq!(with, [EPERM, ENOSYS, EPERM], "with the profile");
}

#[test]
fn personality_is_filtered_by_its_argument() {
    // The profile allows PER_LINUX (0), PER_LINUX32 (8), UNAME26 (0x20000), UNAME26|PER_LINUX32
    // and the query 0xffffffff; anything else gets the default errno, ENOSYS.
    let rt = Runtime::new();
    let allowed = ["0", "8", "0x20000", "0x20008", "0xffffffff"];
    let denied = ["0x0040000", "0x0040008", "0x0400000", "1"];
    let mut probes: Vec<Vec<&str>> = Vec::new();
    for v in allowed.iter().chain(&denied) {
        probes.push(vec!["call", SYS_PERSONALITY, v]);
        // Back to PER_LINUX, so that the next probe starts from the same persona.
        probes.push(vec!["call", SYS_PERSONALITY, "0"]);
    }
    let probes: Vec<&[&str]> = probes.iter().map(Vec::as_slice).collect();

    let mut plain = bundle(&rt, DOCKER_CAPS, Value::Null);
    let without = probe(&rt, &mut plain, "seccomp-cc-pers-plain", &probes);
    assert!(
        without.iter().all(|a| ok(a)),
        "without a filter: {without:?}"
    );

    let mut filtered = bundle(&rt, DOCKER_CAPS, profile_for(&shipped(), DOCKER_CAPS));
    let with = probe(&rt, &mut filtered, "seccomp-cc-pers", &probes);
    for (i, v) in allowed.iter().chain(&denied).enumerate() {
        if allowed.contains(v) {
            assert!(
                ok(&with[2 * i]),
                "personality({v}) must be allowed: {with:?}"
            );
        } else {
            assert_eq!(
                with[2 * i],
                ENOSYS,
                "personality({v}) must be refused: {with:?}"
            );
        }
    }
}

#[test]
fn namespaces_stay_closed_without_cap_sys_admin() {
    // The profile leaves clone, unshare and mount to the capabilities: with docker's set they
    // fail with EPERM (CLONE_NEWUSER needs no capability, and the profile lets it through);
    // with CAP_SYS_ADMIN, and the profile for that set, they work.
    let rt = Runtime::new();
    let script = "/bin/sysprobe clone 0; /bin/sysprobe clone CLONE_NEWNS; \
                  /bin/sysprobe clone CLONE_NEWUTS; /bin/sysprobe clone CLONE_NEWUSER; \
                  unshare -m true 2>/dev/null; echo unshare=$?; \
                  mount -t tmpfs t /tmp 2>/dev/null; echo mount=$?"
        .replace("CLONE_NEWNS", CLONE_NEWNS)
        .replace("CLONE_NEWUTS", CLONE_NEWUTS)
        .replace("CLONE_NEWUSER", CLONE_NEWUSER);

    let mut b = bundle(&rt, DOCKER_CAPS, profile_for(&shipped(), DOCKER_CAPS));
    let out = run_sh(&rt, &mut b, "seccomp-cc-ns", &script);
    assert_eq!(
        out.stdout, "ok 0\nerrno 1\nerrno 1\nok 0\nunshare=1\nmount=1\n",
        "docker's capabilities, containers-common profile:\n{out}"
    );

    let mut caps = DOCKER_CAPS.to_vec();
    caps.push("CAP_SYS_ADMIN");
    let mut b = bundle(&rt, &caps, profile_for(&shipped(), &caps));
    let out = run_sh(&rt, &mut b, "seccomp-cc-ns-admin", &script);
    assert_eq!(
        out.stdout, "ok 0\nok 0\nok 0\nok 0\nunshare=0\nmount=0\n",
        "with CAP_SYS_ADMIN and its profile:\n{out}"
    );
}

#[test]
fn docker_style_clone_rule() {
    // docker's own default profile allows clone only when no namespace flag is set
    // ((flags & 0x7E020000) == 0, a MASKED_EQ rule) unless the container has CAP_SYS_ADMIN,
    // and answers clone3 with ENOSYS so that libc falls back to clone. That rule on top of the
    // containers-common profile, with CAP_SYS_ADMIN granted by the capabilities: the filter
    // alone now refuses namespace flags, CLONE_NEWUSER included.
    let rt = Runtime::new();
    let mut p = profile_for(&shipped(), DOCKER_CAPS);
    for rule in p["syscalls"].as_array_mut().unwrap() {
        let names = rule["names"].as_array_mut().unwrap();
        names.retain(|n| n != "clone" && n != "clone3");
    }
    p["syscalls"].as_array_mut().unwrap().push(json!({
        "names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0x7E02_0000_u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    }));
    p["syscalls"].as_array_mut().unwrap().push(json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38
    }));
    let mut caps = DOCKER_CAPS.to_vec();
    caps.push("CAP_SYS_ADMIN");
    let mut b = bundle(&rt, &caps, p);
    let answers = probe(
        &rt,
        &mut b,
        "seccomp-docker-clone",
        &[
            &["clone", "0"],
            &["clone", "0x400"], // CLONE_FILES: no namespace flag
            &["clone", CLONE_NEWNS],
            &["clone", CLONE_NEWUTS],
            &["clone", CLONE_NEWUSER],
        ],
    );
    // The profile's default errno (ENOSYS) for a clone whose arguments match no rule.
    assert_eq!(answers, ["ok 0", "ok 0", ENOSYS, ENOSYS, ENOSYS]);
    // busybox's sh still forks (plain clone or fork) under that rule.
    let out = run_sh(
        &rt,
        &mut b,
        "seccomp-docker-clone-sh",
        "sh -c 'echo child' && echo parent",
    );
    assert_eq!(out.stdout, "child\nparent\n", "{out}");
}
