//! Writer and reader together: tail, since/until, streams, follow and cursors across rotation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn opts(max_size: u64, max_files: u32) -> WriterOptions {
    WriterOptions {
        max_size: Some(max_size),
        max_files,
    }
}

/// Lines "<stream> <i>\n" at times i seconds, alternating streams.
fn write_lines(w: &mut Writer, range: std::ops::Range<usize>) {
    for i in range {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        w.write(
            stream,
            i as i64 * 1_000_000_000,
            format!("{} {i}\n", stream.as_str()).as_bytes(),
        )
        .unwrap();
    }
}

fn collect(logfile: &Path, q: &LogQuery) -> Vec<String> {
    let mut got = Vec::new();
    read(logfile, q, &|| true, |e| {
        got.push(String::from_utf8(e.log).unwrap());
        true
    })
    .unwrap();
    got
}

fn numbers(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn reads_all_rotated_files_in_order_with_tail_since_until_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, opts(1000, 4)).unwrap();
    write_lines(&mut w, 0..50);
    assert!(rotated_path(&log, 3).exists(), "rotation did not happen");
    // What the files still hold: the newest lines, contiguous up to 49.
    let all = numbers(&collect(&log, &LogQuery::default()));
    let first = all[0];
    assert_eq!(all, (first..50).collect::<Vec<_>>());
    assert!(first > 0);

    let q = |f: &dyn Fn(&mut LogQuery)| {
        let mut q = LogQuery::default();
        f(&mut q);
        numbers(&collect(&log, &q))
    };
    assert_eq!(q(&|q| q.tail = Some(3)), vec![47, 48, 49]);
    assert_eq!(q(&|q| q.tail = Some(0)), Vec::<usize>::new());
    // More lines than the newest file holds: the tail reaches into the rotated ones.
    let many = 50 - first - 2;
    assert_eq!(
        q(&|q| q.tail = Some(many)),
        (first + 2..50).collect::<Vec<_>>()
    );
    assert_eq!(q(&|q| q.tail = Some(10_000)), all);
    assert_eq!(
        q(&|q| q.since = Some(45_000_000_000)),
        vec![45, 46, 47, 48, 49]
    );
    assert_eq!(
        q(&|q| {
            q.since = Some(40_000_000_000);
            q.until = Some(42_000_000_000);
        }),
        vec![40, 41, 42]
    );
    // As Docker: the tail counts every line, then the stream filter applies.
    assert_eq!(
        q(&|q| {
            q.tail = Some(4);
            q.stdout = false;
        }),
        vec![47, 49]
    );
    assert_eq!(
        q(&|q| {
            q.stderr = false;
            q.since = Some(44_000_000_000);
        }),
        vec![44, 46, 48]
    );
}

#[test]
fn tail_and_end_skip_a_line_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, WriterOptions::default()).unwrap();
    write_lines(&mut w, 0..3);
    drop(w);
    // A torn line at the end (the writer is in the middle of it).
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, b"{\"log\":\"half").unwrap();
    let mut q = LogQuery {
        tail: Some(2),
        ..LogQuery::default()
    };
    assert_eq!(numbers(&collect(&log, &q)), vec![1, 2]);
    q.tail = Some(0);
    assert!(collect(&log, &q).is_empty());
    let mut c = Cursor::end(&log).unwrap();
    assert!(read_chunk(&log, &mut c, 1 << 20, Duration::ZERO)
        .unwrap()
        .is_empty());
    // The rest of the line arrives: the cursor at the end delivers it.
    std::io::Write::write_all(
        &mut f,
        b"\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-29T10:00:00Z\"}\n",
    )
    .unwrap();
    let got = read_chunk(&log, &mut c, 1 << 20, Duration::ZERO).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log, b"half\n");
    assert_eq!(got[0].time, 1_795_946_400_000_000_000);
    // No log at all yet: empty, no error.
    let none = dir.path().join("none-json.log");
    assert_eq!(Cursor::end(&none).unwrap(), Cursor::start());
    assert!(collect(&none, &LogQuery::default()).is_empty());
}

#[test]
fn cursor_survives_rotation_and_round_trips_as_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, opts(600, 3)).unwrap();
    write_lines(&mut w, 0..5);
    let mut c = Cursor::start();
    let got = read_chunk(&log, &mut c, 1, Duration::ZERO).unwrap();
    assert_eq!(got.len(), 1, "max_bytes 1 still returns one entry");
    let got = read_chunk(&log, &mut c, 1 << 20, Duration::ZERO).unwrap();
    assert_eq!(got.len(), 4);
    // Rotate (files of ~100 bytes a line, 600 bytes each) but not so far that the cursor's
    // file is removed: the cursor goes on exactly after line 4.
    write_lines(&mut w, 5..12);
    assert!(rotated_path(&log, 1).exists());
    let token = c.to_token();
    let mut c = Cursor::from_token(&token).unwrap();
    let got: Vec<Entry> = read_chunk(&log, &mut c, 1 << 20, Duration::ZERO).unwrap();
    let lines: Vec<String> = got
        .iter()
        .map(|e| String::from_utf8(e.log.clone()).unwrap())
        .collect();
    assert_eq!(numbers(&lines), (5..12).collect::<Vec<_>>());
    assert_eq!(Cursor::from_token("").unwrap(), Cursor::start());
    let e = Cursor::from_token("x:1").unwrap_err().to_string();
    assert!(e.contains("invalid log cursor \"x:1\""), "{e}");

    // Waiting: nothing new, then a line arrives during the wait.
    let t = std::time::Instant::now();
    assert!(
        read_chunk(&log, &mut c, 1 << 20, Duration::from_millis(120))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(120));
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        write_lines(&mut w, 12..13);
    });
    let got = read_chunk(&log, &mut c, 1 << 20, Duration::from_secs(5)).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log, b"stdout 12\n");
}

