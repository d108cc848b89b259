//! Cgroup-level tests against fake control files in a temporary directory (plain files: the
//! last write to a file is what it holds), and one real round trip on the host, ignored by
//! default.

use super::*;
use crate::spec::{
    BlockIo, Cpu, DeviceCgroup, HugepageLimit, Memory, Network, Pids, ThrottleDevice, WeightDevice,
};
use crate::syscall::bpf::FakeBpf;
use std::path::Path;

/// Creates `dir` and the given control files in it.
fn fake(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

fn content(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// A v1 Cgroup with a directory per controller under `root`.
fn v1_cgroup(root: &Path, controllers: &[&str]) -> Cgroup {
    let paths = controllers
        .iter()
        .map(|c| (c.to_string(), root.join(c).join("ctr")))
        .collect();
    Cgroup { v2: false, paths }
}

fn v2_cgroup(dir: &Path) -> Cgroup {
    Cgroup {
        v2: true,
        paths: BTreeMap::from([(String::new(), dir.to_path_buf())]),
    }
}

#[test]
fn v1_apply_writes_every_controller() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(
        root.path(),
        &[
            "cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "net_cls", "net_prio",
        ],
    );
    fake(
        &cg.paths["memory"],
        &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.soft_limit_in_bytes", ""),
            ("memory.swappiness", ""),
            ("memory.oom_control", ""),
        ],
    );
    fake(
        &cg.paths["cpu"],
        &[
            ("cpu.shares", ""),
            ("cpu.cfs_quota_us", ""),
            ("cpu.cfs_period_us", ""),
            ("cpu.cfs_burst_us", ""),
            ("cpu.rt_runtime_us", ""),
            ("cpu.rt_period_us", ""),
            ("cpu.idle", ""),
        ],
    );
    fake(
        &cg.paths["cpuset"],
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    fake(&cg.paths["pids"], &[("pids.max", "")]);
    fake(
        &cg.paths["blkio"],
        &[
            ("blkio.bfq.weight", "100\n"),
            ("blkio.leaf_weight", ""),
            ("blkio.leaf_weight_device", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_iops_device", ""),
        ],
    );
    fake(
        &cg.paths["hugetlb"],
        &[
            ("hugetlb.2MB.limit_in_bytes", ""),
            ("hugetlb.2MB.rsvd.limit_in_bytes", ""),
        ],
    );
    fake(&cg.paths["net_cls"], &[("net_cls.classid", "")]);
    fake(&cg.paths["net_prio"], &[("net_prio.ifpriomap", "")]);

    let res = LinuxResources {
        memory: Some(Memory {
            limit: Some(64 << 20),
            swap: Some(128 << 20),
            reservation: Some(32 << 20),
            swappiness: Some(10),
            disable_oom_killer: Some(true),
            ..Default::default()
        }),
        cpu: Some(Cpu {
            shares: Some(512),
            quota: Some(50_000),
            period: Some(100_000),
            burst: Some(10_000),
            realtime_runtime: Some(950),
            realtime_period: Some(1000),
            cpus: Some("0-1".into()),
            mems: Some("0".into()),
            idle: Some(0),
        }),
        pids: Some(Pids { limit: 0 }),
        block_io: Some(BlockIo {
            weight: Some(300),
            leaf_weight: Some(200),
            weight_device: vec![WeightDevice {
                major: 8,
                minor: 0,
                weight: Some(500),
                leaf_weight: Some(50),
            }],
            throttle_read_bps_device: vec![ThrottleDevice {
                major: 8,
                minor: 0,
                rate: 1_048_576,
            }],
            throttle_write_iops_device: vec![ThrottleDevice {
                major: 8,
                minor: 16,
                rate: 100,
            }],
            ..Default::default()
        }),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        network: Some(Network {
            class_id: Some(0x100001),
            priorities: vec![crate::spec::InterfacePriority {
                name: "eth0".into(),
                priority: 5,
            }],
        }),
        ..Default::default()
    };
    cg.apply(&FakeBpf::new(), &res, false).unwrap();

    let m = &cg.paths["memory"];
    assert_eq!(content(m, "memory.limit_in_bytes"), "67108864");
    assert_eq!(content(m, "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(content(m, "memory.soft_limit_in_bytes"), "33554432");
    assert_eq!(content(m, "memory.swappiness"), "10");
    assert_eq!(content(m, "memory.oom_control"), "1");
    let c = &cg.paths["cpu"];
    assert_eq!(content(c, "cpu.shares"), "512");
    assert_eq!(content(c, "cpu.cfs_quota_us"), "50000");
    assert_eq!(content(c, "cpu.cfs_period_us"), "100000");
    assert_eq!(content(c, "cpu.cfs_burst_us"), "10000");
    assert_eq!(content(c, "cpu.rt_runtime_us"), "950");
    assert_eq!(content(c, "cpu.rt_period_us"), "1000");
    assert_eq!(content(c, "cpu.idle"), "0");
    assert_eq!(content(&cg.paths["cpuset"], "cpuset.cpus"), "0-1");
    assert_eq!(content(&cg.paths["cpuset"], "cpuset.mems"), "0");
    assert_eq!(content(&cg.paths["pids"], "pids.max"), "max");
    let b = &cg.paths["blkio"];
    // BFQ: the weight and the per-device weight share blkio.bfq.weight; the device line is last.
    assert_eq!(content(b, "blkio.bfq.weight"), "8:0 500");
    assert_eq!(content(b, "blkio.leaf_weight"), "200");
    assert_eq!(content(b, "blkio.leaf_weight_device"), "8:0 50");
    assert_eq!(content(b, "blkio.throttle.read_bps_device"), "8:0 1048576");
    assert_eq!(content(b, "blkio.throttle.write_iops_device"), "8:16 100");
    let h = &cg.paths["hugetlb"];
    assert_eq!(content(h, "hugetlb.2MB.limit_in_bytes"), "4194304");
    assert_eq!(content(h, "hugetlb.2MB.rsvd.limit_in_bytes"), "4194304");
    assert_eq!(content(&cg.paths["net_cls"], "net_cls.classid"), "1048577");
    assert_eq!(
        content(&cg.paths["net_prio"], "net_prio.ifpriomap"),
        "eth0 5"
    );
}

#[test]
fn v1_memory_and_memsw_are_ordered() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["memory"]);
    let dir = &cg.paths["memory"];
    let memory = |limit: i64, swap: i64| LinuxResources {
        memory: Some(Memory {
            limit: Some(limit),
            swap: Some(swap),
            ..Default::default()
        }),
        ..Default::default()
    };
    // memory.memsw.limit_in_bytes as a directory: writing it fails, so which write came first
    // shows in whether memory.limit_in_bytes changed.
    fake(dir, &[("memory.limit_in_bytes", "100\n")]);
    std::fs::create_dir(dir.join("memory.memsw.limit_in_bytes")).unwrap();
    // Raising (current limit 100 < new memsw): memsw first, so the limit stays untouched.
    assert!(cg.apply(&FakeBpf::new(), &memory(200, 400), true).is_err());
    assert_eq!(content(dir, "memory.limit_in_bytes"), "100\n");
    // Lowering (current limit 1000 >= new memsw): the limit first.
    std::fs::write(dir.join("memory.limit_in_bytes"), "1000\n").unwrap();
    let err = cg
        .apply(&FakeBpf::new(), &memory(200, 400), true)
        .unwrap_err();
    assert_eq!(content(dir, "memory.limit_in_bytes"), "200");
    assert!(
        err.to_string().starts_with("cannot write \"400\" to "),
        "{err}"
    );
    // memory+swap below memory is refused before any write.
    let err = cg
        .apply(&FakeBpf::new(), &memory(400, 200), false)
        .unwrap_err();
    assert!(matches!(err, CgroupError::Invalid { .. }), "{err}");
}

#[test]
fn v1_unlimited_memory_unlimits_memsw_and_ignores_missing_kmem() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["memory"]);
    let dir = &cg.paths["memory"];
    fake(
        dir,
        &[
            ("memory.limit_in_bytes", "100\n"),
            ("memory.memsw.limit_in_bytes", "100\n"),
        ],
    );
    let res = LinuxResources {
        memory: Some(Memory {
            limit: Some(-1),
            kernel: Some(1 << 20),
            kernel_tcp: Some(1 << 20),
            ..Default::default()
        }),
        ..Default::default()
    };
    cg.apply(&FakeBpf::new(), &res, false).unwrap();
    assert_eq!(content(dir, "memory.limit_in_bytes"), "-1");
    assert_eq!(content(dir, "memory.memsw.limit_in_bytes"), "-1");
}

