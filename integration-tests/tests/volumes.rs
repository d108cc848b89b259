//! Volumes through kapseld and the `kapsel` CLI, as a Docker user expects them: named volumes
//! that outlive their containers and are shared, anonymous ones that `rm -v` and `--rm`
//! take along, Docker's copy-up from the image, `volume create | ls | inspect | rm | prune`,
//! and what kapseld's start does with a volume directory a crash left without a record.
//!
//! kapseld runs as containers.rs runs it (`kapseld::Kapseld`, binaries as described there).

use std::path::PathBuf;
use std::time::Duration;

use kapsel_integration_tests::kapseld::{load_image_with_volumes, wait_for, Kapseld};

fn start() -> Kapseld {
    let k = Kapseld::start_tagged("kvol");
    k.load_busybox();
    k
}

fn volume_names(k: &Kapseld, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "-q"];
    args.extend_from_slice(extra);
    k.ok(&args).stdout.lines().map(str::to_string).collect()
}

/// `run -d --name NAME -v VOLUME... busybox sleep 1000`; its id.
fn sleeper(k: &Kapseld, name: &str, volumes: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    for v in volumes {
        args.extend(["-v", *v]);
    }
    args.extend(["busybox", "sleep", "1000"]);
    k.ok(&args).stdout.trim().to_string()
}

fn data_dir(k: &Kapseld, name: &str) -> PathBuf {
    k.dir.join("root/volumes").join(name).join("_data")
}

#[test]
fn a_named_volume_outlives_its_containers_and_is_shared() {
    let k = start();
    // Made by the first -v that names it; what it holds survives the container's --rm.
    k.ok(&[
        "run",
        "--rm",
        "-v",
        "kvdata:/data",
        "busybox",
        "sh",
        "-c",
        "echo first > /data/f",
    ]);
    assert_eq!(volume_names(&k, &[]), ["kvdata"]);
    let table = k.ok(&["volume", "ls"]).stdout;
    assert_eq!(
        table, "DRIVER    VOLUME NAME\nlocal     kvdata\n",
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string(data_dir(&k, "kvdata").join("f")).unwrap(),
        "first\n"
    );
    // Two containers share it, one read-only.
    let a = sleeper(&k, "kva", &["kvdata:/data"]);
    let b = sleeper(&k, "kvb", &["kvdata:/data:ro"]);
    assert_eq!(k.ok(&["exec", "kvb", "cat", "/data/f"]).stdout, "first\n");
    k.ok(&["exec", "kva", "sh", "-c", "echo second > /data/g"]);
    assert_eq!(k.ok(&["exec", "kvb", "cat", "/data/g"]).stdout, "second\n");
    let out = k.kapsel(&["exec", "kvb", "touch", "/data/h"]).fails();
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    let m = k.inspect("kva")["Mounts"][0].clone();
    assert_eq!(m["Type"], "volume", "{m}");
    assert_eq!(m["Name"], "kvdata", "{m}");
    assert_eq!(m["Destination"], "/data", "{m}");
    assert_eq!(m["Driver"], "local", "{m}");
    assert_eq!(m["RW"], true, "{m}");
    assert_eq!(
        m["Source"].as_str().unwrap(),
        data_dir(&k, "kvdata").to_str().unwrap()
    );
    assert_eq!(k.inspect("kvb")["Mounts"][0]["RW"], false);
    assert_eq!(
        volume_names(&k, &["-f", "dangling=true"]),
        Vec::<String>::new()
    );

    // In use, running or stopped: refused (with -f too), naming the volume and its users.
    for args in [
        &["volume", "rm", "kvdata"][..],
        &["volume", "rm", "-f", "kvdata"][..],
    ] {
        let out = k.kapsel(args).fails();
        assert_eq!(out.exit_code(), 1, "{out}");
        assert!(
            out.stderr.contains("remove kvdata: volume is in use")
                && out.stderr.contains(&a)
                && out.stderr.contains(&b),
            "{out}"
        );
    }
    k.ok(&["rm", "-f", "-v", "kva"]);
    k.ok(&["stop", "-t", "0", "kvb"]);
    let out = k.kapsel(&["volume", "rm", "kvdata"]).fails();
    assert!(out.stderr.contains(&b) && !out.stderr.contains(&a), "{out}");
    // rm -v never takes a named volume.
    k.ok(&["rm", "-v", "kvb"]);
    assert_eq!(
        std::fs::read_to_string(data_dir(&k, "kvdata").join("g")).unwrap(),
        "second\n"
    );
    assert_eq!(volume_names(&k, &["-f", "dangling=true"]), ["kvdata"]);
    assert_eq!(k.ok(&["volume", "rm", "kvdata"]).stdout, "kvdata\n");
    assert!(!data_dir(&k, "kvdata").parent().unwrap().exists());
    assert_eq!(volume_names(&k, &[]), Vec::<String>::new());
}

