use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::oci::{Descriptor, Digest, MEDIA_OCI_MANIFEST};

fn desc(data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: MEDIA_OCI_MANIFEST.to_string(),
        digest: Digest::of(data),
        size: data.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
    }
}

fn rec(name: &str, data: &[u8]) -> ImageRecord {
    ImageRecord {
        name: name.to_string(),
        target: desc(data),
        labels: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn fresh_database_has_current_schema_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(db.list_images("default").unwrap().is_empty());
    assert!(db.namespaces().unwrap().is_empty());
    drop(db);
    // Reopening an up-to-date file changes nothing.
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn images_put_get_list_delete_keep_created_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let (a, old) = db
        .put_image("default", rec("docker.io/library/a:1", b"a"))
        .unwrap();
    assert!(old.is_none());
    assert!(a.created_at > 0 && a.created_at == a.updated_at);
    db.put_image("default", rec("docker.io/library/b:1", b"b"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let (a2, old) = db
        .put_image("default", rec("docker.io/library/a:1", b"a2"))
        .unwrap();
    assert_eq!(old.unwrap().target, desc(b"a"));
    assert_eq!(a2.created_at, a.created_at);
    assert!(a2.updated_at > a.updated_at);
    let names: Vec<String> = db
        .list_images("default")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["docker.io/library/a:1", "docker.io/library/b:1"]);
    assert_eq!(
        db.get_image("default", "docker.io/library/a:1")
            .unwrap()
            .target,
        desc(b"a2")
    );
    db.delete_image("default", "docker.io/library/a:1").unwrap();
    assert!(matches!(
        db.get_image("default", "docker.io/library/a:1"),
        Err(Error::ImageNotFound { .. })
    ));
    assert!(matches!(
        db.delete_image("default", "docker.io/library/a:1"),
        Err(Error::ImageNotFound { .. })
    ));
    assert!(matches!(
        db.update_image("default", rec("nope", b"x")),
        Err(Error::ImageNotFound { .. })
    ));
    assert_eq!(db.count_images().unwrap(), 1);
}

#[test]
fn namespaces_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    db.put_image("default", rec("x:1", b"1")).unwrap();
    db.put_image("k8s.io", rec("x:1", b"2")).unwrap();
    // "defaulta" sorts right after "default": a range scan must stop at the namespace boundary.
    db.put_image("defaulta", rec("y:1", b"3")).unwrap();
    assert_eq!(db.list_images("default").unwrap().len(), 1);
    assert_eq!(db.get_image("k8s.io", "x:1").unwrap().target, desc(b"2"));
    assert_eq!(db.get_image("default", "x:1").unwrap().target, desc(b"1"));
    db.delete_image("k8s.io", "x:1").unwrap();
    assert!(db.get_image("default", "x:1").is_ok());
    assert_eq!(db.namespaces().unwrap(), ["default", "defaulta", "k8s.io"]);
    assert_eq!(db.all_images().unwrap().len(), 2);
    for bad in ["", "Default", "-x", "a/b", "a\0"] {
        assert!(
            matches!(db.list_images(bad), Err(Error::InvalidNamespace(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        db.put_image("default", rec("", b"")),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn leases_hold_resources_until_deleted_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    db.create_lease("default", "pull-1", None).unwrap();
    assert!(matches!(
        db.create_lease("default", "pull-1", None),
        Err(Error::LeaseExists { .. })
    ));
    db.create_lease("other", "pull-1", Some(Duration::from_secs(0)))
        .unwrap();
    let c = Resource::Content(Digest::of(b"blob"));
    let s = Resource::Snapshot {
        snapshotter: "overlayfs".into(),
        key: "extract-1 sha256:x".into(),
    };
    db.add_lease_resource("default", "pull-1", &c).unwrap();
    db.add_lease_resource("default", "pull-1", &s).unwrap();
    db.add_lease_resource("other", "pull-1", &Resource::Content(Digest::of(b"o")))
        .unwrap();
    assert!(matches!(
        db.add_lease_resource("default", "nope", &c),
        Err(Error::LeaseNotFound { .. })
    ));
    let mut held = db.leased_resources().unwrap();
    held.sort();
    assert_eq!(held.len(), 3);
    assert!(held.contains(&c) && held.contains(&s));
    // The expired one (ttl 0) goes, with its resources.
    let gone = db.expire_leases(now_nanos()).unwrap();
    assert_eq!(gone, [("other".to_string(), "pull-1".to_string())]);
    assert_eq!(db.leased_resources().unwrap().len(), 2);
    db.delete_lease("default", "pull-1").unwrap();
    assert!(db.leased_resources().unwrap().is_empty());
    assert!(db.leases().unwrap().is_empty());
}

#[test]
fn schema_1_file_is_migrated_into_the_default_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        // Write a file the way schema 1 did: one `images` table keyed by name, no version key.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(migrate::IMAGES_V1).unwrap();
            for (name, data, created) in [("a:1", b"a", 100i64), ("b:2", b"b", 200)] {
                let v1 = migrate::ImageRecordV1 {
                    name: name.to_string(),
                    target: desc(data),
                    labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
                    created_at: created,
                };
                t.insert(name, serde_json::to_vec(&v1).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    let imgs = db.list_images("default").unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0].name, "a:1");
    assert_eq!(imgs[0].target, desc(b"a"));
    assert_eq!((imgs[0].created_at, imgs[0].updated_at), (100, 100));
    assert_eq!(imgs[1].labels["k"], "v");
    assert_eq!(db.namespaces().unwrap(), ["default"]);
    // The new tables exist: leases work on the migrated file.
    db.create_lease("default", "l", None).unwrap();
}

#[test]
fn schema_1_file_with_a_corrupt_record_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(migrate::IMAGES_V1)
            .unwrap()
            .insert("bad", b"not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Db::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                table: "images",
                ..
            }
        ),
        "{err}"
    );
    // The failed migration's transaction was dropped: the file still has schema 1's table.
    let db = redb::Database::create(&path).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(migrate::IMAGES_V1).unwrap();
    assert!(t.get("bad").unwrap().is_some());
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    drop(Db::open(&path).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Db::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let _db = Db::open(&path).unwrap();
    let err = Db::open(&path).unwrap_err();
    assert!(err.to_string().contains("meta.redb"), "{err}");
}

const CRASH_ENV: &str = "KAPSEL_METADATA_CRASH_DB";

/// The child of `killed_writer_leaves_a_consistent_database`: writes forever. Each transaction
/// puts image `img-<n>` and a lease `l-<n>` holding one blob, so a torn transaction would show
/// as an image without its lease.
#[test]
#[ignore = "run by killed_writer_leaves_a_consistent_database as a child process"]
fn crash_writer_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let db = Db::open(Path::new(&path)).unwrap();
    let start = db.count_images().unwrap();
    for n in start.. {
        let name = format!("img-{n:08}");
        let lease = format!("l-{n:08}");
        db.write("crash test", |txn| {
            let bytes = serde_json::to_vec(&rec(&name, name.as_bytes())).unwrap();
            txn.open_table(IMAGES)
                .unwrap()
                .insert(("default", name.as_str()), bytes.as_slice())
                .unwrap();
            let l = Lease {
                id: lease.clone(),
                created_at: 1,
                expires_at: None,
                labels: BTreeMap::new(),
            };
            txn.open_table(LEASES)
                .unwrap()
                .insert(
                    ("default", lease.as_str()),
                    serde_json::to_vec(&l).unwrap().as_slice(),
                )
                .unwrap();
            Ok(())
        })
        .unwrap();
        if n == start + 5 {
            // Tell the parent that writes are under way.
            std::fs::write(format!("{path}.started"), b"").unwrap();
        }
    }
}

#[test]
fn killed_writer_leaves_a_consistent_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    drop(Db::open(&path).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut total_seen = 0;
    for round in 0..3u64 {
        let _ = std::fs::remove_file(dir.path().join("meta.redb.started"));
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "metadata::tests::crash_writer_child",
                "--nocapture",
            ])
            .env(CRASH_ENV, &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !dir.path().join("meta.redb.started").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "writer child never started"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "writer child exited early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let it run a varying while, then SIGKILL it wherever it is.
        std::thread::sleep(Duration::from_millis(20 + 37 * round));
        child.kill().unwrap();
        child.wait().unwrap();

        let mut raw = redb::Database::create(&path).unwrap();
        assert!(
            raw.check_integrity().unwrap(),
            "round {round}: integrity check failed"
        );
        drop(raw);
        let db = Db::open(&path).unwrap();
        let images = db.list_images("default").unwrap();
        let leases = db.leases().unwrap();
        assert_eq!(
            images.len(),
            leases.len(),
            "round {round}: torn transaction"
        );
        for (i, (img, (_, lease))) in images.iter().zip(&leases).enumerate() {
            assert_eq!(img.name, format!("img-{i:08}"));
            assert_eq!(lease.id, format!("l-{i:08}"));
        }
        assert!(images.len() > total_seen, "round {round}: no progress");
        total_seen = images.len();
    }
}

fn container(id: &str, name: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        name: name.to_string(),
        image: "busybox".into(),
        image_name: "docker.io/library/busybox:latest".into(),
        image_target: desc(b"m"),
        image_id: Digest::of(b"c").to_string(),
        options: serde_json::json!({"name": name}),
        spec: serde_json::json!({"ociVersion": "1.2.0"}),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.to_string(),
        labels: BTreeMap::new(),
        created_at: 1,
        state: ContainerState::default(),
        volumes: Vec::new(),
    }
}