#[test]
fn v1_devices_rules_are_written_on_create_not_update() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["devices"]);
    let dir = &cg.paths["devices"];
    fake(dir, &[("devices.allow", ""), ("devices.deny", "")]);
    let res = LinuxResources {
        devices: vec![DeviceCgroup {
            allow: false,
            access: Some("rwm".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    cg.apply(&FakeBpf::new(), &res, true).unwrap();
    assert_eq!(content(dir, "devices.deny"), "");
    cg.apply(&FakeBpf::new(), &res, false).unwrap();
    assert_eq!(content(dir, "devices.deny"), "a *:* rwm");
    // The last default allowance is /dev/net/tun.
    assert_eq!(content(dir, "devices.allow"), "c 10:200 rwm");
}

#[test]
fn v1_unmounted_controller_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["memory"]);
    let res = LinuxResources {
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 1,
        }],
        ..Default::default()
    };
    let err = cg.apply(&FakeBpf::new(), &res, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cgroup controller hugetlb is not mounted on this host: cannot apply linux.resources.hugepageLimits"
    );
    // Empty sections ask for nothing, so need no controller; neither do empty device rules.
    let res = LinuxResources {
        cpu: Some(Cpu::default()),
        block_io: Some(BlockIo::default()),
        network: Some(Network::default()),
        ..Default::default()
    };
    cg.apply(&FakeBpf::new(), &res, false).unwrap();
    let res = LinuxResources {
        unified: BTreeMap::from([("memory.high".to_string(), "1".to_string())]),
        ..Default::default()
    };
    assert!(matches!(
        cg.apply(&FakeBpf::new(), &res, false).unwrap_err(),
        CgroupError::Unsupported { .. }
    ));
}

