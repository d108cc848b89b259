//! The shared test suite every [`Store`] implementation must pass.
//!
//! Each case takes a fresh, empty store and panics with a message when the contract in
//! [`super`] is broken. An implementation's tests run every entry of [`CASES`]:
//!
//! ```text
//! for (name, case) in kapsel_manager::content::testsuite::CASES {
//!     let dir = tempfile::tempdir().unwrap();
//!     case(&MyStore::open(dir.path()).unwrap());
//! }
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Error, Store};
use crate::oci::Digest;

type Case = fn(&dyn Store);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("commit", commit),
    ("duplicate commit", duplicate_commit),
    ("wrong digest", wrong_digest),
    ("wrong size", wrong_size),
    ("resume after drop", resume_after_drop),
    ("truncate", truncate),
    ("concurrent writers on one ref", concurrent_writers),
    ("delete", delete),
    ("list", list),
    ("labels", labels),
    ("abort and ingests", abort_and_ingests),
    ("no partial blob is visible", no_partial_blob),
    ("read at offset", read_at),
];

fn blob(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put(s: &dyn Store, reference: &str, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    let mut w = s.writer(reference, Some((&d, data.len() as u64))).unwrap();
    w.write_all(data).unwrap();
    w.commit(None, BTreeMap::new()).unwrap()
}

fn assert_absent(s: &dyn Store, d: &Digest) {
    assert!(
        matches!(s.info(d), Err(Error::NotFound(_))),
        "{d} must not be visible"
    );
    assert!(matches!(s.reader(d), Err(Error::NotFound(_))));
    assert!(s.list().unwrap().iter().all(|i| &i.digest != d));
}

fn commit(s: &dyn Store) {
    let data = blob(300_000, 1);
    let d = put(s, "c1", &data);
    assert_eq!(d, Digest::of(&data));
    let info = s.info(&d).unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert!(info.created_at > 0);
    assert_eq!(s.read_all(&d).unwrap(), data);
    assert!(
        s.ingests().unwrap().is_empty(),
        "a committed ingest is gone"
    );
    // Without any expectation the digest is what was written.
    let mut w = s.writer("c2", None).unwrap();
    w.write_all(b"free").unwrap();
    assert_eq!(
        w.commit(None, BTreeMap::new()).unwrap(),
        Digest::of(b"free")
    );
}

fn duplicate_commit(s: &dyn Store) {
    let data = blob(1000, 2);
    let d = put(s, "d1", &data);
    let d2 = put(s, "d2", &data);
    assert_eq!(d, d2);
    assert_eq!(s.read_all(&d).unwrap(), data);
    assert!(s.ingests().unwrap().is_empty());
    assert_eq!(s.list().unwrap().len(), 1);
}

fn wrong_digest(s: &dyn Store) {
    let data = blob(1000, 3);
    let wrong = Digest::of(b"something else");
    let mut w = s.writer("w1", Some((&wrong, 1000))).unwrap();
    w.write_all(&data).unwrap();
    match w.commit(None, BTreeMap::new()) {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::of(&data));
        }
        other => panic!("want DigestMismatch, got {other:?}"),
    }
    assert_absent(s, &wrong);
    assert_absent(s, &Digest::of(&data));
    assert!(s.ingests().unwrap().is_empty(), "a bad ingest is dropped");
    // The expectation given at commit wins over the one given at open.
    let mut w = s.writer("w2", Some((&wrong, 1000))).unwrap();
    w.write_all(&data).unwrap();
    let d = Digest::of(&data);
    assert_eq!(w.commit(Some((&d, 1000)), BTreeMap::new()).unwrap(), d);
}