#[test]
fn anonymous_volumes_are_kept_by_rm_and_removed_by_rm_v_and_run_rm() {
    let k = start();
    sleeper(&k, "kvanon", &["/anon"]);
    k.ok(&["exec", "kvanon", "sh", "-c", "echo x > /anon/x"]);
    let m = k.inspect("kvanon")["Mounts"][0].clone();
    let name = m["Name"].as_str().unwrap().to_string();
    assert!(
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "{m}"
    );
    assert_eq!(m["Destination"], "/anon");
    let v = serde_json::from_str::<serde_json::Value>(&k.ok(&["volume", "inspect", &name]).stdout)
        .unwrap()[0]
        .clone();
    assert_eq!(v["Labels"]["com.docker.volume.anonymous"], "", "{v}");
    // rm keeps it (dangling now, its data there).
    k.ok(&["rm", "-f", "kvanon"]);
    assert_eq!(volume_names(&k, &["-f", "dangling=true"]), [name.as_str()]);
    assert_eq!(
        std::fs::read_to_string(data_dir(&k, &name).join("x")).unwrap(),
        "x\n"
    );
    // rm -v removes the container's anonymous volumes, records and directories.
    sleeper(&k, "kvanon2", &["/anon", "kvnamed:/n"]);
    let anon2 = k.inspect("kvanon2")["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/anon")
        .unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(data_dir(&k, &anon2).is_dir());
    k.ok(&["rm", "-f", "-v", "kvanon2"]);
    assert!(!data_dir(&k, &anon2).exists());
    let mut left = volume_names(&k, &[]);
    left.sort();
    let mut want = vec![name.clone(), "kvnamed".to_string()];
    want.sort();
    assert_eq!(left, want);
    // run --rm removes its anonymous volumes at exit, keeps named ones.
    let out = k.ok(&[
        "run",
        "--rm",
        "-v",
        "/tmpvol",
        "-v",
        "kvnamed:/n",
        "busybox",
        "sh",
        "-c",
        "echo y > /tmpvol/y; echo n > /n/n; cat /tmpvol/y",
    ]);
    assert_eq!(out.stdout, "y\n", "{out}");
    wait_for("the --rm container gone", Duration::from_secs(10), || {
        k.ok(&["ps", "-aq"]).stdout.is_empty()
    });
    let mut left = volume_names(&k, &[]);
    left.sort();
    assert_eq!(left, want);
    assert_eq!(
        std::fs::read_to_string(data_dir(&k, "kvnamed").join("n")).unwrap(),
        "n\n"
    );
}

#[test]
fn an_empty_volume_is_seeded_from_the_image_once() {
    let k = start();
    load_image_with_volumes(&k);
    // `run --rm -v VOLUME IMAGE sh -c SCRIPT`'s output.
    let run = |volume: &str, image: &str, script: &str| {
        k.ok(&["run", "--rm", "-v", volume, image, "sh", "-c", script])
            .stdout
    };
    // A named volume over a path the image fills: the image's files, owners and modes.
    let out = run(
        "kvseed:/data",
        "kgaps-vol:1",
        "cat /data/seed; stat -c %u:%g /data /data/seed",
    );
    assert_eq!(out, "seeded\n1000:1000\n1000:1000\n");
    // Not empty any more: what the next container finds is what the last one left.
    run(
        "kvseed:/data",
        "kgaps-vol:1",
        "echo changed > /data/seed; echo more > /data/more",
    );
    let out = run("kvseed:/data", "kgaps-vol:1", "cat /data/seed /data/more");
    assert_eq!(out, "changed\nmore\n");
    // Mounted elsewhere (a path the image lacks), it is the same volume, not re-seeded.
    assert_eq!(
        run("kvseed:/elsewhere", "busybox", "ls /elsewhere"),
        "more\nseed\n"
    );
    // A new volume on a path busybox lacks stays empty.
    assert_eq!(run("kvempty:/data", "busybox", "ls -A /data"), "");
    // No scratch directory is left beside the volumes' _data.
    for v in ["kvseed", "kvempty"] {
        let names: Vec<String> = std::fs::read_dir(k.dir.join("root/volumes").join(v))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["_data"], "{v}");
    }
}