#[test]
fn v1_write_error_names_file_and_value() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["pids"]);
    std::fs::create_dir_all(&cg.paths["pids"]).unwrap();
    let res = LinuxResources {
        pids: Some(Pids { limit: 64 }),
        ..Default::default()
    };
    let err = cg.apply(&FakeBpf::new(), &res, false).unwrap_err();
    let file = cg.paths["pids"].join("pids.max");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write \"64\" to {}: No such file or directory (os error 2)",
            file.display()
        )
    );
}

#[test]
fn v2_apply_converts_v1_values() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let files = [
        "memory.max",
        "memory.swap.max",
        "memory.low",
        "memory.high",
        "cpu.weight",
        "cpu.max",
        "cpu.max.burst",
        "cpu.idle",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "io.weight",
        "io.max",
        "hugetlb.1GB.max",
    ];
    let empty: Vec<(&str, &str)> = files.iter().map(|f| (*f, "")).collect();
    fake(dir, &empty);
    let cg = v2_cgroup(dir);
    let res = LinuxResources {
        memory: Some(Memory {
            limit: Some(64 << 20),
            swap: Some(192 << 20),
            reservation: Some(-1),
            swappiness: Some(60),
            ..Default::default()
        }),
        cpu: Some(Cpu {
            shares: Some(1024),
            quota: Some(-1),
            period: Some(100_000),
            burst: Some(0),
            cpus: Some("1".into()),
            mems: Some("0".into()),
            idle: Some(1),
            ..Default::default()
        }),
        pids: Some(Pids { limit: 32 }),
        block_io: Some(BlockIo {
            weight: Some(500),
            throttle_read_bps_device: vec![ThrottleDevice {
                major: 8,
                minor: 0,
                rate: 10,
            }],
            throttle_write_iops_device: vec![ThrottleDevice {
                major: 8,
                minor: 0,
                rate: 20,
            }],
            ..Default::default()
        }),
        hugepage_limits: vec![HugepageLimit {
            page_size: "1GB".into(),
            limit: 1 << 30,
        }],
        unified: BTreeMap::from([("memory.high".to_string(), "50000000".to_string())]),
        ..Default::default()
    };
    let bpf = FakeBpf::new();
    cg.apply(&bpf, &res, false).unwrap();
    // No device rules in the spec: runc's default allowances, everything else denied.
    assert_eq!(bpf.attached.borrow().ids, vec![1]);
    assert_eq!(content(dir, "memory.max"), "67108864");
    assert_eq!(content(dir, "memory.swap.max"), (128u64 << 20).to_string());
    assert_eq!(content(dir, "memory.low"), "max");
    assert_eq!(content(dir, "memory.high"), "50000000");
    assert_eq!(content(dir, "cpu.weight"), "39");
    assert_eq!(content(dir, "cpu.max"), "max 100000");
    assert_eq!(content(dir, "cpu.max.burst"), "0");
    assert_eq!(content(dir, "cpu.idle"), "1");
    assert_eq!(content(dir, "cpuset.cpus"), "1");
    assert_eq!(content(dir, "pids.max"), "32");
    assert_eq!(content(dir, "io.weight"), "4950");
    assert_eq!(content(dir, "io.max"), "8:0 rbps=10 wiops=20");
    assert_eq!(content(dir, "hugetlb.1GB.max"), (1u64 << 30).to_string());

    // A quota without a period leaves the period alone.
    let res = LinuxResources {
        cpu: Some(Cpu {
            quota: Some(20_000),
            ..Default::default()
        }),
        ..Default::default()
    };
    cg.apply(&bpf, &res, true).unwrap();
    assert_eq!(content(dir, "cpu.max"), "20000");
    // An update without device rules leaves the program alone; one with rules replaces it.
    assert_eq!(bpf.programs.borrow().len(), 1);
    let res = LinuxResources {
        devices: vec![DeviceCgroup {
            allow: true,
            typ: Some("c".into()),
            major: Some(1),
            minor: Some(11),
            access: Some("r".into()),
        }],
        ..Default::default()
    };
    cg.apply(&bpf, &res, true).unwrap();
    assert_eq!(bpf.attached.borrow().ids, vec![2]);
    let invalid = LinuxResources {
        devices: vec![DeviceCgroup {
            typ: Some("x".into()),
            ..Default::default()
        }],
        memory: Some(Memory {
            limit: Some(1 << 20),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(cg.apply(&bpf, &invalid, false).is_err());
    assert_eq!(
        content(dir, "memory.max"),
        "67108864",
        "nothing written before the rules are checked"
    );
}

#[test]
fn v2_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cg = v2_cgroup(dir.path());
    for key in ["../memory.max", "a/b", "x..y", ""] {
        let res = LinuxResources {
            unified: BTreeMap::from([(key.to_string(), "1".to_string())]),
            ..Default::default()
        };
        let err = cg.apply(&FakeBpf::new(), &res, false).unwrap_err();
        assert!(matches!(err, CgroupError::Invalid { .. }), "{key}: {err}");
    }
    let res = LinuxResources {
        unified: BTreeMap::from([("hugetlb.2MB.max".to_string(), "1".to_string())]),
        ..Default::default()
    };
    let err = cg.apply(&FakeBpf::new(), &res, false).unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotEnabled { controller, .. } if controller == "hugetlb"),
        "{err}"
    );
    let res = LinuxResources {
        cpu: Some(Cpu {
            realtime_runtime: Some(1000),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        cg.apply(&FakeBpf::new(), &res, false).unwrap_err(),
        CgroupError::Unsupported { .. }
    ));
    let res = LinuxResources {
        memory: Some(Memory {
            swap: Some(1 << 20),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        cg.apply(&FakeBpf::new(), &res, false).unwrap_err(),
        CgroupError::Invalid { .. }
    ));
    // No swap accounting: unlimited swap needs no file.
    fake(dir.path(), &[("memory.max", "")]);
    let res = LinuxResources {
        memory: Some(Memory {
            limit: Some(1 << 20),
            swap: Some(-1),
            ..Default::default()
        }),
        ..Default::default()
    };
    cg.apply(&FakeBpf::new(), &res, false).unwrap();
    // checkBeforeUpdate refuses a limit below the usage.
    fake(dir.path(), &[("memory.current", "4096\n")]);
    let res = LinuxResources {
        memory: Some(Memory {
            limit: Some(4096),
            check_before_update: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(cg.apply(&FakeBpf::new(), &res, true).is_err());
    cg.apply(&FakeBpf::new(), &res, false).unwrap();
}

#[test]
fn v1_create_initialises_cpuset_levels() {
    let root = tempfile::tempdir().unwrap();
    let cpuset_root = root.path().join("cpuset");
    fake(
        &cpuset_root,
        &[("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")],
    );
    // Levels the kernel would create with empty cpuset files.
    let mid = cpuset_root.join("kapsel");
    let leaf = mid.join("web");
    fake(&mid, &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")]);
    fake(&leaf, &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")]);
    let cg = Cgroup {
        v2: false,
        paths: BTreeMap::from([
            ("cpuset".to_string(), leaf.clone()),
            ("memory".to_string(), root.path().join("memory/kapsel/web")),
        ]),
    };
    cg.create().unwrap();
    assert!(root.path().join("memory/kapsel/web").is_dir());
    assert_eq!(content(&mid, "cpuset.cpus"), "0-1");
    assert_eq!(content(&leaf, "cpuset.cpus"), "0-1");
    assert_eq!(content(&leaf, "cpuset.mems"), "0");
    assert_eq!(content(&cpuset_root, "cpuset.cpus"), "0-1\n");
}

#[test]
fn v2_create_enables_controllers_in_ancestors() {
    let root = tempfile::tempdir().unwrap();
    let top = root.path().join("cgroup");
    fake(
        &top,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", "cpu memory\n"),
        ],
    );
    let mid = top.join("kapsel");
    fake(
        &mid,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", ""),
        ],
    );
    let leaf = mid.join("web");
    let cg = v2_cgroup(&leaf);
    cg.create().unwrap();
    assert!(leaf.is_dir());
    assert_eq!(content(&top, "cgroup.subtree_control"), "+cpuset +io +pids");
    assert_eq!(
        content(&mid, "cgroup.subtree_control"),
        "+cpuset +cpu +io +memory +pids"
    );
    assert!(!leaf.join("cgroup.subtree_control").exists());
}

#[test]
fn destroy_removes_nested_dirs_and_only_those() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["cpu", "cpuacct", "memory"]);
    // cpu and cpuacct co-mounted: one directory.
    let mut cg = cg;
    let shared = root.path().join("cpu,cpuacct/ctr");
    cg.paths.insert("cpu".into(), shared.clone());
    cg.paths.insert("cpuacct".into(), shared.clone());
    std::fs::create_dir_all(shared.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(cg.paths["memory"].join("sub")).unwrap();
    cg.destroy().unwrap();
    assert!(!shared.exists());
    assert!(!cg.paths["memory"].exists());
    assert!(root.path().join("memory").is_dir());
    assert!(root.path().join("cpu,cpuacct").is_dir());
    // Already gone is fine.
    cg.destroy().unwrap();
}

#[test]
fn pids_processes_freezer_and_oom() {
    let root = tempfile::tempdir().unwrap();
    let cg = v1_cgroup(root.path(), &["pids", "freezer", "memory", "name=systemd"]);
    assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    fake(&cg.paths["pids"], &[("cgroup.procs", "12\n7\n")]);
    fake(&cg.paths["pids"].join("sub"), &[("cgroup.procs", "30\n")]);
    assert_eq!(cg.pids().unwrap(), vec![7, 12, 30]);

    for dir in cg.paths.values() {
        fake(dir, &[("cgroup.procs", "")]);
    }
    cg.add_process(4242).unwrap();
    assert!(cg.add_process(0).is_err());
    for dir in cg.paths.values() {
        assert_eq!(content(dir, "cgroup.procs"), "4242");
    }

    let freezer = &cg.paths["freezer"];
    fake(freezer, &[("freezer.state", "THAWED\n")]);
    assert!(!cg.is_frozen().unwrap());
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());

    assert_eq!(cg.oom_kills(), None);
    fake(
        &cg.paths["memory"],
        &[(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )],
    );
    assert_eq!(cg.oom_kills(), Some(3));

    let dir = tempfile::tempdir().unwrap();
    let cg = v2_cgroup(dir.path());
    fake(
        dir.path(),
        &[
            ("cgroup.events", "populated 1\nfrozen 1\n"),
            ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
        ],
    );
    assert!(cg.is_frozen().unwrap());
    assert_eq!(cg.oom_kills(), Some(1));
}

#[test]
fn cgroup_round_trips_through_json() {
    let cg = Cgroup::resolve(
        super::paths::tests::MOUNTINFO_V1_SEPARATE,
        super::paths::tests::PROC_CGROUP_V1,
        Some("/kapsel/web"),
        "web",
    )
    .unwrap();
    let json = serde_json::to_string(&cg).unwrap();
    assert_eq!(serde_json::from_str::<Cgroup>(&json).unwrap(), cg);
}

/// As root on a cgroup v1 host (the integration job runs it with `--ignored`): resolve, create,
/// a memory limit, a `sleep` child moved in, statistics, destroy. Uses an absolute cgroupsPath
/// so nothing lands inside the cgroup this process was started in.
#[test]
#[ignore = "needs root and a cgroup v1 host"]
fn real_host_v1_roundtrip() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping real_host_v1_roundtrip: not root");
        return;
    }
    let name = format!("/kapsel-test-{}", std::process::id());
    let cg = Cgroup::for_host(Some(&name), "roundtrip").unwrap();
    if cg.v2 {
        eprintln!("skipping real_host_v1_roundtrip: this host uses cgroup v2");
        return;
    }
    let memory = cg.paths["memory"].clone();
    assert!(memory.ends_with(&name[1..]));
    cg.create().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let res = LinuxResources {
            memory: Some(Memory {
                limit: Some(64 << 20),
                swap: Some(64 << 20),
                ..Default::default()
            }),
            cpu: Some(Cpu {
                shares: Some(512),
                cpus: Some("0".into()),
                ..Default::default()
            }),
            pids: Some(Pids { limit: 10 }),
            devices: vec![DeviceCgroup {
                allow: false,
                access: Some("rwm".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        cg.apply(&crate::syscall::linux::Linux, &res, false)
            .unwrap();
        assert_eq!(
            content(&memory, "memory.limit_in_bytes").trim(),
            (64u64 << 20).to_string()
        );
        // hugetlb is mounted on some hosts and not on others: both answers are checked.
        let huge = LinuxResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Default::default()
        };
        match cg.paths.get("hugetlb") {
            Some(dir) => {
                cg.apply(&crate::syscall::linux::Linux, &huge, false)
                    .unwrap();
                let limit = content(dir, "hugetlb.2MB.limit_in_bytes");
                assert_eq!(limit.trim(), (4u64 << 20).to_string());
            }
            None => assert!(matches!(
                cg.apply(&crate::syscall::linux::Linux, &huge, false)
                    .unwrap_err(),
                CgroupError::NotMounted { .. }
            )),
        }
        let pid = i32::try_from(child.id()).unwrap();
        cg.add_process(pid).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![pid]);
        let own_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            own_cgroup.contains(&format!("memory:{name}")),
            "{own_cgroup}"
        );
        if cg.paths.contains_key("freezer") {
            cg.freeze().unwrap();
            assert!(cg.is_frozen().unwrap());
            cg.thaw().unwrap();
            assert!(!cg.is_frozen().unwrap());
        }
        let stats = cg.stats().unwrap();
        assert_eq!(stats.memory.usage.limit, 64 << 20);
        // v1 leaves a moved task's earlier charges behind (move_charge_at_immigrate is 0), so
        // the usage of a just-moved `sleep` may well be 0.
        assert_eq!(stats.pids.current, 1);
        assert_eq!(stats.pids.limit, 10);
        assert_eq!(stats.cpuset.cpus, vec![0]);
        assert_eq!(cg.oom_kills(), Some(0));
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json["memory"]["raw"]["rss"].is_u64(), "{json}");
        eprintln!("stats: {json}");
        // A cgroup with a live task cannot go: destroy retries EBUSY for a while, then says so.
        let started = std::time::Instant::now();
        let err = cg.destroy().unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        assert!(
            started.elapsed() >= REMOVE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        // Lowering memory+swap and memory together on update takes the ordered path.
        let update = LinuxResources {
            memory: Some(Memory {
                limit: Some(32 << 20),
                swap: Some(48 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        cg.apply(&crate::syscall::linux::Linux, &update, true)
            .unwrap();
        assert_eq!(
            content(&memory, "memory.limit_in_bytes").trim(),
            (32u64 << 20).to_string()
        );
    }));
    let _ = child.kill();
    let _ = child.wait();
    let destroyed = cg.destroy();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    destroyed.unwrap();
    for dir in cg.paths.values() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
