use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::*;
use crate::content::local::LocalStore;

fn fixtures() -> PathBuf {
    std::env::var_os("KAPSEL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.fixtures"))
}

fn fixture_env(key: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("fixtures.env"))
        .expect("fixtures missing: run scripts/make-fixtures.sh");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in fixtures.env"))
        .to_string()
}

fn store() -> (tempfile::TempDir, LocalStore) {
    let d = tempfile::tempdir().unwrap();
    let s = LocalStore::open(d.path()).unwrap();
    (d, s)
}

fn open_fixture(name: &str) -> std::fs::File {
    std::fs::File::open(fixtures().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}: run scripts/make-fixtures.sh"))
}

fn import_bytes(s: &dyn Store, data: &[u8]) -> Result<Vec<ImportedImage>> {
    import(s, data, &|_| {})
}

#[test]
fn imports_the_oci_fixture() {
    let (_d, s) = store();
    let imgs = import(&s, open_fixture("busybox-oci.tar"), &|_| {}).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(
        imgs[0].name.as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(
        imgs[0].target.digest.as_str(),
        fixture_env("MANIFEST_DIGEST")
    );
    assert_eq!(imgs[0].target.media_type, MEDIA_OCI_MANIFEST);
    for k in ["CONFIG_DIGEST", "LAYER_DIGEST"] {
        let d: Digest = fixture_env(k).parse().unwrap();
        s.info(&d).unwrap();
    }
    assert!(s.ingests().unwrap().is_empty());
}

#[test]
fn imports_the_docker_fixture() {
    let (_d, s) = store();
    let mut seen = Vec::new();
    let seen_cell = std::sync::Mutex::new(&mut seen);
    let imgs = import(&s, open_fixture("busybox-docker.tar"), &|p| {
        seen_cell.lock().unwrap().push(p.entry)
    })
    .unwrap();
    assert!(seen.iter().any(|e| e.ends_with("layer.tar")));
    assert_eq!(imgs.len(), 1);
    assert_eq!(
        imgs[0].name.as_deref(),
        Some("docker.io/library/busybox:latest")
    );
    let m: Manifest = serde_json::from_slice(&s.read_all(&imgs[0].target.digest).unwrap()).unwrap();
    assert_eq!(m.config.digest.as_str(), fixture_env("CONFIG_DIGEST"));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, MEDIA_OCI_LAYER);
    assert_eq!(m.layers[0].digest.as_str(), fixture_env("DIFF_ID"));
    assert_eq!(s.info(&m.layers[0].digest).unwrap().size, m.layers[0].size);
}

/// A second image sharing the busybox layer, with its own config.
fn second_image(s: &dyn Store, base: &Descriptor) -> Descriptor {
    let m: Manifest = serde_json::from_slice(&s.read_all(&base.digest).unwrap()).unwrap();
    let mut cfg: ImageConfig =
        serde_json::from_slice(&s.read_all(&m.config.digest).unwrap()).unwrap();
    cfg.author = Some("kreg test".into());
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cst = store_bytes(s, "cfg", &cfg_bytes).unwrap();
    let mut m2 = m.clone();
    m2.config.digest = cst.digest;
    m2.config.size = cst.size;
    let mb = serde_json::to_vec(&m2).unwrap();
    let mst = store_bytes(s, "m", &mb).unwrap();
    Descriptor {
        media_type: MEDIA_OCI_MANIFEST.into(),
        digest: mst.digest,
        size: mst.size,
        urls: None,
        annotations: None,
        platform: None,
    }
}

