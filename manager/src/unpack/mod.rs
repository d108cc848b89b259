//! Unpacking images into snapshots: decompression by media type, applying a layer's tar stream
//! onto a snapshot (see `apply.rs`), chain ids, and whole images layer by layer.

use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::content;
use crate::oci::{Compression, Descriptor, Digest, ImageConfig, Manifest};
use crate::snapshots::{self, Labels, Mount, MountError, MountGuard, Snapshotter};

mod apply;
pub(crate) mod sys;
pub mod tartest;
#[cfg(test)]
mod tests;

pub(crate) use apply::copy_entry;
pub use apply::{apply_layer, ApplyOptions, ApplyStats, WhiteoutMode};

/// The label set on a committed layer snapshot: the uncompressed digest of its layer.
pub const LABEL_DIFF_ID: &str = "kapsel.io/diff-id";
/// The label set on an extraction in progress: the chain id it will be committed as.
pub const LABEL_UNPACKING: &str = "kapsel.io/unpacking";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer entry {path:?} refused: {reason}")]
    Hostile { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer: {0}")]
    Tar(#[source] io::Error),
    #[error("unpack destination {path}: {source}")]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: uncompressed digest {actual} does not match the image config's diff_id {expected}; the blob or the config is corrupt: remove the image and pull it again")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("the manifest lists {layers} layers but the image config has {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error(
        "layer {digest} has media type {media_type:?}, which is not a layer type kapsel can unpack"
    )]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("the image has no layers")]
    NoLayers,
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("starting the {kind} decompressor: {source}")]
    Decompress {
        kind: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unpack mount point {path}: {source}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Content(#[from] content::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshots::Error),
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// A reader of the uncompressed tar stream of a layer blob.
pub fn decompress<'a>(
    blob: impl Read + Send + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + Send + 'a>, Error> {
    Ok(match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(|source| {
                Error::Decompress {
                    kind: "zstd",
                    source,
                }
            })?)
        }
    })
}

/// The chain ids of a layer stack (OCI image spec): `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => chain_id(parent, d),
        };
        out.push(next);
    }
    out
}

/// The chain id of `diff_id` on top of the chain `parent`.
pub fn chain_id(parent: &Digest, diff_id: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(parent.as_str().as_bytes());
    h.update(b" ");
    h.update(diff_id.as_str().as_bytes());
    Digest::from_hasher(h)
}

/// Applies a layer stream to a snapshot given by its mounts, the way containerd's applier does:
/// an overlay with an upper directory is written directly in overlayfs's whiteout form (no
/// mount needed), a single bind mount directly into its source, anything else through a
/// temporary mount with whiteouts as deletions.
pub fn apply_to_mounts(mounts: &[Mount], tar_stream: impl Read) -> Result<ApplyStats, Error> {
    if let [m] = mounts {
        if m.kind == "overlay" {
            let opt = |p: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(p).map(str::to_string))
            };
            if let Some(upper) = opt("upperdir=") {
                let parents = opt("lowerdir=")
                    .map(|l| l.split(':').map(PathBuf::from).collect())
                    .unwrap_or_default();
                let opts = ApplyOptions {
                    whiteouts: WhiteoutMode::Overlay,
                    parents,
                    ignore_chown_errors: false,
                };
                return apply_layer(&PathBuf::from(upper), tar_stream, &opts);
            }
        } else if m.kind == "bind" && !m.options.iter().any(|o| o == "ro") {
            return apply_layer(
                &PathBuf::from(&m.source),
                tar_stream,
                &ApplyOptions::default(),
            );
        }
    }
    apply_mounted(mounts, tar_stream)
}

/// Mounts `mounts` on a temporary directory and applies the layer through the mount.
pub fn apply_mounted(mounts: &[Mount], tar_stream: impl Read) -> Result<ApplyStats, Error> {
    let dir = std::env::temp_dir().join(format!("kapsel-unpack-{}", random_hex()));
    std::fs::create_dir(&dir).map_err(|source| Error::MountPoint {
        path: dir.clone(),
        source,
    })?;
    let res = (|| {
        let guard = MountGuard::mount(mounts, &dir)?;
        let stats = apply_layer(&dir, tar_stream, &ApplyOptions::default())?;
        guard.unmount()?;
        Ok(stats)
    })();
    let _ = std::fs::remove_dir(&dir);
    res
}

