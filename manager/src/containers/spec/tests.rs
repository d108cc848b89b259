use super::*;
use crate::containers::options::DEFAULT_CAPS;
use crate::oci::ContainerConfig;

const ID: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: SpecContext,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:root,app\napp:x:1001:\n",
    )
    .unwrap();
    let ctx = SpecContext {
        id: ID.into(),
        rootfs,
        container_dir: dir.path().join("ctr"),
        init_binary: None,
        volumes: Vec::new(),
    };
    Fixture { _dir: dir, ctx }
}

fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/bin:/usr/bin".into(), "LANG=C.UTF-8".into()]),
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            ..ContainerConfig::default()
        }),
        ..ImageConfig::default()
    }
}

fn busybox() -> ImageConfig {
    image(None, Some(&["sh"]))
}

fn opts() -> RunOptions {
    RunOptions {
        image: "busybox".into(),
        ..RunOptions::default()
    }
}

const V1: Host = Host {
    cgroup2: false,
    swap_accounting: true,
    cpus: 2,
};

fn gen(img: &ImageConfig, o: &RunOptions) -> Value {
    let f = fixture();
    generate_on(img, o, &f.ctx, V1).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn mount_at<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
}

/// The spec as kapsel-runtime reads it: it must parse, pass the runtime's checks, and its
/// seccomp profile must compile. Returns the filter's length in instructions.
fn runtime_accepts(spec: &Value) -> usize {
    let parsed: kapsel_runtime::spec::Spec = serde_json::from_value(spec.clone())
        .unwrap_or_else(|e| panic!("the runtime cannot read the spec: {e}\n{spec:#}"));
    parsed
        .validate()
        .unwrap_or_else(|e| panic!("the runtime refuses the spec: {e}"));
    if let Some(profile) = parsed.linux.as_ref().and_then(|l| l.seccomp.as_ref()) {
        let filter = kapsel_runtime::seccomp::compile(profile)
            .unwrap_or_else(|e| panic!("the seccomp profile does not compile: {e}"));
        return filter.program.len();
    }
    0
}

#[test]
fn default_container_is_dockers() {
    let s = gen(&busybox(), &opts());
    let len = runtime_accepts(&s);
    assert!(len > 300 && len < 4096, "{len} instructions");
    assert_eq!(s["ociVersion"], "1.2.0");
    assert_eq!(s["process"]["args"], json!(["sh"]));
    assert_eq!(s["process"]["cwd"], "/");
    assert_eq!(s["process"]["terminal"], false);
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 0, "gid": 0, "additionalGids": [0, 10]})
    );
    assert_eq!(
        strs(&s["process"]["env"]),
        [
            "PATH=/bin:/usr/bin",
            "HOSTNAME=0123456789ab",
            "LANG=C.UTF-8"
        ]
    );
    assert_eq!(s["hostname"], "0123456789ab");
    assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
    let caps = &s["process"]["capabilities"];
    assert_eq!(strs(&caps["effective"]), DEFAULT_CAPS);
    assert_eq!(caps["bounding"], caps["effective"]);
    assert_eq!(caps["permitted"], caps["effective"]);
    assert!(caps.get("inheritable").is_none() && caps.get("ambient").is_none());
    assert_eq!(s["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert!(s["process"].get("noNewPrivileges").is_none());

    let l = &s["linux"];
    assert_eq!(l["cgroupsPath"], format!("/kapsel/{ID}"));
    let ns: Vec<&str> = l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
    let masked = strs(&l["maskedPaths"]);
    assert_eq!(masked[..MASKED_PATHS.len()], MASKED_PATHS);
    assert_eq!(
        masked[MASKED_PATHS.len()..],
        [
            "/sys/devices/system/cpu/cpu0/thermal_throttle",
            "/sys/devices/system/cpu/cpu1/thermal_throttle"
        ]
    );
    assert!(masked.iter().any(|m| m == "/proc/interrupts"));
    assert_eq!(strs(&l["readonlyPaths"]), READONLY_PATHS);
    assert_eq!(l["resources"]["cpu"], json!({"shares": 1024}));
    assert!(l["resources"].get("memory").is_none());
    assert!(l["resources"].get("pids").is_none());
    assert_eq!(
        l["resources"]["devices"][0],
        json!({"allow": false, "access": "rwm"})
    );
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(l["sysctl"]["net.ipv4.ip_unprivileged_port_start"], "0");
    assert!(l.get("devices").is_none());

    let dests: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf"
        ]
    );
    assert!(strs(&mount_at(&s, "/sys").unwrap()["options"]).contains(&"ro".into()));
    assert!(strs(&mount_at(&s, "/dev/shm").unwrap()["options"]).contains(&"size=67108864".into()));
    let hosts = mount_at(&s, "/etc/hosts").unwrap();
    assert!(hosts["source"].as_str().unwrap().ends_with("/ctr/hosts"));
    assert_eq!(strs(&hosts["options"]), ["rbind", "rprivate"]);
}