#[test]
fn a_cursor_whose_file_is_gone_goes_on_at_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, opts(300, 2)).unwrap();
    write_lines(&mut w, 0..2);
    let mut c = Cursor::start();
    assert_eq!(
        read_chunk(&log, &mut c, 1 << 20, Duration::ZERO)
            .unwrap()
            .len(),
        2
    );
    write_lines(&mut w, 2..30);
    let got = read_chunk(&log, &mut c, 1 << 20, Duration::ZERO).unwrap();
    let oldest = numbers(&collect(&log, &LogQuery::default()));
    assert_eq!(got.len(), oldest.len());
    assert_eq!(got.last().unwrap().log, b"stderr 29\n");
}

#[test]
fn follow_reads_every_line_across_rotations_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    // Many rotations, but enough files that a follower polling every 50 ms keeps up.
    let mut w = Writer::open(&log, opts(4096, 50)).unwrap();
    write_lines(&mut w, 0..1);
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let log = log.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let q = LogQuery {
                follow: true,
                ..LogQuery::default()
            };
            let mut got = Vec::new();
            read(&log, &q, &|| done.load(Ordering::SeqCst), |e| {
                got.push(String::from_utf8(e.log).unwrap());
                true
            })
            .unwrap();
            got
        })
    };
    for chunk in 0..20 {
        write_lines(&mut w, 1 + chunk * 50..1 + (chunk + 1) * 50);
        std::thread::sleep(Duration::from_millis(15));
    }
    let rotated = (1..50).filter(|n| rotated_path(&log, *n).exists()).count();
    assert!(rotated >= 10, "only {rotated} rotations");
    done.store(true, Ordering::SeqCst);
    let got = follower.join().unwrap();
    assert_eq!(numbers(&got), (0..1001).collect::<Vec<_>>());
}

#[test]
fn follow_stops_at_until_and_when_the_sink_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, WriterOptions::default()).unwrap();
    write_lines(&mut w, 0..10);
    let q = LogQuery {
        follow: true,
        until: Some(3_000_000_000),
        ..LogQuery::default()
    };
    // stop() never says stop: until ends it.
    let mut n = 0;
    read(&log, &q, &|| false, |_| {
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 4);
    let q = LogQuery {
        follow: true,
        ..LogQuery::default()
    };
    let mut n = 0;
    read(&log, &q, &|| false, |_| {
        n += 1;
        n < 2
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn long_lines_come_back_byte_exact_and_timestamps_once_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, WriterOptions::default()).unwrap();
    let mut lb = LineBuffer::default();
    let mut data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    data.retain(|b| *b != b'\n');
    data.push(b'\n');
    data.extend_from_slice(b"short\n");
    let mut rest = &data[..];
    while !rest.is_empty() {
        let spare = lb.spare();
        let n = spare.len().min(rest.len()).min(7000);
        spare[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        lb.filled(n, |b| w.write(Stream::Stdout, 5, b)).unwrap();
    }
    let mut entries = Vec::new();
    read(&log, &LogQuery::default(), &|| true, |e| {
        entries.push(e);
        true
    })
    .unwrap();
    assert_eq!(entries.len(), 4, "16K + 16K + rest + short");
    assert!(entries[0].partial() && entries[1].partial() && !entries[2].partial());
    let joined: Vec<u8> = entries.iter().flat_map(|e| e.log.clone()).collect();
    assert_eq!(joined, data);
    let mut f = Formatter::new(true);
    let mut out = Vec::new();
    for e in &entries {
        f.format(e, &mut out);
    }
    let ts = b"1970-01-01T00:00:00.000000005Z ";
    assert!(out.starts_with(ts));
    assert_eq!(out.windows(ts.len()).filter(|w| *w == ts).count(), 2);
    assert_eq!(out.len(), data.len() + 2 * ts.len());
}

#[test]
fn wait_writer_done_follows_the_lock() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    assert!(wait_writer_done(&log, Duration::ZERO), "no lock file");
    let f = File::create(lock_path(&log)).unwrap();
    let held = Flock::lock(f, FlockArg::LockExclusive).unwrap();
    let t = std::time::Instant::now();
    assert!(!wait_writer_done(&log, Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(80));
        drop(held);
    });
    assert!(wait_writer_done(&log, Duration::from_secs(5)));
    release.join().unwrap();
}

#[test]
fn uri_and_sizes_and_remove() {
    let uri = logger_uri(
        Path::new("/usr/bin/kapsel-logger"),
        Path::new("/var/lib/kapsel/containers/a b/a-json.log"),
        opts(10 << 20, 3),
        true,
    );
    assert_eq!(
        uri,
        "binary:///usr/bin/kapsel-logger?path=/var/lib/kapsel/containers/a%20b/a-json.log\
         &max-size=10485760&max-file=3&tty=true"
    );
    assert_eq!(parse_size("10m"), Some(10 << 20));
    assert_eq!(parse_size("512KiB"), Some(512 << 10));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("123"), Some(123));
    assert_eq!(parse_size("1.5k"), Some(1536));
    assert_eq!(parse_size("ten"), None);
    assert_eq!(parse_size("-1"), None);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c-json.log");
    let mut w = Writer::open(&log, opts(200, 3)).unwrap();
    write_lines(&mut w, 0..10);
    std::fs::write(lock_path(&log), "").unwrap();
    remove(&log).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    remove(&log).unwrap();
}
