//! The image service on a real content store, native snapshotter and database in a temporary
//! directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use super::*;
use crate::content::local::LocalStore;
use crate::oci::{RootFs, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST};
use crate::snapshots::NativeSnapshotter;

struct Env {
    _dir: tempfile::TempDir,
    svc: Arc<Service>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let sn = NativeSnapshotter::open(&dir.path().join("snapshots")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let svc = Arc::new(Service {
        db,
        store: Arc::new(store),
        content_root: dir.path().join("content"),
        snapshotter: Arc::new(sn),
        events: Events::new(),
        jobs: jobs::Jobs::default(),
        gc_lock: Mutex::new(()),
        insecure: Vec::new(),
        certs_dirs: Vec::new(),
        platform: registry::default_platform(),
    });
    Env { _dir: dir, svc }
}

fn put(svc: &Service, media_type: &str, data: &[u8]) -> Descriptor {
    let d = Digest::of(data);
    let mut w = svc.store.writer(&format!("t-{d}"), None).unwrap();
    w.write_all(data).unwrap();
    w.commit(Some((&d, data.len() as u64)), BTreeMap::new())
        .unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest: d,
        size: data.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
    }
}

/// A one-layer image (an uncompressed tar holding `name` with `content`) behind an index.
fn image(svc: &Service, file: &str, content: &[u8], created: &str) -> (Descriptor, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, file, content).unwrap();
    let layer = tar.into_inner().unwrap();
    let l = put(svc, MEDIA_OCI_LAYER, &layer);
    let cfg = ImageConfig {
        created: Some(created.into()),
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(&layer)],
        },
        ..Default::default()
    };
    let c = put(svc, MEDIA_OCI_CONFIG, &serde_json::to_vec(&cfg).unwrap());
    let m = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.into()),
        config: c.clone(),
        layers: vec![l],
        annotations: None,
    };
    let mut md = put(svc, MEDIA_OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
    md.platform = Some(registry::default_platform());
    let ix = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests: vec![md],
        annotations: None,
    };
    (
        put(svc, MEDIA_OCI_INDEX, &serde_json::to_vec(&ix).unwrap()),
        c.digest,
    )
}