#[test]
fn entrypoint_and_cmd_follow_docker() {
    let ep = image(Some(&["/ep", "-x"]), Some(&["default"]));
    let run = |img: &ImageConfig, o: RunOptions| command(img, &o);
    let cmd = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(run(&ep, opts()).unwrap(), ["/ep", "-x", "default"]);
    assert_eq!(
        run(
            &ep,
            RunOptions {
                cmd: cmd(&["a", "b"]),
                ..opts()
            }
        )
        .unwrap(),
        ["/ep", "-x", "a", "b"]
    );
    // --entrypoint drops the image's Cmd.
    assert_eq!(
        run(
            &ep,
            RunOptions {
                entrypoint: cmd(&["/other"]),
                ..opts()
            }
        )
        .unwrap(),
        ["/other"]
    );
    // --entrypoint "" with a command: just the command.
    assert_eq!(
        run(
            &ep,
            RunOptions {
                entrypoint: cmd(&[]),
                cmd: cmd(&["ls"]),
                ..opts()
            }
        )
        .unwrap(),
        ["ls"]
    );
    assert!(matches!(
        run(
            &ep,
            RunOptions {
                entrypoint: cmd(&[]),
                ..opts()
            }
        ),
        Err(SpecError::NoCommand)
    ));
    assert!(matches!(
        run(&image(None, None), opts()),
        Err(SpecError::NoCommand)
    ));
}