#[test]
fn round_trips_several_images_in_both_formats() {
    let (_d, s) = store();
    let imgs = import(&s, open_fixture("busybox-oci.tar"), &|_| {}).unwrap();
    let bb = imgs[0].target.clone();
    let other = second_image(&s, &bb);
    let list = vec![
        ("docker.io/library/busybox:latest".to_string(), bb.clone()),
        ("127.0.0.1:5000/kreg/other:2".to_string(), other.clone()),
        ("docker.io/library/busybox:again".to_string(), bb.clone()),
    ];
    // OCI layout: targets keep their digests.
    let mut oci = Vec::new();
    export(&s, &list, &mut oci, Format::OciLayout).unwrap();
    let mut oci2 = Vec::new();
    export(&s, &list, &mut oci2, Format::OciLayout).unwrap();
    assert!(oci == oci2, "export is deterministic");
    let (_d2, s2) = store();
    let back = import_bytes(&s2, &oci).unwrap();
    let got: Vec<(Option<String>, Digest)> = back
        .iter()
        .map(|i| (i.name.clone(), i.target.digest.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Some("docker.io/library/busybox:latest".into()),
                bb.digest.clone()
            ),
            (
                Some("127.0.0.1:5000/kreg/other:2".into()),
                other.digest.clone()
            ),
            (
                Some("docker.io/library/busybox:again".into()),
                bb.digest.clone()
            ),
        ]
    );
    // Docker archive: layers decompressed to their diff_ids; the configs are kept.
    let mut dock = Vec::new();
    export(&s, &list, &mut dock, Format::DockerArchive).unwrap();
    let diff: Digest = fixture_env("DIFF_ID").parse().unwrap();
    assert!(
        s.info(&diff).is_err(),
        "the temporary uncompressed layer is removed"
    );
    let (_d3, s3) = store();
    let back = import_bytes(&s3, &dock).unwrap();
    assert_eq!(back.len(), 3);
    let names: Vec<_> = back.iter().map(|i| i.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:again",
            "127.0.0.1:5000/kreg/other:2"
        ]
    );
    let m: Manifest =
        serde_json::from_slice(&s3.read_all(&back[0].target.digest).unwrap()).unwrap();
    assert_eq!(m.config.digest.as_str(), fixture_env("CONFIG_DIGEST"));
    assert_eq!(m.layers[0].digest, diff);
    // Listing: what the archive holds, sorted as written.
    let mut ar = tar::Archive::new(dock.as_slice());
    let paths: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(paths.contains(&"manifest.json".to_string()));
    assert!(paths.contains(&format!("{}/layer.tar", diff.hex())));
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("layer.tar")).count(),
        1,
        "a shared layer is written once"
    );
}

/// A tar with raw entries (names written as given, no sanitising).
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn refuses_paths_outside_the_archive() {
    let (_d, s) = store();
    for (name, kind, link) in [
        ("../evil", tar::EntryType::Regular, None),
        ("/abs", tar::EntryType::Regular, None),
        ("a/../../x", tar::EntryType::Regular, None),
        ("link", tar::EntryType::Symlink, Some("../../etc/passwd")),
        ("link", tar::EntryType::Symlink, Some("/etc/passwd")),
        ("hard", tar::EntryType::Link, Some("../x")),
    ] {
        let t = raw_tar(&[(name, kind, b"x", link)]);
        match import_bytes(&s, &t) {
            Err(Error::PathEscape { path }) => assert!(path.contains(name), "{path}"),
            other => panic!("{name}: want PathEscape, got {other:?}"),
        }
    }
    assert!(s.list().unwrap().is_empty() && s.ingests().unwrap().is_empty());
}