#[test]
fn container_names_are_unique_per_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    db.create_container("default", &container("a1", "web"))
        .unwrap();
    let e = db
        .create_container("default", &container("b2", "web"))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("the container name \"/web\" is already in use by container \"a1\""),
        "{e}"
    );
    assert!(matches!(
        db.create_container("default", &container("a1", "other")),
        Err(Error::ContainerExists { .. })
    ));
    // Another namespace may use the name.
    db.create_container("ns2", &container("b2", "web")).unwrap();
    db.create_container("default", &container("c3", "db"))
        .unwrap();
    // Renaming onto a taken name fails and changes nothing.
    let e = db
        .update_container("default", "c3", |r| {
            r.name = "web".into();
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(e, Error::ContainerNameInUse { .. }), "{e}");
    assert_eq!(db.get_container("default", "c3").unwrap().name, "db");
    let (r, ()) = db
        .update_container("default", "c3", |r| {
            r.state.status = ContainerStatus::Running;
            r.state.pid = 42;
            Ok(())
        })
        .unwrap();
    assert_eq!(r.state.pid, 42);
    let names: Vec<String> = db
        .list_containers("default")
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["web", "db"]);
    assert_eq!(db.all_containers().unwrap().len(), 3);
    db.delete_container("default", "a1").unwrap();
    assert!(matches!(
        db.get_container("default", "a1"),
        Err(Error::ContainerNotFound { .. })
    ));
    // The name is free again.
    db.create_container("default", &container("d4", "web"))
        .unwrap();
}