#[test]
fn environment_merges_like_docker() {
    let o = RunOptions {
        tty: true,
        env: vec![
            "LANG=de_DE".into(),
            "NEW=1".into(),
            "PATH".into(),
            "GONE".into(),
        ],
        ..opts()
    };
    assert_eq!(
        environment(&busybox(), &o, "h"),
        ["HOSTNAME=h", "TERM=xterm", "LANG=de_DE", "NEW=1"]
    );
    let bare = image(None, Some(&["sh"]));
    let mut bare = bare;
    bare.config.as_mut().unwrap().env = None;
    assert_eq!(
        environment(&bare, &opts(), "h"),
        [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h".into()]
    );
}

#[test]
fn user_workdir_and_hostname() {
    let mut img = busybox();
    img.config.as_mut().unwrap().user = Some("app".into());
    img.config.as_mut().unwrap().working_dir = Some("/srv".into());
    let s = gen(&img, &opts());
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 1000, "gid": 1001, "additionalGids": [1001, 10]})
    );
    assert_eq!(s["process"]["cwd"], "/srv");
    let s = gen(
        &img,
        &RunOptions {
            user: Some("0:10".into()),
            workdir: Some("/tmp".into()),
            hostname: Some("web".into()),
            ..opts()
        },
    );
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 0, "gid": 10, "additionalGids": [10]})
    );
    assert_eq!(s["process"]["cwd"], "/tmp");
    assert_eq!(s["hostname"], "web");
    assert!(strs(&s["process"]["env"]).contains(&"HOSTNAME=web".into()));

    let f = fixture();
    let err = generate_on(
        &busybox(),
        &RunOptions {
            user: Some("ghost".into()),
            ..opts()
        },
        &f.ctx,
        V1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[test]
fn capabilities_pick_the_seccomp_groups() {
    let s = gen(
        &busybox(),
        &RunOptions {
            cap_add: vec!["SYS_ADMIN".into()],
            cap_drop: vec!["CHOWN".into()],
            ..opts()
        },
    );
    runtime_accepts(&s);
    let eff = strs(&s["process"]["capabilities"]["effective"]);
    assert!(eff.contains(&"CAP_SYS_ADMIN".into()) && !eff.contains(&"CAP_CHOWN".into()));
    let rules = s["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    assert!(rules
        .iter()
        .any(|r| strs(&r["names"]).contains(&"mount".into())));
    assert!(!rules.iter().any(|r| r["names"] == json!(["clone3"])));
}

#[test]
fn privileged_opens_everything() {
    let s = gen(
        &busybox(),
        &RunOptions {
            privileged: true,
            ..opts()
        },
    );
    runtime_accepts(&s);
    let l = &s["linux"];
    assert!(l.get("seccomp").is_none());
    assert!(l.get("maskedPaths").is_none() && l.get("readonlyPaths").is_none());
    assert_eq!(
        l["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    let devices = l["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["path"] == "/dev/null" && d["type"] == "c"),
        "{devices:?}"
    );
    assert!(!devices.iter().any(|d| d["path"] == "/dev/ptmx"));
    assert!(!strs(&mount_at(&s, "/sys").unwrap()["options"]).contains(&"ro".into()));
    assert!(!strs(&mount_at(&s, "/sys/fs/cgroup").unwrap()["options"]).contains(&"ro".into()));
    assert!(
        s["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .len()
            > 30
    );
}

#[test]
fn init_wraps_the_command_and_binds_the_binary() {
    let mut f = fixture();
    let o = RunOptions {
        init: true,
        ..opts()
    };
    assert!(matches!(
        generate_on(&busybox(), &o, &f.ctx, V1),
        Err(SpecError::NoInitBinary)
    ));
    f.ctx.init_binary = Some("/usr/libexec/kapsel-init".into());
    let s = generate_on(&busybox(), &o, &f.ctx, V1).unwrap();
    runtime_accepts(&s);
    assert_eq!(
        s["process"]["args"],
        json!(["/sbin/kapsel-init", "--", "sh"])
    );
    let m = mount_at(&s, "/sbin/kapsel-init").unwrap();
    assert_eq!(m["source"], "/usr/libexec/kapsel-init");
    assert!(strs(&m["options"]).contains(&"ro".into()));
}

#[test]
fn read_only_tmpfs_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().to_str().unwrap();
    let s = gen(
        &busybox(),
        &RunOptions {
            read_only: true,
            tmpfs: vec!["/run:exec,size=1m".into(), "/dev/shm:size=8m".into()],
            binds: vec![format!("{src}:/data/in:ro"), format!("{src}:/data")],
            ..opts()
        },
    );
    runtime_accepts(&s);
    assert_eq!(s["root"]["readonly"], true);
    assert!(strs(&mount_at(&s, "/etc/hosts").unwrap()["options"]).contains(&"ro".into()));
    assert_eq!(
        strs(&mount_at(&s, "/run").unwrap()["options"]),
        ["nosuid", "nodev", "exec", "size=1m"]
    );
    // A user tmpfs on /dev/shm replaces the default one.
    let shm: Vec<&Value> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] == "/dev/shm")
        .collect();
    assert_eq!(shm.len(), 1);
    assert!(strs(&shm[0]["options"]).contains(&"size=8m".into()));
    // Parents first.
    let pos = |d: &str| {
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m["destination"] == d)
            .unwrap()
    };
    assert!(pos("/data") < pos("/data/in"));
    assert_eq!(
        strs(&mount_at(&s, "/data/in").unwrap()["options"]),
        ["rbind", "rprivate", "ro"]
    );

    let f = fixture();
    let err = generate_on(
        &busybox(),
        &RunOptions {
            binds: vec!["/no/such/kspec/dir:/x".into()],
            ..opts()
        },
        &f.ctx,
        V1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bind source path does not exist: /no/such/kspec/dir"),
        "{err}"
    );
}

#[test]
fn resources_follow_docker() {
    let s = gen(
        &busybox(),
        &RunOptions {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(50),
            ..opts()
        },
    );
    runtime_accepts(&s);
    let r = &s["linux"]["resources"];
    assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 128 << 20}));
    assert_eq!(
        r["cpu"],
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"})
    );
    assert_eq!(r["pids"], json!({"limit": 50}));
    let unlimited_swap = gen(
        &busybox(),
        &RunOptions {
            memory: Some(64 << 20),
            memory_swap: Some(-1),
            ..opts()
        },
    );
    assert_eq!(unlimited_swap["linux"]["resources"]["memory"]["swap"], -1);
    let f = fixture();
    let no_swap_host = Host {
        cgroup2: false,
        swap_accounting: false,
        cpus: 1,
    };
    let s = generate_on(
        &busybox(),
        &RunOptions {
            memory: Some(64 << 20),
            ..opts()
        },
        &f.ctx,
        no_swap_host,
    )
    .unwrap();
    assert_eq!(
        s["linux"]["resources"]["memory"],
        json!({"limit": 64 << 20})
    );
    let v2 = Host {
        cgroup2: true,
        swap_accounting: true,
        cpus: 4,
    };
    let s = generate_on(&busybox(), &opts(), &f.ctx, v2).unwrap();
    assert_eq!(s["linux"]["namespaces"][5]["type"], "cgroup");
}