#[test]
fn volume_verbs_create_ls_inspect_prune() {
    let k = start();
    assert_eq!(
        k.ok(&["volume", "create", "--label", "tier=db", "kvkeep"])
            .stdout,
        "kvkeep\n"
    );
    // Creating it again returns the same volume.
    assert_eq!(k.ok(&["volume", "create", "kvkeep"]).stdout, "kvkeep\n");
    k.ok(&["volume", "create", "kvplain"]);
    let plain: serde_json::Value =
        serde_json::from_str(&k.ok(&["volume", "inspect", "kvplain"]).stdout).unwrap();
    assert_eq!(plain[0]["Labels"], serde_json::Value::Null, "{plain}");
    assert_eq!(plain[0]["Options"], serde_json::Value::Null, "{plain}");
    k.ok(&["volume", "rm", "kvplain"]);
    let anon = k.ok(&["volume", "create"]).stdout.trim().to_string();
    assert_eq!(anon.len(), 64);
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["volume", "inspect", "kvkeep"]).stdout).unwrap();
    let v = &v[0];
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "CreatedAt",
            "Driver",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope"
        ]
    );
    assert_eq!(v["Name"], "kvkeep");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["tier"], "db");
    assert_eq!(
        v["Mountpoint"].as_str().unwrap(),
        data_dir(&k, "kvkeep").to_str().unwrap()
    );
    assert!(v["CreatedAt"].as_str().unwrap().ends_with('Z'), "{v}");
    // `kapsel inspect` finds volumes too (after containers and images).
    let any: serde_json::Value =
        serde_json::from_str(&k.ok(&["inspect", "kvkeep"]).stdout).unwrap();
    assert_eq!(&any[0], v);
    let json = k
        .ok(&["volume", "ls", "--format", "json", "-f", "label=tier=db"])
        .stdout;
    let line: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(line["Name"], "kvkeep", "{json}");
    assert_eq!(line["Labels"], "tier=db", "{json}");
    assert_eq!(volume_names(&k, &["-f", "name=keep"]), ["kvkeep"]);

    // An anonymous volume in use, one unused, a named one unused: prune takes only the
    // unused anonymous one; -a takes the named one too; the one in use stays.
    sleeper(&k, "kvuser", &["/busy"]);
    let busy = k.inspect("kvuser")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = k.ok(&["volume", "prune", "-f"]);
    assert!(
        out.stdout.starts_with(&format!(
            "Deleted Volumes:\n{anon}\n\nTotal reclaimed space:"
        )),
        "{out}"
    );
    let mut left = volume_names(&k, &[]);
    left.sort();
    let mut want = vec![busy.clone(), "kvkeep".to_string()];
    want.sort();
    assert_eq!(left, want);
    let out = k.ok(&["volume", "prune", "-a", "-f"]);
    assert!(
        out.stdout.contains("kvkeep\n") && !out.stdout.contains(&busy),
        "{out}"
    );
    assert_eq!(volume_names(&k, &[]), [busy.as_str()]);
    // system prune --volumes: the stopped container, then its anonymous volume.
    k.ok(&["rm", "-f", "kvuser"]);
    let out = k.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.stdout.contains(&busy), "{out}");
    assert_eq!(volume_names(&k, &[]), Vec::<String>::new());
}

#[test]
fn bad_volume_input_fails_as_docker_and_leaves_nothing() {
    let k = start();
    for bad in ["a/b", "x", "_under", "dä"] {
        let out = k.kapsel(&["volume", "create", bad]).fails();
        assert_eq!(out.exit_code(), 1, "{out}");
        assert!(
            out.stderr.contains(&format!(
                "\"{bad}\" includes invalid characters for a local volume name"
            )),
            "{out}"
        );
    }
    let out = k
        .kapsel(&["run", "--rm", "-v", "a/b:/x", "busybox", "true"])
        .fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(
        out.stderr.contains("\"a/b\" includes invalid characters"),
        "{out}"
    );
    let out = k
        .kapsel(&["create", "-v", "ok-vol:data", "busybox", "true"])
        .fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert!(
        out.stderr.contains("container path must be absolute"),
        "{out}"
    );
    // A run that fails after its volumes were planned (a bind source that does not exist)
    // leaves no container and no anonymous volume.
    let out = k
        .kapsel(&[
            "run",
            "--rm",
            "-v",
            "/nonexistent-kvol:/h",
            "-v",
            "/anon",
            "busybox",
            "true",
        ])
        .fails();
    assert_eq!(out.exit_code(), 125, "{out}");
    assert_eq!(k.ok(&["ps", "-aq"]).stdout, "");
    assert_eq!(volume_names(&k, &[]), Vec::<String>::new());
    let entries = std::fs::read_dir(k.dir.join("root/volumes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(entries, 0);

    for args in [
        &["volume", "rm", "nope-kvol"][..],
        &["volume", "inspect", "nope-kvol"][..],
    ] {
        let out = k.kapsel(args).fails();
        assert_eq!(out.exit_code(), 1, "{out}");
        assert!(out.stderr.contains("no such volume: nope-kvol"), "{out}");
    }
    // -f: an unknown volume is no error.
    k.ok(&["volume", "rm", "-f", "nope-kvol"]);
    let out = k.kapsel(&["volume", "ls", "-f", "colour=red"]).fails();
    assert!(
        out.stderr.contains("invalid filter \"colour=red\""),
        "{out}"
    );
}

#[test]
fn kapselds_start_removes_volume_directories_without_a_record() {
    let mut k = start();
    k.ok(&["volume", "create", "kvreal"]);
    let stray = k.dir.join("root/volumes/kvstray/_data");
    std::fs::create_dir_all(&stray).unwrap();
    let scratch = k.dir.join("root/volumes/kvreal/_seed-0123");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(data_dir(&k, "kvreal").join("keep"), "k").unwrap();
    k.signal(libc::SIGKILL);
    wait_for("kapseld gone", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&k.sock).is_err()
    });
    k.spawn();
    assert_eq!(volume_names(&k, &[]), ["kvreal"]);
    assert!(!stray.parent().unwrap().exists());
    assert!(!scratch.exists());
    assert!(data_dir(&k, "kvreal").join("keep").is_file());
}