fn volume(name: &str, anonymous: bool) -> VolumeRecord {
    VolumeRecord {
        name: name.to_string(),
        created_at: 1,
        labels: BTreeMap::new(),
        anonymous,
    }
}

fn mounting(id: &str, vols: &[&str]) -> ContainerRecord {
    let mut c = container(id, &format!("c{id}"));
    c.volumes = vols
        .iter()
        .map(|v| VolumeMount {
            name: v.to_string(),
            destination: format!("/{v}"),
            read_only: false,
        })
        .collect();
    c
}

#[test]
fn volumes_in_use_are_kept_and_anonymous_ones_go_with_their_container() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let (v, new) = db.create_volume("default", &volume("data", false)).unwrap();
    assert!(new);
    // A second create returns the first record.
    let (again, new) = db.create_volume("default", &volume("data", true)).unwrap();
    assert!(!new);
    assert_eq!(again, v);
    // Two containers share the named volume; each has an anonymous one.
    db.create_container_with_volumes(
        "default",
        &mounting("a1", &["data", "anon1"]),
        &[volume("anon1", true)],
    )
    .unwrap();
    db.create_container_with_volumes(
        "default",
        &mounting("b2", &["data", "anon2"]),
        &[volume("anon2", true)],
    )
    .unwrap();
    let list = db.list_volumes("default").unwrap();
    let users: Vec<(&str, Vec<String>)> = list
        .iter()
        .map(|(v, u)| (v.name.as_str(), u.clone()))
        .collect();
    assert_eq!(
        users,
        [
            ("anon1", vec!["a1".to_string()]),
            ("anon2", vec!["b2".to_string()]),
            ("data", vec!["a1".to_string(), "b2".to_string()]),
        ]
    );
    match db.delete_volume("default", "data", |_| Ok(())) {
        Err(Error::VolumeInUse { name, containers }) => {
            assert_eq!(name, "data");
            assert_eq!(containers, ["a1", "b2"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.delete_volume("default", "nope", |_| Ok(())),
        Err(Error::VolumeNotFound { .. })
    ));
    // Without `anonymous` the volumes stay; with it only the anonymous one goes.
    let (_, gone) = db
        .delete_container_with_volumes("default", "a1", false)
        .unwrap();
    assert!(gone.is_empty());
    let (_, gone) = db
        .delete_container_with_volumes("default", "b2", true)
        .unwrap();
    assert_eq!(gone, [volume("anon2", true)]);
    let names: Vec<String> = db
        .list_volumes("default")
        .unwrap()
        .into_iter()
        .map(|(v, u)| {
            assert!(u.is_empty());
            v.name
        })
        .collect();
    assert_eq!(names, ["anon1", "data"]);
    db.delete_volume("default", "data", |_| Ok(())).unwrap();
    // Another namespace has its own volumes.
    assert!(db.list_volumes("other").unwrap().is_empty());
}

#[test]
fn schema_2_file_gains_the_volumes_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    drop(Db::open(&path).unwrap());
    {
        // Turn the fresh file into what schema 2 wrote: no `volumes` table, container records
        // without `volumes`.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(VOLUMES).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 2)
            .unwrap();
        let mut rec = serde_json::to_value(container(&"c".repeat(64), "old")).unwrap();
        rec.as_object_mut().unwrap().remove("volumes");
        txn.open_table(CONTAINERS)
            .unwrap()
            .insert(
                ("default", "c".repeat(64).as_str()),
                serde_json::to_vec(&rec).unwrap().as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    let c = db.get_container("default", &"c".repeat(64)).unwrap();
    assert!(c.volumes.is_empty());
    assert!(db.list_volumes("default").unwrap().is_empty());
    db.create_volume("default", &volume("data", false)).unwrap();
}