#[test]
fn ulimits_replace_defaults_and_stay_under_the_hosts_hard_limit() {
    let s = gen(
        &busybox(),
        &RunOptions {
            ulimits: vec!["nofile=100:200".into(), "core=0".into()],
            ..opts()
        },
    );
    assert_eq!(
        s["process"]["rlimits"],
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ])
    );
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard != u64::MAX && !can_raise_hard_limits() {
        let f = fixture();
        let err = generate_on(
            &busybox(),
            &RunOptions {
                ulimits: vec![format!("nofile={}", hard + 1)],
                ..opts()
            },
            &f.ctx,
            V1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("above kapseld's own hard limit"), "{err}");
    }
}

#[test]
fn security_options_network_and_labels() {
    let s = gen(
        &busybox(),
        &RunOptions {
            security_opt: vec!["no-new-privileges".into(), "seccomp=unconfined".into()],
            network: NetworkMode::Host,
            labels: [("app".to_string(), "web".to_string())].into(),
            ..opts()
        },
    );
    runtime_accepts(&s);
    assert_eq!(s["process"]["noNewPrivileges"], true);
    assert!(s["linux"].get("seccomp").is_none());
    assert!(s["linux"].get("sysctl").is_none());
    assert!(!s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(s["hostname"], host.trim());
    assert_eq!(s["annotations"], json!({"app": "web"}));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(
        &file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"},
            {"names":["chroot"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
    )
    .unwrap();
    let s = gen(
        &busybox(),
        &RunOptions {
            security_opt: vec![format!("seccomp={}", file.display())],
            ..opts()
        },
    );
    runtime_accepts(&s);
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(
        s["linux"]["seccomp"]["syscalls"],
        json!([{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])
    );
    let f = fixture();
    let err = generate_on(
        &busybox(),
        &RunOptions {
            security_opt: vec!["seccomp=/no/such/profile.json".into()],
            ..opts()
        },
        &f.ctx,
        V1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/no/such/profile.json"), "{err}");
    for (bad, why) in [
        (
            r#"{"defaultAction":"SCMP_ACT_SOMETIMES"}"#,
            "not valid linux.seccomp",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "argument index 9",
        ),
        ("{not json", "not JSON"),
    ] {
        let err = generate_on(
            &busybox(),
            &RunOptions {
                security_opt: vec![format!("seccomp={bad}")],
                ..opts()
            },
            &f.ctx,
            V1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn stop_signals() {
    let mut img = busybox();
    assert_eq!(stop_signal(&img, &opts()), Signal::SIGTERM);
    img.config.as_mut().unwrap().stop_signal = Some("SIGQUIT".into());
    assert_eq!(stop_signal(&img, &opts()), Signal::SIGQUIT);
    let o = RunOptions {
        stop_signal: Some("USR1".into()),
        ..opts()
    };
    assert_eq!(stop_signal(&img, &o), Signal::SIGUSR1);
    img.config.as_mut().unwrap().stop_signal = Some("NOPE".into());
    assert_eq!(stop_signal(&img, &opts()), Signal::SIGTERM);
}

#[test]
fn container_dir_files() {
    let dir = tempfile::tempdir().unwrap();
    let host_hosts = dir.path().join("hosts");
    let host_resolv = dir.path().join("resolv.conf");
    std::fs::write(&host_hosts, "127.0.0.1 localhost\n10.0.0.1 db\n").unwrap();
    std::fs::write(
        &host_resolv,
        "search example.org\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n",
    )
    .unwrap();
    let ctr = dir.path().join("ctr");
    prepare_container_dir_from(&ctr, "web", NetworkMode::None, &host_hosts, &host_resolv).unwrap();
    let read = |n: &str| std::fs::read_to_string(ctr.join(n)).unwrap();
    assert_eq!(read("hostname"), "web\n");
    assert!(read("hosts").starts_with("127.0.0.1\tlocalhost\n"));
    assert!(read("hosts").ends_with("127.0.0.1\tweb\n"));
    assert_eq!(
        read("resolv.conf"),
        "search example.org\nnameserver 10.1.1.1\n"
    );
    prepare_container_dir_from(&ctr, "web", NetworkMode::Host, &host_hosts, &host_resolv).unwrap();
    assert_eq!(read("hosts"), "127.0.0.1 localhost\n10.0.0.1 db\n");
    assert!(read("resolv.conf").contains("127.0.0.53"));
    assert_eq!(
        container_resolv_conf("nameserver 127.0.0.11\n"),
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    );
}

#[test]
fn workdir_is_made_when_missing() {
    let f = fixture();
    let spec = |cwd: &str| json!({ "process": { "cwd": cwd } });
    create_workdir(&f.ctx.rootfs, &spec("/srv/app")).unwrap();
    assert!(f.ctx.rootfs.join("srv/app").is_dir());
    let err = create_workdir(&f.ctx.rootfs, &spec("/etc/passwd")).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(create_workdir(&f.ctx.rootfs, &spec("/etc/passwd/x")).is_err());
}

#[test]
fn volumes_needed_and_mounted() {
    let mut img = image(None, Some(&["sh"]));
    img.config.as_mut().unwrap().volumes = Some(BTreeMap::from([
        ("/data".to_string(), Value::Null),
        ("/cache".to_string(), Value::Null),
        ("/tmpfsd".to_string(), Value::Null),
        ("/".to_string(), Value::Null),
    ]));
    let o = RunOptions {
        binds: vec!["named:/data:ro".into(), "/anon".into()],
        tmpfs: vec!["/tmpfsd:size=1m".into()],
        ..opts()
    };
    let need = |name: Option<&str>, dest: &str, ro| VolumeNeed {
        name: name.map(str::to_string),
        destination: dest.into(),
        read_only: ro,
    };
    // The user's first, then the image paths nothing covers (/data is the named volume's,
    // /tmpfsd the tmpfs's; / is never one).
    assert_eq!(
        volumes_needed(&img, &o).unwrap(),
        [
            need(Some("named"), "/data", true),
            need(None, "/anon", false),
            need(None, "/cache", false),
        ]
    );
    let mut f = fixture();
    f.ctx.volumes = vec![VolumeSource {
        destination: "/data".into(),
        source: "/vols/named/_data".into(),
        read_only: true,
    }];
    let spec = generate_on(&img, &o, &f.ctx, V1).unwrap();
    let m = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    assert_eq!(m["source"], "/vols/named/_data");
    assert_eq!(strs(&m["options"]), ["rbind", "rprivate", "ro"]);
    // A volume is no host bind: its name is not looked up as a path.
    assert_eq!(
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == "/anon")
            .count(),
        0
    );
}

#[test]
fn systempaths_unconfined_drops_masked_and_read_only_paths() {
    let s = gen(
        &busybox(),
        &RunOptions {
            security_opt: vec!["systempaths=unconfined".into()],
            ..opts()
        },
    );
    assert!(s["linux"].get("maskedPaths").is_none());
    assert!(s["linux"].get("readonlyPaths").is_none());
}

#[test]
fn cpu_lists_give_their_slot_count() {
    assert_eq!(cpu_slots("0-1\n"), Some(2));
    assert_eq!(cpu_slots("0"), Some(1));
    assert_eq!(cpu_slots("0-3,6"), Some(7));
    assert_eq!(cpu_slots("0,2-5"), Some(6));
    assert_eq!(cpu_slots("x"), None);
}

#[test]
fn group_add_appends_supplementary_groups() {
    let mut img = busybox();
    img.config.as_mut().unwrap().user = Some("app".into());
    let s = gen(
        &img,
        &RunOptions {
            group_add: vec!["root".into(), "4000".into(), "wheel".into()],
            ..opts()
        },
    );
    assert_eq!(
        s["process"]["user"],
        json!({"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 0, 4000]})
    );
    let f = fixture();
    let err = generate_on(
        &busybox(),
        &RunOptions {
            group_add: vec!["video".into()],
            ..opts()
        },
        &f.ctx,
        V1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("video"), "{err}");
}
