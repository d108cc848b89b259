//! Measures layer unpacking: `unpack-bench <blob> <media-type> [plain|pipelined] [delete|overlay]`
//! applies the blob into a fresh temporary directory (no snapshotter, no fsync) and prints the
//! time and throughput of the uncompressed stream, then of decompression and sha256 alone.
//! `pipelined` decompresses in a helper thread (what `unpack_layer` does).

use std::io::Read;
use std::time::Instant;

use kapsel_manager::oci::Compression;
use kapsel_manager::unpack::{apply_layer, decompress, pipelined, ApplyOptions, WhiteoutMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err(
            "usage: unpack-bench <blob> <media-type> [plain|pipelined] [delete|overlay]".into(),
        );
    }
    let blob = std::fs::read(&args[1])?;
    let compression = Compression::of_layer(&args[2]).ok_or("not a layer media type")?;
    let threaded = args.get(3).map(String::as_str) != Some("plain");
    let whiteouts = match args.get(4).map(String::as_str) {
        Some("overlay") => WhiteoutMode::Overlay,
        _ => WhiteoutMode::Delete,
    };
    let dest = std::env::temp_dir().join(format!("unpack-bench-{}", std::process::id()));
    std::fs::create_dir(&dest)?;
    let opts = ApplyOptions {
        whiteouts,
        ..ApplyOptions::default()
    };
    let started = Instant::now();
    let stream = decompress(&blob[..], compression)?;
    let stats = if threaded {
        pipelined(stream, |r| apply_layer(&dest, r, &opts))?
    } else {
        apply_layer(&dest, stream, &opts)?
    };
    let took = started.elapsed();
    std::fs::remove_dir_all(&dest)?;
    let mb = stats.size as f64 / 1e6;
    println!(
        "apply ({}): {} entries, {:.1} MB tar from {:.1} MB blob in {:.3}s: {:.0} MB/s ({})",
        if threaded { "pipelined" } else { "plain" },
        stats.entries,
        mb,
        blob.len() as f64 / 1e6,
        took.as_secs_f64(),
        mb / took.as_secs_f64(),
        stats.diff_id
    );
    let started = Instant::now();
    let mut r = decompress(&blob[..], compression)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut h = sha2::Sha256::default();
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha2::Digest::update(&mut h, &buf[..k]);
        n += k as u64;
    }
    let took = started.elapsed();
    println!(
        "decompress + sha256 only: {:.0} MB/s",
        n as f64 / 1e6 / took.as_secs_f64()
    );
    Ok(())
}