fn wrong_size(s: &dyn Store) {
    let data = blob(1000, 4);
    let d = Digest::of(&data);
    let mut w = s.writer("s1", None).unwrap();
    w.write_all(&data).unwrap();
    match w.commit(Some((&d, 999)), BTreeMap::new()) {
        Err(Error::SizeMismatch {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (999, 1000)),
        other => panic!("want SizeMismatch, got {other:?}"),
    }
    assert_absent(s, &d);
    let mut w = s.writer("s2", Some((&d, 1000))).unwrap();
    w.write_all(&data[..10]).unwrap();
    assert!(matches!(
        w.commit(None, BTreeMap::new()),
        Err(Error::SizeMismatch { .. })
    ));
    assert_absent(s, &d);
}

fn resume_after_drop(s: &dyn Store) {
    let data = blob(200_000, 5);
    let d = Digest::of(&data);
    let mut w = s.writer("r1", Some((&d, data.len() as u64))).unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(&data[..70_000]).unwrap();
    drop(w);
    assert_absent(s, &d);
    let st = s.ingests().unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].reference, "r1");
    assert_eq!(st[0].offset, 70_000);
    assert_eq!(st[0].expected.as_ref(), Some(&d));
    assert_eq!(st[0].total, Some(data.len() as u64));
    assert!(st[0].updated_at > 0);
    // Resumed without restating the expectation: the one given first still holds.
    let mut w = s.writer("r1", None).unwrap();
    assert_eq!(w.offset(), 70_000);
    w.write_all(&data[70_000..]).unwrap();
    assert_eq!(w.commit(None, BTreeMap::new()).unwrap(), d);
    assert_eq!(s.read_all(&d).unwrap(), data);
    // A resumed ingest whose old bytes were wrong fails verification (they were re-hashed).
    let mut w = s.writer("r2", Some((&d, data.len() as u64))).unwrap();
    w.write_all(&[0u8; 10]).unwrap();
    drop(w);
    let mut w = s.writer("r2", None).unwrap();
    w.write_all(&data[10..]).unwrap();
    assert!(matches!(
        w.commit(None, BTreeMap::new()),
        Err(Error::DigestMismatch { .. })
    ));
}

fn truncate(s: &dyn Store) {
    let data = blob(5000, 6);
    let mut w = s.writer("t1", None).unwrap();
    w.write_all(b"garbage").unwrap();
    w.truncate().unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(&data).unwrap();
    let d = Digest::of(&data);
    assert_eq!(w.commit(Some((&d, 5000)), BTreeMap::new()).unwrap(), d);
}

fn concurrent_writers(s: &dyn Store) {
    let w = s.writer("cw", None).unwrap();
    match s.writer("cw", None) {
        Err(Error::Locked { reference }) => assert_eq!(reference, "cw"),
        Err(e) => panic!("want Locked, got {e}"),
        Ok(_) => panic!("want Locked, got a second writer"),
    }
    // Another ref is independent.
    let _other = s.writer("cw2", None).unwrap();
    drop(w);
    let w = s.writer("cw", None).unwrap();
    drop(w);
    // From threads: exactly one writer at a time.
    let data = blob(50_000, 7);
    let d = Digest::of(&data);
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| loop {
                match s.writer("race", Some((&d, data.len() as u64))) {
                    Ok(mut w) => {
                        if s.info(&d).is_ok() {
                            return; // another thread finished
                        }
                        let off = w.offset() as usize;
                        w.write_all(&data[off..]).unwrap();
                        w.commit(None, BTreeMap::new()).unwrap();
                        ok.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(Error::Locked { .. }) => {
                        if s.info(&d).is_ok() {
                            return;
                        }
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            });
        }
    });
    assert!(ok.load(Ordering::SeqCst) >= 1);
    assert_eq!(s.read_all(&d).unwrap(), data);
}

fn delete(s: &dyn Store) {
    let d = put(s, "del", b"to delete");
    let mut l = BTreeMap::new();
    l.insert("a".to_string(), "b".to_string());
    s.set_labels(&d, l).unwrap();
    s.delete(&d).unwrap();
    assert_absent(s, &d);
    assert!(matches!(s.delete(&d), Err(Error::NotFound(_))));
    // Committed again: no stale labels come back.
    let d = put(s, "del2", b"to delete");
    assert!(s.info(&d).unwrap().labels.is_empty());
}

