use std::collections::BTreeMap;
use std::io::Write;

use super::*;
use crate::content::local::LocalStore;
use crate::metadata::ImageRecord;
use crate::oci::{
    RootFs, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
};
use crate::snapshots::NativeSnapshotter;

fn put(store: &LocalStore, media_type: &str, data: &[u8]) -> Descriptor {
    let d = Digest::of(data);
    let mut w = store.writer(&format!("test-{d}"), None).unwrap();
    w.write_all(data).unwrap();
    w.commit(Some((&d, data.len() as u64)), BTreeMap::new())
        .unwrap();
    Descriptor {
        media_type: media_type.to_string(),
        digest: d,
        size: data.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
    }
}

/// An index → manifest → config + layers, all stored; returns (index, config, layers).
fn image(
    store: &LocalStore,
    tag: &str,
    layers: &[&[u8]],
) -> (Descriptor, Descriptor, Vec<Descriptor>) {
    let ls: Vec<Descriptor> = layers
        .iter()
        .map(|l| put(store, MEDIA_OCI_LAYER_GZIP, l))
        .collect();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            // Stand-in diff ids: what matters is the chain id names they give.
            diff_ids: layers
                .iter()
                .map(|l| Digest::of(&[*l, b"-diff".as_slice()].concat()))
                .collect(),
        },
        created: Some(tag.to_string()),
        ..Default::default()
    };
    let c = put(
        store,
        MEDIA_OCI_CONFIG,
        &serde_json::to_vec(&config).unwrap(),
    );
    let m = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.into()),
        config: c.clone(),
        layers: ls.clone(),
        annotations: None,
    };
    let md = put(store, MEDIA_OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
    let ix = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests: vec![md],
        annotations: None,
    };
    let ixd = put(store, MEDIA_OCI_INDEX, &serde_json::to_vec(&ix).unwrap());
    (ixd, c, ls)
}

fn record(name: &str, target: &Descriptor) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        target: target.clone(),
        labels: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    }
}

/// Commits the chain of snapshots of a config into the snapshotter, as unpacking would.
fn unpack_chain(sn: &dyn Snapshotter, store: &LocalStore, config: &Descriptor) -> Vec<String> {
    let mut parent: Option<String> = None;
    let mut names = Vec::new();
    for c in config_chain_ids(store, &config.digest) {
        let key = format!("extract-{c}");
        if sn.stat(c.as_str()).is_ok() {
            parent = Some(c.to_string());
            names.push(c.to_string());
            continue;
        }
        sn.prepare(&key, parent.as_deref(), BTreeMap::new())
            .unwrap();
        sn.commit(c.as_str(), &key, BTreeMap::new()).unwrap();
        parent = Some(c.to_string());
        names.push(c.to_string());
    }
    names
}

#[test]
fn unreferenced_blobs_and_snapshots_go_referenced_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let sn = NativeSnapshotter::open(&dir.path().join("snapshots")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();

    // Two images sharing their first layer; one of them gets untagged.
    let (keep_ix, keep_cfg, keep_layers) = image(&store, "keep", &[b"shared", b"keep-top"]);
    let (drop_ix, drop_cfg, drop_layers) = image(&store, "drop", &[b"shared", b"drop-top"]);
    let stray = put(&store, MEDIA_OCI_LAYER_GZIP, b"stray");
    let keep_chain = unpack_chain(&sn, &store, &keep_cfg);
    let drop_chain = unpack_chain(&sn, &store, &drop_cfg);
    // Same first diff id: the bottom snapshot is shared.
    assert_eq!(keep_chain[0], drop_chain[0]);
    // An active snapshot (a container's rootfs) on top of the dropped image's chain.
    db.put_image("default", record("keep:1", &keep_ix)).unwrap();
    db.put_image("other", record("drop:1", &drop_ix)).unwrap();

    // Everything referenced: only the stray blob goes.
    let got = collect(&db, &store, Some(&sn)).unwrap();
    assert_eq!(got.content, vec![stray.digest.clone()]);
    assert!(got.snapshots.is_empty());
    assert_eq!(got.bytes, 5);

    let drop_manifest = children(&store, &drop_ix)[0].digest.clone();
    db.delete_image("other", "drop:1").unwrap();
    let got = collect(&db, &store, Some(&sn)).unwrap();
    let mut want: Vec<Digest> = vec![
        drop_ix.digest.clone(),
        drop_cfg.digest.clone(),
        drop_layers[1].digest.clone(),
    ];
    want.push(drop_manifest);
    want.sort();
    assert_eq!(got.content, want);
    assert_eq!(got.snapshots, vec![drop_chain[1].clone()]);
    // What the kept image needs is all there.
    for d in [&keep_ix, &keep_cfg, &keep_layers[0], &keep_layers[1]] {
        store.info(&d.digest).unwrap();
    }
    for c in &keep_chain {
        sn.stat(c).unwrap();
    }
    // The shared layer blob is the same blob: still there.
    assert_eq!(drop_layers[0].digest, keep_layers[0].digest);

    // Nothing left to collect.
    assert_eq!(
        collect(&db, &store, Some(&sn)).unwrap(),
        Collected::default()
    );
}

