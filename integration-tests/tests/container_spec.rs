//! The OCI spec kapseld generates for `kapsel run` (`kapsel_manager::containers::spec`), run for
//! real: each test generates config.json from the busybox fixture's image config and a set of
//! `kapsel run` options, runs it with the runtime under test (`run`, a private copy of the
//! fixture rootfs), and checks from inside the container what Docker gives: identity, env,
//! capabilities, masked and read-only paths, mounts, cgroup limits (v1 files), rlimits,
//! hostname and /etc files, seccomp, `--init`, `--privileged`.
//!
//! `--init` needs the static `kapsel-init` (`KAPSEL_INIT`, default target/release/kapsel-init,
//! built by scripts/build-release.sh): the busybox image has no libc.

use kapsel_integration_tests::{
    cap_mask, host_ok, parse_cap_hex, require_root, status_field, CmdOutput, Fixtures, Runtime,
};
use kapsel_manager::containers::options::DEFAULT_CAPS;
use kapsel_manager::containers::{self, NetworkMode, RunOptions, SpecContext, SpecError};
use kapsel_manager::oci::ImageConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The busybox fixture's image config, read from its OCI layout.
fn busybox_config() -> ImageConfig {
    let fx = Fixtures::get();
    let env = std::fs::read_to_string(fx.dir().join("fixtures.env")).expect("fixtures.env");
    let digest = env
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_DIGEST=sha256:"))
        .expect("CONFIG_DIGEST in fixtures.env");
    let blob = fx.dir().join("busybox-oci/blobs/sha256").join(digest);
    let text = std::fs::read_to_string(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    serde_json::from_str(&text).expect("image config JSON")
}

/// The static kapsel-init for `--init`.
fn init_binary() -> PathBuf {
    let path = std::env::var_os("KAPSEL_INIT").map_or_else(
        || kapsel_integration_tests::env::repo_root().join("target/release/kapsel-init"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{}: no kapsel-init; build it static with scripts/build-release.sh (or `cargo rustc \
         --release -p kapsel-runtime --bin kapsel-init -- -C target-feature=+crt-static`), or \
         set KAPSEL_INIT",
        path.display()
    );
    let headers = host_ok("readelf", &["-l", path.to_str().unwrap()]).stdout;
    assert!(
        !headers.contains("INTERP"),
        "{} is linked dynamically: the busybox image has no libc; build it with \
         scripts/build-release.sh",
        path.display()
    );
    path
}

/// One container: a bundle with a private copy of the fixture rootfs, its container dir, and
/// the runtime handle that cleans it up.
struct Container {
    rt: Runtime,
    bundle: tempfile::TempDir,
    id: String,
    ctx: SpecContext,
}

fn container(tag: &str) -> Container {
    require_root();
    let rt = Runtime::new();
    let id = rt.new_id(tag);
    rt.track_cgroup(&format!("/kapsel/{id}"));
    let bundle = tempfile::Builder::new()
        .prefix("kspec-bundle-")
        .tempdir()
        .expect("bundle dir");
    let rootfs = bundle.path().join("rootfs");
    host_ok(
        "cp",
        &[
            "-a",
            Fixtures::get().rootfs().to_str().unwrap(),
            rootfs.to_str().unwrap(),
        ],
    );
    let ctx = SpecContext {
        id: id.clone(),
        rootfs,
        container_dir: bundle.path().join("ctr"),
        init_binary: None,
        volumes: Vec::new(),
    };
    Container {
        rt,
        bundle,
        id,
        ctx,
    }
}

impl Container {
    fn rootfs(&self) -> &Path {
        &self.ctx.rootfs
    }

    /// Adds `app` (1000:1000, also in wheel and audio) to the rootfs's passwd and group.
    fn add_users(&self) -> &Self {
        let etc = self.rootfs().join("etc");
        let append = |file: &str, text: &str| {
            let path = etc.join(file);
            let mut old = std::fs::read_to_string(&path).unwrap();
            old.push_str(text);
            std::fs::write(&path, old).unwrap();
        };
        append("passwd", "app:x:1000:1000::/home/app:/bin/sh\n");
        append(
            "group",
            "wheel:x:10:root,app\naudio:x:29:app\napp:x:1000:\n",
        );
        self
    }

    fn spec(&self, opts: &RunOptions) -> Result<Value, SpecError> {
        containers::generate(&busybox_config(), opts, &self.ctx)
    }

    /// Generates the spec for `opts` running `script` with sh, and runs it to the end.
    fn run(&self, opts: RunOptions, script: &str) -> CmdOutput {
        let opts = RunOptions {
            cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
            ..opts
        };
        let spec = self
            .spec(&opts)
            .unwrap_or_else(|e| panic!("generate the spec: {e}"));
        let hostname = spec["hostname"].as_str().unwrap().to_string();
        containers::prepare_container_dir(&self.ctx.container_dir, &hostname, opts.network)
            .expect("prepare the container dir");
        containers::create_workdir(self.rootfs(), &spec).expect("make the working directory");
        std::fs::write(
            self.bundle.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        self.rt.cmd(&[
            "run",
            "--bundle",
            self.bundle.path().to_str().unwrap(),
            &self.id,
        ])
    }

    /// `run` that must exit 0; its stdout.
    #[track_caller]
    fn run_ok(&self, opts: RunOptions, script: &str) -> String {
        let out = self.run(opts, script);
        assert!(out.success(), "the container failed:\n{out}");
        out.stdout
    }
}

fn opts() -> RunOptions {
    RunOptions {
        image: "busybox".into(),
        ..RunOptions::default()
    }
}

/// `key=value` lines of a script's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{out}"))
}

#[test]
fn default_container_identity_env_and_files() {
    let c = container("kspec-def");
    let out = c.run_ok(
        opts(),
        "echo id=$(id); echo pwd=$(pwd); echo hostname=$(hostname); \
         echo env=$(env | grep -v '^PWD=\\|^SHLVL=\\|^_=' | sort | tr '\\n' ' '); \
         echo hosts=$(grep -c localhost /etc/hosts); echo pid1=$(cat /proc/1/comm); \
         touch /rootfs-is-writable && echo rw=yes; \
         echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}'); \
         echo nofile=$(ulimit -n):$(ulimit -Hn)",
    );
    assert_eq!(field(&out, "id"), "uid=0(root) gid=0(root) groups=0(root)");
    assert_eq!(field(&out, "pwd"), "/");
    let short: String = c.id.chars().take(12).collect();
    assert_eq!(field(&out, "hostname"), short);
    assert_eq!(
        field(&out, "env").trim(),
        format!(
            "HOME=/root HOSTNAME={short} \
             PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
    );
    assert_eq!(field(&out, "hosts"), "2", "localhost lines in /etc/hosts");
    assert_eq!(field(&out, "pid1"), "sh");
    assert_eq!(field(&out, "rw"), "yes");
    assert_eq!(
        field(&out, "shm"),
        "65536",
        "/dev/shm is 64 MiB as in Docker"
    );
    // kapseld's own limits (CAP_SYS_RESOURCE is missing on the CI machine).
    let (soft, hard) = nofile_limits();
    assert_eq!(field(&out, "nofile"), format!("{soft}:{hard}"));
}

fn nofile_limits() -> (u64, u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, owned struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    assert_eq!(rc, 0, "getrlimit");
    (l.rlim_cur, l.rlim_max)
}

#[test]
fn users_groups_and_workdir() {
    let c = container("kspec-user");
    c.add_users();
    let id = |user: &str| {
        c.run_ok(
            RunOptions {
                user: Some(user.into()),
                workdir: Some("/tmp".into()),
                ..opts()
            },
            "echo id=$(id); echo pwd=$(pwd); echo home=$HOME",
        )
    };
    let out = c.run_ok(
        RunOptions {
            workdir: Some("/new/work".into()),
            ..opts()
        },
        "echo pwd=$(pwd)",
    );
    assert_eq!(
        field(&out, "pwd"),
        "/new/work",
        "a missing workdir is made, as Docker does"
    );
    let out = id("app");
    assert_eq!(
        field(&out, "id"),
        "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio),1000(app)"
    );
    assert_eq!(field(&out, "pwd"), "/tmp");
    assert_eq!(field(&out, "home"), "/home/app");
    assert_eq!(
        field(&id("1000:29"), "id"),
        "uid=1000(app) gid=29(audio) groups=29(audio)"
    );
    assert_eq!(
        field(&id("4242"), "id"),
        "uid=4242 gid=0(root) groups=0(root)"
    );
    assert_eq!(
        field(&id("nobody"), "id"),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    let err = c
        .spec(&RunOptions {
            user: Some("ghost".into()),
            ..opts()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

fn cap_eff(out: &str) -> u64 {
    parse_cap_hex(status_field(out, "CapEff"))
}

#[test]
fn capabilities_default_add_drop_and_non_root() {
    let c = container("kspec-caps");
    c.add_users();
    let status = "cat /proc/self/status";
    let out = c.run_ok(opts(), status);
    assert_eq!(cap_eff(&out), cap_mask(&DEFAULT_CAPS));
    assert_eq!(
        parse_cap_hex(status_field(&out, "CapBnd")),
        cap_mask(&DEFAULT_CAPS)
    );
    assert_eq!(
        status_field(&out, "Seccomp"),
        "2",
        "the default profile is loaded"
    );
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");

    let out = c.run_ok(
        RunOptions {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["CHOWN".into(), "cap_kill".into()],
            security_opt: vec!["no-new-privileges".into()],
            ..opts()
        },
        status,
    );
    let want = (cap_mask(&DEFAULT_CAPS) | cap_mask(&["CAP_NET_ADMIN"]))
        & !cap_mask(&["CAP_CHOWN", "CAP_KILL"]);
    assert_eq!(cap_eff(&out), want);
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");

    // A non-root user loses its effective capabilities at exec, as under Docker.
    let out = c.run_ok(
        RunOptions {
            user: Some("app".into()),
            ..opts()
        },
        status,
    );
    assert_eq!(cap_eff(&out), 0);
    assert_eq!(
        parse_cap_hex(status_field(&out, "CapBnd")),
        cap_mask(&DEFAULT_CAPS)
    );
}

#[test]
fn masked_and_read_only_paths() {
    let c = container("kspec-mask");
    let out = c.run_ok(
        opts(),
        "echo timers=$(wc -c < /proc/timer_list); \
         echo interrupts=$(wc -c < /proc/interrupts); \
         echo firmware=$(ls /sys/firmware | wc -l); \
         echo x > /proc/sys/kernel/domainname 2>/dev/null && echo procsys=rw || echo procsys=ro; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq=rw || echo sysrq=ro; \
         touch /sys/kernel/x 2>/dev/null && echo sys=rw || echo sys=ro; \
         echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null && echo cg=rw || echo cg=ro",
    );
    // /proc/kcore and most other masked files do not exist on this kernel; timer_list does.
    assert_eq!(field(&out, "timers"), "0");
    assert!(
        !std::fs::read_to_string("/proc/interrupts")
            .unwrap()
            .is_empty(),
        "the host shows /proc/interrupts"
    );
    assert_eq!(
        field(&out, "interrupts"),
        "0",
        "Docker 28 masks /proc/interrupts"
    );
    assert_eq!(field(&out, "firmware"), "0");
    assert_eq!(field(&out, "procsys"), "ro");
    assert_eq!(field(&out, "sysrq"), "ro");
    assert_eq!(field(&out, "sys"), "ro");
    assert_eq!(field(&out, "cg"), "ro");
}

#[test]
fn systempaths_unconfined_and_group_add() {
    let c = container("kspec-sysp");
    c.add_users();
    let out = c.run_ok(
        RunOptions {
            security_opt: vec!["systempaths=unconfined".into()],
            group_add: vec!["audio".into(), "4321".into(), "wheel".into()],
            ..opts()
        },
        "echo timers=$(wc -c < /proc/timer_list); echo groups=$(id -G)",
    );
    let timers: u64 = field(&out, "timers").parse().expect("a byte count");
    assert!(
        timers > 0,
        "/proc/timer_list is masked despite systempaths=unconfined"
    );
    // root's groups (0, and wheel that lists root), then audio (29, a name from the image's
    // /etc/group) and 4321; wheel only once.
    assert_eq!(field(&out, "groups"), "0 10 29 4321");

    let err = c
        .spec(&RunOptions {
            group_add: vec!["no-such-group".into()],
            ..opts()
        })
        .unwrap_err();
    assert!(err.to_string().contains("no-such-group"), "{err}");
}

#[test]
fn read_only_root_tmpfs_and_binds() {
    let c = container("kspec-ro");
    let rw = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("given"), "from the host\n").unwrap();
    let out = c.run_ok(
        RunOptions {
            read_only: true,
            tmpfs: vec!["/run:size=1m,mode=1777".into()],
            binds: vec![
                format!("{}:/data", rw.path().display()),
                format!("{}:/data/ro:ro", ro.path().display()),
            ],
            ..opts()
        },
        "touch /x 2>/dev/null && echo root=rw || echo root=ro; \
         echo hi > /run/f && echo run=rw; echo run=$(grep ' /run ' /proc/mounts); \
         echo x >> /etc/hosts 2>/dev/null && echo hosts=rw || echo hosts=ro; \
         echo inside > /data/made && echo data=rw; echo given=$(cat /data/ro/given); \
         touch /data/ro/f 2>/dev/null && echo dataro=rw || echo dataro=ro",
    );
    assert_eq!(field(&out, "root"), "ro");
    let run = out
        .lines()
        .filter_map(|l| l.strip_prefix("run="))
        .collect::<Vec<_>>();
    assert_eq!(run[0], "rw");
    assert!(
        run[1].contains("tmpfs") && run[1].contains("size=1024k") && run[1].contains("noexec"),
        "{}",
        run[1]
    );
    assert_eq!(field(&out, "hosts"), "ro");
    assert_eq!(field(&out, "data"), "rw");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("made")).unwrap(),
        "inside\n"
    );
    assert_eq!(field(&out, "given"), "from the host");
    assert_eq!(field(&out, "dataro"), "ro");

    let err = c
        .spec(&RunOptions {
            binds: vec!["/kspec/no/such/dir:/x".into()],
            ..opts()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("bind source path does not exist"), "{err}");
}

#[test]
fn cgroup_limits_from_inside() {
    let c = container("kspec-cg");
    let out = c.run_ok(
        RunOptions {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(50),
            ..opts()
        },
        "cd /sys/fs/cgroup; echo mem=$(cat memory/memory.limit_in_bytes); \
         echo memsw=$(cat memory/memory.memsw.limit_in_bytes); \
         echo quota=$(cat cpu/cpu.cfs_quota_us); echo period=$(cat cpu/cpu.cfs_period_us); \
         echo shares=$(cat cpu/cpu.shares); echo cpuset=$(cat cpuset/cpuset.cpus); \
         echo pids=$(cat pids/pids.max)",
    );
    assert_eq!(field(&out, "mem"), (64u64 << 20).to_string());
    assert_eq!(field(&out, "memsw"), (128u64 << 20).to_string());
    assert_eq!(field(&out, "quota"), "50000");
    assert_eq!(field(&out, "period"), "100000");
    assert_eq!(field(&out, "shares"), "512");
    assert_eq!(field(&out, "cpuset"), "0");
    assert_eq!(field(&out, "pids"), "50");

    let out = c.run_ok(opts(), "echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); echo pids=$(cat /sys/fs/cgroup/pids/pids.max)");
    assert_eq!(field(&out, "shares"), "1024");
    assert_eq!(field(&out, "pids"), "max");
}

#[test]
fn ulimits_hostname_and_hosts() {
    let c = container("kspec-misc");
    let out = c.run_ok(
        RunOptions {
            ulimits: vec!["nofile=1024:2048".into(), "core=0".into()],
            hostname: Some("web".into()),
            env: vec!["GREETING=hi there".into()],
            ..opts()
        },
        "echo nofile=$(ulimit -n):$(ulimit -Hn); echo core=$(ulimit -c); \
         echo hostname=$(hostname); echo hostfile=$(cat /etc/hostname); \
         echo hosts=$(grep -w web /etc/hosts); echo env=$HOSTNAME/$GREETING",
    );
    assert_eq!(field(&out, "nofile"), "1024:2048");
    assert_eq!(field(&out, "core"), "0");
    assert_eq!(field(&out, "hostname"), "web");
    assert_eq!(field(&out, "hostfile"), "web");
    assert_eq!(field(&out, "hosts"), "127.0.0.1 web");
    assert_eq!(field(&out, "env"), "web/hi there");
}

#[test]
fn seccomp_blocks_namespaces_and_mounts_unless_allowed() {
    let c = container("kspec-sec");
    // A user namespace needs no capability: only the profile stops it.
    let script = "unshare -U true 2>&1 && echo userns=ok || echo userns=refused; \
                  mkdir -p /mnt/t; mount -t tmpfs t /mnt/t 2>/dev/null && echo mount=ok \
                  || echo mount=refused";
    let out = c.run_ok(opts(), script);
    assert_eq!(field(&out, "userns"), "refused", "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(field(&out, "mount"), "refused");

    let out = c.run_ok(
        RunOptions {
            security_opt: vec!["seccomp=unconfined".into()],
            ..opts()
        },
        script,
    );
    assert_eq!(field(&out, "userns"), "ok", "{out}");
    assert_eq!(field(&out, "mount"), "refused", "no CAP_SYS_ADMIN");

    // CAP_SYS_ADMIN opens the profile's namespace and mount group.
    let out = c.run_ok(
        RunOptions {
            cap_add: vec!["SYS_ADMIN".into()],
            ..opts()
        },
        script,
    );
    assert_eq!(field(&out, "userns"), "ok", "{out}");
    assert_eq!(field(&out, "mount"), "ok", "{out}");
}

#[test]
fn seccomp_filters_clone_flags_and_answers_enosys_for_clone3() {
    let c = container("kspec-clone");
    std::fs::copy(
        kapsel_integration_tests::sysprobe(),
        c.rootfs().join("bin/sysprobe"),
    )
    .expect("copy sysprobe");
    // CLONE_NEWUSER needs no capability: only the profile refuses it. clone3 is NR 435.
    let script = "echo plain=$(sysprobe clone 0); echo newuser=$(sysprobe clone 0x10000000); \
                  echo clone3=$(sysprobe call 435 0 0)";
    let out = c.run_ok(opts(), script);
    assert!(field(&out, "plain").starts_with("ok "), "{out}");
    assert_eq!(field(&out, "newuser"), "errno 1", "{out}");
    assert_eq!(
        field(&out, "clone3"),
        "errno 38",
        "ENOSYS, so libc falls back to clone"
    );

    let out = c.run_ok(
        RunOptions {
            security_opt: vec!["seccomp=unconfined".into()],
            ..opts()
        },
        script,
    );
    assert!(field(&out, "newuser").starts_with("ok "), "{out}");
    assert_ne!(field(&out, "clone3"), "errno 38", "{out}");
}

#[test]
fn privileged_sees_host_devices_and_writes_sys() {
    let c = container("kspec-priv");
    let script = "echo loop=$(ls /dev/loop0 2>/dev/null); echo seccomp=$(grep Seccomp: /proc/self/status | tr -d '\\t'); \
         echo timers=$(wc -c < /proc/timer_list); \
         mkdir -p /mnt/t; mount -t tmpfs t /mnt/t && echo mount=ok; \
         echo sys=$(grep ' /sys sysfs ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1); \
         grep CapEff /proc/self/status";
    let out = c.run_ok(
        RunOptions {
            privileged: true,
            ..opts()
        },
        script,
    );
    assert!(Path::new("/dev/loop0").exists(), "the host has /dev/loop0");
    assert_eq!(field(&out, "loop"), "/dev/loop0");
    assert_eq!(field(&out, "seccomp"), "Seccomp:0");
    let timers: u64 = field(&out, "timers").parse().expect("a byte count");
    assert!(timers > 0, "/proc/timer_list is not masked");
    assert_eq!(field(&out, "mount"), "ok");
    assert_eq!(field(&out, "sys"), "rw");
    // Every capability the runtime could give: the host's bounding set.
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(cap_eff(&out), parse_cap_hex(status_field(&host, "CapBnd")));

    let out = c.run_ok(opts(), "ls /dev/loop0 2>/dev/null; echo done");
    assert_eq!(
        out.trim(),
        "done",
        "an unprivileged container has no host devices"
    );
}

#[test]
fn init_reaps_forwards_signals_and_passes_the_exit_code() {
    let mut c = container("kspec-init");
    c.ctx.init_binary = Some(init_binary());
    let init = || RunOptions {
        init: true,
        ..opts()
    };
    // An orphan (the subshell's sleep) is reparented to PID 1 and must be reaped by it.
    let out = c.run(
        init(),
        "echo pid1=$(cat /proc/1/comm); (sleep 0.2 &); sleep 0.6; \
         echo zombies=$(ps -o stat | grep -c '^Z'); exit 7",
    );
    assert_eq!(
        out.code,
        Some(7),
        "the exit code passes through init:\n{out}"
    );
    assert_eq!(field(&out.stdout, "pid1"), "kapsel-init");
    assert_eq!(field(&out.stdout, "zombies"), "0");

    // SIGTERM to PID 1 (what `kapsel stop` sends) reaches the command.
    let out = c.run(
        init(),
        "trap 'echo got=TERM; exit 42' TERM; kill -TERM 1; sleep 5 & wait",
    );
    assert_eq!(out.code, Some(42), "{out}");
    assert_eq!(field(&out.stdout, "got"), "TERM");

    // Killed by a signal: 128 + the signal.
    let out = c.run(init(), "kill -KILL $$");
    assert_eq!(out.code, Some(137), "{out}");

    // Without --init the command is PID 1.
    let out = c.run_ok(opts(), "echo pid1=$(cat /proc/1/comm)");
    assert_eq!(field(&out, "pid1"), "sh");
}

#[test]
fn network_host_shares_the_hosts_network_and_names() {
    let c = container("kspec-net");
    let host_links = host_ok("ip", &["-o", "link"]).stdout.lines().count();
    let out = c.run_ok(
        RunOptions {
            network: NetworkMode::Host,
            ..opts()
        },
        "echo links=$(ip -o link | wc -l); echo hostname=$(hostname)",
    );
    assert_eq!(field(&out, "links"), host_links.to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(field(&out, "hostname"), host.trim());
    let out = c.run_ok(opts(), "echo links=$(ip -o link | wc -l)");
    assert_eq!(field(&out, "links"), "1", "only lo with --network none");
}