#[test]
fn summaries_resolve_index_to_config_and_find_by_name_or_id() {
    let e = env();
    let (target, config) = image(&e.svc, "hello", b"hi", "2020-01-02T03:04:05Z");
    e.svc
        .create(
            "",
            "docker.io/library/hello:1",
            target.clone(),
            BTreeMap::new(),
        )
        .unwrap();
    let list = e.svc.list("", "").unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.config.as_ref(), Some(&config));
    assert!(!s.incomplete && !s.unpacked);
    assert_eq!(
        s.config_created,
        time::parse_rfc3339("2020-01-02T03:04:05Z")
    );
    // Not unpacked: the size is that of the blobs.
    assert!(s.size > 0);
    for r in [
        "docker.io/library/hello:1",
        "hello:1",
        &config.hex()[..12],
        config.as_str(),
    ] {
        let f = e.svc.find("", r).unwrap();
        assert_eq!(f[0].record.name, "docker.io/library/hello:1", "{r}");
    }
    assert!(matches!(e.svc.find("", "hello:2"), Err(Error::NotFound(_))));
    assert!(matches!(
        e.svc.find("other", "hello:1"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn create_refuses_a_target_that_is_not_in_the_store() {
    let e = env();
    let missing = Descriptor {
        media_type: MEDIA_OCI_MANIFEST.into(),
        digest: Digest::of(b"nope"),
        size: 4,
        urls: None,
        annotations: None,
        platform: None,
    };
    let err = e
        .svc
        .create("", "docker.io/library/x:1", missing, BTreeMap::new())
        .unwrap_err();
    assert!(matches!(err, Error::Incomplete { .. }), "{err}");
    assert_eq!(err.code(), code::DATA_LOSS);
    assert!(e.svc.list("", "").unwrap().is_empty());
}

#[test]
fn delete_untags_then_removes_the_image_and_its_blobs() {
    let e = env();
    let (target, config) = image(&e.svc, "a", b"a", "2020-01-01T00:00:00Z");
    let (other, _) = image(&e.svc, "b", b"b", "2021-01-01T00:00:00Z");
    e.svc
        .create("", "docker.io/library/a:1", target.clone(), BTreeMap::new())
        .unwrap();
    e.svc.tag("", "a:1", "127.0.0.1:5000/a:2").unwrap();
    e.svc
        .create("", "docker.io/library/b:1", other, BTreeMap::new())
        .unwrap();
    let ev = e.svc.events.subscribe(0, std::time::Duration::ZERO, &[]);
    assert_eq!(ev.events.len(), 3);

    // By id with two names: refused without force.
    let err = e
        .svc
        .delete("", &config.hex()[..12], false, false)
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(err.code(), code::FAILED_PRECONDITION);

    // By name: untag only, the image stays (the other name holds it).
    let d = e.svc.delete("", "a:1", false, false).unwrap();
    assert_eq!(d.untagged, ["docker.io/library/a:1"]);
    assert!(d.deleted.is_empty(), "{d:?}");
    e.svc.store.info(&target.digest).unwrap();

    // The last name: the image id and its four blobs go; the other image stays whole.
    let before = e.svc.store.list().unwrap().len();
    let d = e
        .svc
        .delete("", "127.0.0.1:5000/a:2", false, false)
        .unwrap();
    assert_eq!(d.deleted[0], config.to_string());
    assert_eq!(d.deleted.len(), 4, "{d:?}");
    assert_eq!(e.svc.store.list().unwrap().len(), before - 4);
    let left = e.svc.list("", "").unwrap();
    assert_eq!(left.len(), 1);
    assert!(!left[0].incomplete);
}

#[test]
fn prune_removes_dangling_records_and_all_with_all() {
    let e = env();
    let (t1, _) = image(&e.svc, "a", b"a", "2020-01-01T00:00:00Z");
    let (t2, _) = image(&e.svc, "b", b"b", "2020-01-01T00:00:00Z");
    e.svc
        .create("", t1.digest.as_str(), t1.clone(), BTreeMap::new())
        .unwrap();
    e.svc
        .create("", "docker.io/library/b:1", t2, BTreeMap::new())
        .unwrap();
    let d = e.svc.prune("", false).unwrap();
    assert_eq!(d.untagged, [t1.digest.to_string()]);
    assert!(d.bytes > 0);
    assert_eq!(e.svc.list("", "").unwrap().len(), 1);
    let d = e.svc.prune("", true).unwrap();
    assert_eq!(d.untagged, ["docker.io/library/b:1"]);
    assert!(e.svc.store.list().unwrap().is_empty());
}

#[test]
fn import_unpacks_and_records_then_export_round_trips() {
    let e = env();
    let (target, config) = image(&e.svc, "etc/hello", b"hello", "2020-01-01T00:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("x.tar");
    crate::archive::export(
        &*e.svc.store,
        &[("docker.io/library/hello:1".to_string(), target)],
        std::fs::File::create(&tar).unwrap(),
        crate::archive::Format::OciLayout,
    )
    .unwrap();

    let e2 = env();
    let job = e2
        .svc
        .start_import(transfer::ImportArgs {
            namespace: String::new(),
            path: tar.display().to_string(),
            no_unpack: false,
        })
        .unwrap();
    let mut s = job.wait(0, std::time::Duration::from_secs(30));
    while !s.done {
        s = job.wait(s.version, std::time::Duration::from_secs(30));
    }
    assert_eq!(s.error, None);
    assert_eq!(s.messages, ["Loaded image: hello:1"]);
    let list = e2.svc.list("", "").unwrap();
    assert_eq!(list[0].config.as_ref(), Some(&config));
    assert!(list[0].unpacked);
    // No lease outlives the job.
    assert!(e2.svc.db.leases().unwrap().is_empty());
    // A missing archive: the job fails with NOT_FOUND naming the file.
    let job = e2
        .svc
        .start_import(transfer::ImportArgs {
            namespace: String::new(),
            path: "/nonexistent/kcore.tar".into(),
            no_unpack: false,
        })
        .unwrap();
    let mut s = job.wait(0, std::time::Duration::from_secs(30));
    while !s.done {
        s = job.wait(s.version, std::time::Duration::from_secs(30));
    }
    let (c, msg) = s.error.unwrap();
    assert_eq!(c, code::NOT_FOUND);
    assert!(msg.contains("/nonexistent/kcore.tar"), "{msg}");
}