#[test]
fn active_snapshots_keep_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let sn = NativeSnapshotter::open(&dir.path().join("snapshots")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let (_, cfg, _) = image(&store, "c", &[b"a", b"b"]);
    let chain = unpack_chain(&sn, &store, &cfg);
    sn.prepare("container-rootfs", Some(&chain[1]), BTreeMap::new())
        .unwrap();
    let got = collect(&db, &store, Some(&sn)).unwrap();
    // No image: every blob goes, but the snapshots under the active one stay.
    assert_eq!(got.content.len(), 5);
    assert!(got.snapshots.is_empty());
    sn.stat(&chain[0]).unwrap();
    sn.remove("container-rootfs").unwrap();
    let got = collect(&db, &store, Some(&sn)).unwrap();
    assert_eq!(got.snapshots, vec![chain[1].clone(), chain[0].clone()]);
}

#[test]
fn leases_protect_what_they_name_and_what_was_committed_during_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let old = put(&store, MEDIA_OCI_LAYER_GZIP, b"old layer");
    // Make "old" look committed long ago: no lease time window covers it.
    let before = collect(&db, &store, None).unwrap();
    assert_eq!(before.content, vec![old.digest.clone()]);
    let old = put(&store, MEDIA_OCI_LAYER_GZIP, b"old layer");

    db.create_lease("default", "pull-1", None).unwrap();
    db.add_lease_resource("default", "pull-1", &Resource::Content(old.digest.clone()))
        .unwrap();
    let (ix, _, _) = image(&store, "during", &[b"new layer"]);
    assert!(collect(&db, &store, None).unwrap().content.is_empty());
    store.info(&ix.digest).unwrap();
    store.info(&old.digest).unwrap();

    // The pull ends: it tags the image, then drops its lease.
    db.put_image("default", record("x:1", &ix)).unwrap();
    db.delete_lease("default", "pull-1").unwrap();
    let got = collect(&db, &store, None).unwrap();
    assert_eq!(got.content, vec![old.digest.clone()]);

    // An expired lease protects nothing.
    db.create_lease("default", "stale", Some(std::time::Duration::ZERO))
        .unwrap();
    let stray = put(&store, MEDIA_OCI_LAYER_GZIP, b"stray");
    let got = collect(&db, &store, None).unwrap();
    assert_eq!(got.content, vec![stray.digest]);
    assert!(db.leases().unwrap().is_empty());
}

#[test]
fn a_blob_committed_between_mark_and_sweep_under_a_lease_survives() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    db.create_lease("default", "pull-1", None).unwrap();
    let marks = mark(&db, &store, None).unwrap();
    // A pull commits a layer after marking listed the store, before the sweep.
    let late = put(&store, MEDIA_OCI_LAYER_GZIP, b"late layer");
    let got = sweep(&store, None, &marks).unwrap();
    assert!(got.content.is_empty(), "swept {:?}", got.content);
    store.info(&late.digest).unwrap();
    // Without a lease the same blob is garbage.
    db.delete_lease("default", "pull-1").unwrap();
    let marks = mark(&db, &store, None).unwrap();
    assert_eq!(
        sweep(&store, None, &marks).unwrap().content,
        vec![late.digest]
    );
}

#[test]
fn a_container_keeps_its_image_after_the_record_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("content")).unwrap();
    let sn = NativeSnapshotter::open(&dir.path().join("snapshots")).unwrap();
    let db = Db::open(&dir.path().join("meta.redb")).unwrap();
    let (ix, cfg, layers) = image(&store, "ctr", &[b"ctr-layer"]);
    let chain = unpack_chain(&sn, &store, &cfg);
    db.put_image("default", record("ctr:1", &ix)).unwrap();
    let c = crate::metadata::ContainerRecord {
        id: "a".repeat(64),
        name: "web".into(),
        image: "ctr:1".into(),
        image_name: "ctr:1".into(),
        image_target: ix.clone(),
        image_id: cfg.digest.to_string(),
        options: serde_json::json!({}),
        spec: serde_json::json!({}),
        snapshotter: "native".into(),
        snapshot_key: "a".repeat(64),
        labels: BTreeMap::new(),
        created_at: 0,
        state: Default::default(),
        volumes: Vec::new(),
    };
    db.create_container("default", &c).unwrap();
    db.delete_image("default", "ctr:1").unwrap();
    let got = collect(&db, &store, Some(&sn)).unwrap();
    assert!(got.content.is_empty(), "{got:?}");
    assert!(got.snapshots.is_empty(), "{got:?}");
    // The container gone, the image's blobs and snapshots go too.
    db.delete_container("default", &c.id).unwrap();
    let got = collect(&db, &store, Some(&sn)).unwrap();
    assert!(got.content.contains(&layers[0].digest));
    assert_eq!(got.snapshots, chain);
}
