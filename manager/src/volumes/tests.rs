use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn names_follow_dockers_rule() {
    for good in ["data", "db.v2", "a_b-c", "0x", "my-volume.1"] {
        validate_name(good).unwrap();
    }
    for bad in [
        "a", "", "-data", ".data", "_data", "da ta", "a/b", "a:b", "dätä",
    ] {
        let e = validate_name(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("\"{bad}\" includes invalid characters")),
            "{e}"
        );
    }
    let anon = new_record(None, BTreeMap::new());
    assert!(anon.anonymous);
    assert_eq!(anon.name.len(), 64);
    assert!(anon.name.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(anon.labels[ANONYMOUS_LABEL], "");
    let named = new_record(Some("data"), BTreeMap::new());
    assert!(!named.anonymous && named.labels.is_empty());
}

#[test]
fn seeding_copies_the_image_path_once_into_an_empty_volume() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("srv/sub")).unwrap();
    std::fs::write(rootfs.join("srv/sub/f"), "image\n").unwrap();
    std::os::unix::fs::symlink("sub/f", rootfs.join("srv/link")).unwrap();
    std::fs::set_permissions(rootfs.join("srv"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(rootfs.join("file"), "x").unwrap();
    let vol = dir.path().join("vol");
    let data = vol.join("_data");
    std::fs::create_dir_all(&data).unwrap();
    seed(&rootfs, "/srv", &data).unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("sub/f")).unwrap(),
        "image\n"
    );
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("sub/f")
    );
    // The volume's root takes the image directory's mode.
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
    // Not empty any more: a second seeding leaves it alone.
    std::fs::write(data.join("sub/f"), "changed\n").unwrap();
    seed(&rootfs, "/srv", &data).unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("sub/f")).unwrap(),
        "changed\n"
    );
    // No scratch directory stays beside `_data`.
    let names: Vec<_> = std::fs::read_dir(&vol)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["_data"]);
    // A path the image lacks leaves the volume empty; a file there is an error.
    let empty = dir.path().join("empty/_data");
    std::fs::create_dir_all(&empty).unwrap();
    seed(&rootfs, "/nope", &empty).unwrap();
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let e = seed(&rootfs, "/file", &empty).unwrap_err().to_string();
    assert!(e.contains("/file: not a directory"), "{e}");
}

#[test]
fn filters_as_docker_volume_ls() {
    let v = |name: &str, used: bool| Volume {
        record: new_record(Some(name), BTreeMap::from([("k".into(), "v".into())])),
        mountpoint: PathBuf::new(),
        used_by: if used { vec!["c".into()] } else { vec![] },
    };
    for good in ["dangling=true", "dangling=0", "name=x", "label=a=b"] {
        check_filter(good).unwrap();
    }
    assert!(matches(&v("data", false), "dangling=true").unwrap());
    assert!(!matches(&v("data", true), "dangling=true").unwrap());
    assert!(matches(&v("data", true), "dangling=false").unwrap());
    assert!(matches(&v("mydata", true), "name=data").unwrap());
    assert!(matches(&v("data", true), "label=k").unwrap());
    assert!(matches(&v("data", true), "label=k=v").unwrap());
    assert!(!matches(&v("data", true), "label=k=w").unwrap());
    for bad in ["dangling=maybe", "colour=red", "dangling"] {
        assert!(matches(&v("data", true), bad).is_err(), "{bad}");
        assert!(check_filter(bad).is_err(), "{bad}");
    }
}

#[test]
fn other_namespaces_keep_their_volumes_apart() {
    let root = Path::new("/r/volumes");
    assert_eq!(volume_dir(root, "default", "data"), root.join("data"));
    assert_eq!(volume_dir(root, "ci", "data"), root.join("_ns/ci/data"));
    // `_ns` is no valid volume name: the two layouts never meet.
    assert!(validate_name(NAMESPACES_DIR).is_err());
}