fn list(s: &dyn Store) {
    assert!(s.list().unwrap().is_empty());
    let mut want: Vec<Digest> = (0..5u8)
        .map(|i| put(s, &format!("l{i}"), &blob(100 + i as usize, i)))
        .collect();
    want.sort();
    let got: Vec<Digest> = s.list().unwrap().into_iter().map(|i| i.digest).collect();
    assert_eq!(got, want);
    // An unfinished ingest is not listed.
    let mut w = s.writer("l-partial", None).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert_eq!(s.list().unwrap().len(), 5);
}

fn labels(s: &dyn Store) {
    let data = b"labelled".to_vec();
    let d = Digest::of(&data);
    let mut w = s.writer("lab", None).unwrap();
    w.write_all(&data).unwrap();
    let mut l = BTreeMap::new();
    l.insert(
        "containerd.io/distribution.source.127.0.0.1:5000".to_string(),
        "app".to_string(),
    );
    w.commit(Some((&d, data.len() as u64)), l.clone()).unwrap();
    assert_eq!(s.info(&d).unwrap().labels, l);
    // A duplicate commit merges its labels.
    let mut w = s.writer("lab2", None).unwrap();
    w.write_all(&data).unwrap();
    let mut l2 = BTreeMap::new();
    l2.insert("x".to_string(), "y".to_string());
    w.commit(None, l2).unwrap();
    assert_eq!(s.info(&d).unwrap().labels.len(), 2);
    // set_labels replaces.
    let mut l3 = BTreeMap::new();
    l3.insert("only".to_string(), "this".to_string());
    assert_eq!(s.set_labels(&d, l3.clone()).unwrap().labels, l3);
    assert_eq!(s.info(&d).unwrap().labels, l3);
    assert!(s.set_labels(&d, BTreeMap::new()).unwrap().labels.is_empty());
    let missing = Digest::of(b"missing");
    assert!(matches!(
        s.set_labels(&missing, BTreeMap::new()),
        Err(Error::NotFound(_))
    ));
}

fn abort_and_ingests(s: &dyn Store) {
    let mut w = s.writer("ab1", None).unwrap();
    w.write_all(b"abc").unwrap();
    // Locked while a writer holds it.
    assert!(matches!(s.abort("ab1"), Err(Error::Locked { .. })));
    drop(w);
    let mut w = s.writer("ab2", None).unwrap();
    w.write_all(b"x").unwrap();
    drop(w);
    let refs: Vec<String> = s
        .ingests()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(refs, ["ab1", "ab2"]);
    s.abort("ab1").unwrap();
    assert_eq!(s.ingests().unwrap().len(), 1);
    assert!(s.abort("ab1").is_err());
    // After abort a writer starts from zero.
    let w = s.writer("ab2", None).unwrap();
    assert_eq!(w.offset(), 1);
    drop(w);
    s.abort("ab2").unwrap();
    assert_eq!(s.writer("ab2", None).unwrap().offset(), 0);
    assert!(matches!(
        s.writer("", None),
        Err(Error::InvalidReference(_))
    ));
}

fn no_partial_blob(s: &dyn Store) {
    let data = blob(4 << 20, 8);
    let d = Digest::of(&data);
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut w = s.writer("np", Some((&d, data.len() as u64))).unwrap();
            for chunk in data.chunks(64 * 1024) {
                w.write_all(chunk).unwrap();
            }
            w.commit(None, BTreeMap::new()).unwrap();
            done.store(true, Ordering::SeqCst);
        });
        // Whenever the blob is visible, it is whole.
        loop {
            let finished = done.load(Ordering::SeqCst);
            if let Ok(mut r) = s.reader(&d) {
                assert_eq!(r.size(), data.len() as u64, "a partial blob was visible");
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                assert!(got == data, "a partial blob was visible");
            }
            if finished {
                break;
            }
            std::thread::yield_now();
        }
    });
    assert_eq!(s.info(&d).unwrap().size, data.len() as u64);
}

fn read_at(s: &dyn Store) {
    let data = blob(10_000, 9);
    let d = put(s, "ra", &data);
    let r = s.reader(&d).unwrap();
    assert_eq!(r.size(), 10_000);
    let mut buf = [0u8; 100];
    let n = r.read_at(&mut buf, 5000).unwrap();
    assert_eq!(&buf[..n], &data[5000..5000 + n]);
}