/// Runs `consume` on a reader fed by a helper thread that reads `source` ahead (reading a
/// blob and decompressing it overlaps with writing files), in chunks of 256 KiB.
pub fn pipelined<T>(source: impl Read + Send, consume: impl FnOnce(&mut dyn Read) -> T) -> T {
    use std::sync::mpsc::sync_channel;
    const CHUNK: usize = 256 * 1024;
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(8);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut source = source;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                // Fill whole chunks: decoders return small reads.
                let res = loop {
                    match source.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == CHUNK {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let end = filled < CHUNK;
                let msg = match res {
                    Ok(()) => Ok(buf),
                    Err(e) => Err(e),
                };
                let failed = msg.is_err();
                // A closed receiver means the consumer stopped: stop reading too.
                if tx.send(msg).is_err() || end || failed {
                    return;
                }
            }
        });
        let mut reader = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        };
        consume(&mut reader)
        // `reader` (the receiver) drops here, before the scope joins the helper.
    })
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.done = chunk.len() < 256 * 1024;
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the layer reader thread stopped",
                    ));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// 16 random hex digits (for unique extraction keys and mount points).
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if filled.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = ((t as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The result of unpacking one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUnpacked {
    /// The chain id, also the name of the committed snapshot.
    pub chain_id: Digest,
    pub stats: ApplyStats,
}

/// Unpacks one layer blob (read as it arrives: it may still be downloading) on top of the
/// committed snapshot `parent` (a chain id, `None` for the first layer), checks its diff_id and
/// commits it as its chain id. The extraction snapshot is removed on failure; a concurrent
/// unpack that committed the same chain id first counts as success.
pub fn unpack_layer(
    sn: &dyn Snapshotter,
    parent: Option<&Digest>,
    layer: &Descriptor,
    diff_id: &Digest,
    blob: impl Read + Send,
) -> Result<LayerUnpacked, Error> {
    let chain = match parent {
        None => diff_id.clone(),
        Some(p) => chain_id(p, diff_id),
    };
    let ctx = |source: Error| Error::Layer {
        digest: layer.digest.clone(),
        source: Box::new(source),
    };
    let compression =
        Compression::of_layer(&layer.media_type).ok_or_else(|| Error::UnsupportedMediaType {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        })?;
    let key = format!("extract-{}-{}", random_hex(), chain);
    let labels = Labels::from([(LABEL_UNPACKING.to_string(), chain.to_string())]);
    let mounts = sn
        .prepare(&key, parent.map(Digest::as_str), labels)
        .map_err(|e| ctx(e.into()))?;
    let res = (|| {
        let stream = decompress(blob, compression)?;
        let stats = pipelined(stream, |r| apply_to_mounts(&mounts, r))?;
        if &stats.diff_id != diff_id {
            return Err(Error::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        let labels = Labels::from([(LABEL_DIFF_ID.to_string(), diff_id.to_string())]);
        match sn.commit(chain.as_str(), &key, labels) {
            Ok(()) => {}
            Err(snapshots::Error::AlreadyExists(_)) => {
                sn.remove(&key)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(stats)
    })();
    match res {
        Ok(stats) => Ok(LayerUnpacked {
            chain_id: chain,
            stats,
        }),
        Err(e) => {
            if let Err(rm) = sn.remove(&key) {
                if !matches!(rm, snapshots::Error::NotFound(_)) {
                    tracing::warn!(key, error = %rm, "cannot remove a failed extraction snapshot");
                }
            }
            Err(match e {
                e @ Error::DiffIdMismatch { .. } => e,
                e => ctx(e),
            })
        }
    }
}

/// Removes the extraction snapshots an interrupted unpack left (active snapshots labelled
/// [`LABEL_UNPACKING`]); for daemon start-up, before any unpack runs. Returns their keys.
pub fn remove_interrupted_extractions(sn: &dyn Snapshotter) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    for info in sn.walk()? {
        if info.kind == snapshots::Kind::Active && info.labels.contains_key(LABEL_UNPACKING) {
            sn.remove(&info.name)?;
            removed.push(info.name);
        }
    }
    Ok(removed)
}

/// Progress of [`unpack_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnpackEvent {
    /// The layer's chain id is already a committed snapshot.
    LayerSkipped { index: usize, chain_id: Digest },
    LayerStarted {
        index: usize,
        digest: Digest,
        size: u64,
    },
    LayerDone {
        index: usize,
        chain_id: Digest,
        stats: ApplyStats,
    },
}

/// Unpacks every layer of an image, in order, into committed snapshots named by chain id and
/// returns the chain id of the top layer (the snapshot the image's rootfs is).
pub fn unpack_image(
    store: &dyn content::Store,
    sn: &dyn Snapshotter,
    manifest: &Manifest,
    config: &ImageConfig,
    progress: &mut dyn FnMut(UnpackEvent),
) -> Result<String, Error> {
    let diff_ids = &config.rootfs.diff_ids;
    if manifest.layers.len() != diff_ids.len() {
        return Err(Error::LayerCount {
            layers: manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    if diff_ids.is_empty() {
        return Err(Error::NoLayers);
    }
    let chains = chain_ids(diff_ids);
    for (i, layer) in manifest.layers.iter().enumerate() {
        match sn.stat(chains[i].as_str()) {
            Ok(info) if info.kind == snapshots::Kind::Committed => {
                progress(UnpackEvent::LayerSkipped {
                    index: i,
                    chain_id: chains[i].clone(),
                });
                continue;
            }
            Ok(_) | Err(snapshots::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        progress(UnpackEvent::LayerStarted {
            index: i,
            digest: layer.digest.clone(),
            size: layer.size,
        });
        let blob = store.reader(&layer.digest)?;
        let parent = if i == 0 { None } else { Some(&chains[i - 1]) };
        let done = unpack_layer(sn, parent, layer, &diff_ids[i], blob)?;
        progress(UnpackEvent::LayerDone {
            index: i,
            chain_id: done.chain_id,
            stats: done.stats,
        });
    }
    Ok(chains[chains.len() - 1].to_string())
}