#[test]
fn refuses_bad_archives() {
    let (_d, s) = store();
    let good = Digest::of(b"data");
    // A blob whose name is not its digest.
    let t = raw_tar(&[(
        &format!("blobs/sha256/{}", Digest::of(b"other").hex()),
        tar::EntryType::Regular,
        b"data",
        None,
    )]);
    match import_bytes(&s, &t) {
        Err(Error::Content {
            source: content::Error::DigestMismatch { .. },
            ..
        }) => {}
        other => panic!("want DigestMismatch, got {other:?}"),
    }
    assert!(s.info(&good).is_err() && s.ingests().unwrap().is_empty());
    // Truncated in the middle of a layer.
    let mut fixture = Vec::new();
    open_fixture("busybox-docker.tar")
        .read_to_end(&mut fixture)
        .unwrap();
    let e = import_bytes(&s, &fixture[..fixture.len() / 2]).unwrap_err();
    assert!(
        matches!(&e, Error::Entry { reason, .. } if reason.contains("truncated")),
        "{e:?}"
    );
    assert!(s.ingests().unwrap().is_empty(), "no ingest left behind");
    // manifest.json naming a layer that is not there.
    let t = raw_tar(&[(
        "manifest.json",
        tar::EntryType::Regular,
        br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["x/layer.tar"]}]"#,
        None,
    ), ("c.json", tar::EntryType::Regular, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#, None)]);
    let e = import_bytes(&s, &t).unwrap_err();
    assert!(
        matches!(&e, Error::Missing { what, .. } if what.contains("x/layer.tar")),
        "{e}"
    );
    // A layer that is not the diff_id its config says.
    let t = raw_tar(&[
        ("manifest.json", tar::EntryType::Regular, br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["x/layer.tar"]}]"#, None),
        ("c.json", tar::EntryType::Regular, br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#, None),
        ("x/layer.tar", tar::EntryType::Regular, b"not empty", None),
    ]);
    let e = import_bytes(&s, &t).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Content {
                source: content::Error::DigestMismatch { .. },
                ..
            }
        ),
        "{e}"
    );
    // index.json naming a manifest the archive lacks.
    let idx = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
        Digest::of(b"abc")
    );
    let t = raw_tar(&[
        (
            "oci-layout",
            tar::EntryType::Regular,
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            None,
        ),
        ("index.json", tar::EntryType::Regular, idx.as_bytes(), None),
    ]);
    assert!(matches!(import_bytes(&s, &t), Err(Error::Missing { .. })));
    // Broken compression and empty input.
    assert!(matches!(
        import_bytes(&s, &[0x1f, 0x8b, 8, 0]),
        Err(Error::Read(_))
    ));
    assert!(matches!(
        import_bytes(&s, &[0u8; 1024]),
        Err(Error::NotAnArchive)
    ));
    // Text, not a tar: said so, without quoting the bytes.
    let e = import_bytes(&s, &b"this is not a tar archive\n".repeat(40)).unwrap_err();
    assert!(matches!(e, Error::BadHeader { offset: 0 }), "{e:?}");
    let t = raw_tar(&[("hello.txt", tar::EntryType::Regular, b"hi", None)]);
    assert!(matches!(import_bytes(&s, &t), Err(Error::NotAnArchive)));
    let _ = BTreeMap::<(), ()>::new();
}

#[test]
fn docker_save_symlinked_layers_and_legacy_names() {
    // docker save links a layer shared by two images; old archives name images in
    // `repositories` only.
    let (_d, s) = store();
    let layer = raw_tar(&[("f", tar::EntryType::Regular, b"content", None)]);
    let diff = Digest::of(&layer);
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}","{diff}"]}}}}"#
    );
    let cfg_name = format!("{}.json", Digest::of(cfg.as_bytes()).hex());
    let manifest = format!(
        r#"[{{"Config":"{cfg_name}","RepoTags":null,"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
    );
    let t = raw_tar(&[
        ("aaa/layer.tar", tar::EntryType::Regular, &layer, None),
        (
            "bbb/layer.tar",
            tar::EntryType::Symlink,
            b"",
            Some("../aaa/layer.tar"),
        ),
        (&cfg_name, tar::EntryType::Regular, cfg.as_bytes(), None),
        (
            "manifest.json",
            tar::EntryType::Regular,
            manifest.as_bytes(),
            None,
        ),
        (
            "repositories",
            tar::EntryType::Regular,
            br#"{"old/app":{"v1":"bbb"}}"#,
            None,
        ),
    ]);
    let imgs = import_bytes(&s, &t).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].name.as_deref(), Some("docker.io/old/app:v1"));
    let m: Manifest = serde_json::from_slice(&s.read_all(&imgs[0].target.digest).unwrap()).unwrap();
    assert_eq!(m.layers[0].digest, diff);
    assert_eq!(m.layers[1].digest, diff);
}

#[test]
fn imports_gzip_and_zstd_compressed_archives() {
    let mut raw = Vec::new();
    open_fixture("busybox-docker.tar")
        .read_to_end(&mut raw)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(raw.as_slice(), 1).unwrap();
    for data in [gz, zst] {
        let (_d, s) = store();
        let imgs = import_bytes(&s, &data).unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(
            imgs[0].name.as_deref(),
            Some("docker.io/library/busybox:latest")
        );
    }
}
