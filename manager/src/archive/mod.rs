//! Image archives: docker-archive tarballs (what `docker save` writes and `docker load` reads)
//! and OCI image layout archives, imported into and exported from a content store.
//!
//! Import streams the tar once: every regular file goes into the content store (hashed as it is
//! written; files under `blobs/sha256/` must match their name), small JSON documents are kept
//! in memory too. Then the archive's index (`index.json`, else `manifest.json`) says which
//! images it holds. A docker-archive image gets an OCI manifest built for it (its layers are
//! stored as they are in the archive: uncompressed tars, whose digests are their diff_ids).
//! Paths that leave the archive (`..`, absolute, links pointing out) are refused. The archive
//! itself may be gzip- or zstd-compressed.
//!
//! A failed import leaves no ingest behind; blobs it already committed (complete and verified)
//! stay until garbage collection, since another operation may share them.

mod export;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

pub use export::export;

use crate::content::{self, Store};
use crate::oci::{
    Descriptor, Digest, ImageConfig, Index, Manifest, ANNOTATION_REF_NAME, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST,
};
use crate::registry::Reference;

/// The annotation containerd and Docker put on an OCI layout's index entries: the full name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// JSON documents of an archive (manifest.json, index.json, configs) read at most this big.
const MAX_JSON: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `manifest.json` + `<config>.json` + `<id>/layer.tar` (Docker ≤ 24, skopeo docker-archive).
    DockerArchive,
    /// `oci-layout` + `index.json` + `blobs/sha256/*` (OCI image layout, as a tar).
    OciLayout,
}

/// One image found in an archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedImage {
    /// The normalised name (`docker.io/library/busybox:latest`), when the archive gives one.
    pub name: Option<String>,
    /// What the name points at: a manifest or an index, in the store.
    pub target: Descriptor,
}

/// A progress report: an entry of the archive read (import) or written (export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub entry: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("archive entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("archive entry {path:?}: path outside the archive")]
    PathEscape { path: String },
    #[error("archive entry {path:?}: {source}")]
    Content {
        path: String,
        #[source]
        source: content::Error,
    },
    #[error("not an image archive: no index.json+oci-layout and no manifest.json")]
    NotAnArchive,
    #[error(
        "not a tar archive, or a corrupt one: an entry header after byte {offset} does not parse"
    )]
    BadHeader { offset: u64 },
    #[error("archive {file}: invalid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive {file}: refers to {what} that the archive does not contain")]
    Missing { file: String, what: String },
    #[error("archive {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("image {name}: {source}")]
    Store {
        name: String,
        #[source]
        source: content::Error,
    },
    #[error("image {name}: {reason}")]
    Image { name: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file of the archive once stored.
#[derive(Debug, Clone)]
struct Stored {
    digest: Digest,
    size: u64,
    /// The first bytes, to tell gzip and zstd layers from plain tars.
    magic: [u8; 4],
}

/// Normalises an entry path: no leading `./`, no `.`; refuses `..` and absolute paths.
fn clean_path(raw: &Path) -> Result<String> {
    let shown = raw.to_string_lossy().to_string();
    let mut parts: Vec<String> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| Error::Entry {
                        path: shown.clone(),
                        reason: "path is not UTF-8".into(),
                    })?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Error::PathEscape { path: shown })
            }
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target (relative to the link's directory, or archive-absolute for hard
/// links) inside the archive.
fn resolve_link(link_path: &str, target: &Path, hard: bool) -> Result<String> {
    let shown = format!("{link_path} -> {}", target.display());
    if target.is_absolute() {
        return Err(Error::PathEscape { path: shown });
    }
    let mut parts: Vec<&str> = if hard {
        Vec::new()
    } else {
        let mut p: Vec<&str> = link_path.split('/').collect();
        p.pop();
        p
    };
    for c in target.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str().ok_or_else(|| Error::PathEscape {
                path: shown.clone(),
            })?),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(Error::PathEscape { path: shown });
                }
            }
            _ => return Err(Error::PathEscape { path: shown }),
        }
    }
    Ok(parts.join("/"))
}

fn is_json_doc(path: &str) -> bool {
    path == "manifest.json"
        || path == "index.json"
        || path == "oci-layout"
        || path == "repositories"
        || path.ends_with(".json")
}

static INGEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Reads an archive and stores its images; see the module documentation.
pub fn import(
    store: &dyn Store,
    reader: impl Read,
    progress: &dyn Fn(Progress),
) -> Result<Vec<ImportedImage>> {
    // `docker save | gzip` and zstd-compressed archives are read as they are, like docker load.
    let mut buffered = io::BufReader::with_capacity(256 * 1024, reader);
    let head = io::BufRead::fill_buf(&mut buffered).map_err(Error::Read)?;
    let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(Error::Read)?)
    } else {
        Box::new(buffered)
    };
    let mut files: HashMap<String, Stored> = HashMap::new();
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut ar = tar::Archive::new(reader);
    let mut entries = 0usize;
    let mut last_end = 0u64;
    for entry in ar.entries().map_err(Error::Read)? {
        let mut entry = entry.map_err(|e| header_err(e, last_end))?;
        last_end = entry.raw_file_position() + entry.size();
        entries += 1;
        let raw = entry.path().map_err(Error::Read)?.into_owned();
        let path = clean_path(&raw)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {
                continue
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(Error::Read)?
                    .ok_or_else(|| Error::Entry {
                        path: path.clone(),
                        reason: "link without a target".into(),
                    })?
                    .into_owned();
                let to = resolve_link(&path, &target, kind == tar::EntryType::Link)?;
                links.push((path, to));
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                return Err(Error::Entry {
                    path,
                    reason: format!("unexpected entry type {other:?} in an image archive"),
                })
            }
        }
        let size = entry.header().size().map_err(Error::Read)?;
        // Docker's v1 metadata (`<id>/json`, `<id>/VERSION`) is not needed: skipped.
        if path.ends_with("/json") || path.ends_with("/VERSION") {
            continue;
        }
        if is_json_doc(&path) && size <= MAX_JSON {
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).map_err(Error::Read)?;
            let blob_like = path.starts_with("blobs/")
                || (path.ends_with(".json") && path != "manifest.json" && path != "index.json");
            if blob_like {
                let st = store_bytes(store, &path, &buf)?;
                files.insert(path.clone(), st);
            }
            progress(Progress {
                entry: path.clone(),
                bytes: size,
            });
            docs.insert(path, buf);
            continue;
        }
        let st = store_stream(store, &path, &mut entry, size)?;
        progress(Progress {
            entry: path.clone(),
            bytes: size,
        });
        files.insert(path, st);
    }
    if entries == 0 {
        return Err(Error::NotAnArchive);
    }
    // Links resolve to what their target holds (docker save links duplicate layers).
    for (from, to) in &links {
        let mut t = to.clone();
        for _ in 0..16 {
            match links.iter().find(|(f, _)| *f == t) {
                Some((_, next)) => t = next.clone(),
                None => break,
            }
        }
        if let Some(st) = files.get(&t).cloned() {
            files.insert(from.clone(), st);
        }
        if let Some(d) = docs.get(&t).cloned() {
            docs.insert(from.clone(), d);
        }
    }
    let a = Archive { store, files, docs };
    if a.docs.contains_key("index.json") && a.docs.contains_key("oci-layout") {
        a.import_oci()
    } else if a.docs.contains_key("manifest.json") {
        a.import_docker()
    } else {
        Err(Error::NotAnArchive)
    }
}

/// A tar error reading an entry header: garbage (the tar crate quotes the raw bytes, which
/// helps nobody) or a read error of the file itself.
fn header_err(e: io::Error, offset: u64) -> Error {
    if e.raw_os_error().is_none() && e.kind() != io::ErrorKind::UnexpectedEof {
        Error::BadHeader { offset }
    } else {
        Error::Read(e)
    }
}

fn store_bytes(store: &dyn Store, path: &str, data: &[u8]) -> Result<Stored> {
    let mut r = data;
    store_stream(store, path, &mut r, data.len() as u64)
}

/// Streams `size` bytes into the store; a file named `blobs/sha256/<hex>` must have that digest.
fn store_stream(store: &dyn Store, path: &str, r: &mut dyn Read, size: u64) -> Result<Stored> {
    let cerr = |source| Error::Content {
        path: path.to_string(),
        source,
    };
    let named: Option<Digest> = path
        .strip_prefix("blobs/sha256/")
        .map(|h| {
            format!("sha256:{h}").parse().map_err(|_| Error::Entry {
                path: path.to_string(),
                reason: "a blob name must be 64 lowercase hex digits".into(),
            })
        })
        .transpose()?;
    let reference = format!(
        "import-{}-{}",
        std::process::id(),
        INGEST_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut w = store
        .writer(&reference, named.as_ref().map(|d| (d, size)))
        .map_err(cerr)?;
    let res = (|| {
        w.truncate().map_err(cerr)?;
        let mut magic = [0u8; 4];
        let mut buf = vec![0u8; 256 * 1024];
        let mut done = 0u64;
        let mut src = r.take(size);
        loop {
            let n = src.read(&mut buf).map_err(|e| Error::Entry {
                path: path.to_string(),
                reason: format!("reading it: {e}"),
            })?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let at = done as usize + i;
                if at < 4 {
                    magic[at] = *b;
                }
            }
            w.write_all(&buf[..n]).map_err(|e| {
                cerr(content::Error::Io {
                    op: "write",
                    path: path.into(),
                    source: e,
                })
            })?;
            done += n as u64;
        }
        if done != size {
            return Err(Error::Entry {
                path: path.to_string(),
                reason: format!(
                    "the archive is truncated: it ends after {done} of its {size} bytes"
                ),
            });
        }
        Ok(magic)
    })();
    let magic = match res {
        Ok(m) => m,
        Err(e) => {
            drop(w);
            let _ = store.abort(&reference);
            return Err(e);
        }
    };
    // A blob named by its digest is checked before it is committed: a wrong one is discarded.
    let digest = w
        .commit(named.as_ref().map(|d| (d, size)), BTreeMap::new())
        .map_err(cerr)?;
    if let Some(n) = named {
        if n != digest {
            return Err(cerr(content::Error::DigestMismatch {
                expected: n,
                actual: digest,
            }));
        }
    }
    Ok(Stored {
        digest,
        size,
        magic,
    })
}

struct Archive<'a> {
    store: &'a dyn Store,
    files: HashMap<String, Stored>,
    docs: HashMap<String, Vec<u8>>,
}

fn parse_json<T: serde::de::DeserializeOwned>(file: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|source| Error::Json {
        file: file.to_string(),
        source,
    })
}

/// A name from an archive, normalised; `None` when it is not a valid reference.
fn normalise(name: &str) -> Option<String> {
    Reference::parse(name).ok().map(|r| r.to_string())
}

impl Archive<'_> {
    fn blob_path(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// Checks a descriptor's blob is in the archive (or already in the store) with its size.
    fn check_blob(&self, file: &str, d: &Descriptor) -> Result<()> {
        let p = Self::blob_path(&d.digest);
        let size = match self.files.get(&p) {
            Some(st) => st.size,
            None => match self.store.info(&d.digest) {
                Ok(i) => i.size,
                Err(_) => {
                    return Err(Error::Missing {
                        file: file.to_string(),
                        what: format!("blob {} ({})", d.digest, d.media_type),
                    })
                }
            },
        };
        if size != d.size {
            return Err(Error::Invalid {
                file: file.to_string(),
                reason: format!(
                    "blob {} is {size} bytes, the descriptor says {}",
                    d.digest, d.size
                ),
            });
        }
        Ok(())
    }

    /// Checks a manifest or index and everything it refers to.
    fn check_tree(&self, d: &Descriptor, depth: usize) -> Result<()> {
        let file = Self::blob_path(&d.digest);
        self.check_blob("index.json", d)?;
        if depth > 4 {
            return Err(Error::Invalid {
                file,
                reason: "indexes nested too deep".into(),
            });
        }
        let data = self
            .store
            .read_all(&d.digest)
            .map_err(|source| Error::Content {
                path: file.clone(),
                source,
            })?;
        match d.media_type.as_str() {
            MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => {
                let idx: Index = parse_json(&file, &data)?;
                for m in &idx.manifests {
                    // Indexes may list manifests of other platforms the archive leaves out
                    // (a one-platform save); only what is there is checked.
                    if self.files.contains_key(&Self::blob_path(&m.digest))
                        || self.store.info(&m.digest).is_ok()
                    {
                        self.check_tree(m, depth + 1)?;
                    }
                }
            }
            MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => {
                let m: Manifest = parse_json(&file, &data)?;
                self.check_blob(&file, &m.config)?;
                for l in &m.layers {
                    self.check_blob(&file, l)?;
                }
            }
            other => {
                return Err(Error::Invalid {
                    file: "index.json".into(),
                    reason: format!("unsupported media type {other:?} for {}", d.digest),
                })
            }
        }
        Ok(())
    }

    fn import_oci(&self) -> Result<Vec<ImportedImage>> {
        let index: Index = parse_json("index.json", &self.docs["index.json"])?;
        let mut out = Vec::new();
        for d in &index.manifests {
            self.check_tree(d, 0)?;
            let ann = d.annotations.as_ref();
            let name = ann
                .and_then(|a| a.get(ANNOTATION_IMAGE_NAME))
                .and_then(|n| normalise(n))
                .or_else(|| {
                    // A ref.name that is a whole reference (not just "latest") names the image.
                    ann.and_then(|a| a.get(ANNOTATION_REF_NAME))
                        .filter(|n| n.contains('/') || n.contains(':'))
                        .and_then(|n| normalise(n))
                });
            let mut target = d.clone();
            target.annotations = None;
            out.push(ImportedImage { name, target });
        }
        Ok(out)
    }

    fn import_docker(&self) -> Result<Vec<ImportedImage>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = parse_json("manifest.json", &self.docs["manifest.json"])?;
        // Legacy `repositories`: {"repo": {"tag": "<top layer id>"}}, names for entries
        // without RepoTags.
        let legacy: BTreeMap<String, BTreeMap<String, String>> = match self.docs.get("repositories")
        {
            Some(r) => parse_json("repositories", r)?,
            None => BTreeMap::new(),
        };
        let mut out = Vec::new();
        for e in &entries {
            let cfg_path = clean_path(Path::new(&e.config))?;
            let cfg = self.files.get(&cfg_path).ok_or_else(|| Error::Missing {
                file: "manifest.json".into(),
                what: format!("config {}", e.config),
            })?;
            if let Some(hex) = cfg_path.strip_suffix(".json").filter(|h| h.len() == 64) {
                if hex != cfg.digest.hex() {
                    return Err(Error::Content {
                        path: cfg_path.clone(),
                        source: content::Error::DigestMismatch {
                            expected: format!("sha256:{hex}").parse().map_err(|_| {
                                Error::Entry {
                                    path: cfg_path.clone(),
                                    reason: "config name is not a digest".into(),
                                }
                            })?,
                            actual: cfg.digest.clone(),
                        },
                    });
                }
            }
            let cfg_data = self
                .store
                .read_all(&cfg.digest)
                .map_err(|source| Error::Content {
                    path: cfg_path.clone(),
                    source,
                })?;
            let config: ImageConfig = parse_json(&cfg_path, &cfg_data)?;
            if config.rootfs.diff_ids.len() != e.layers.len() {
                return Err(Error::Invalid {
                    file: "manifest.json".into(),
                    reason: format!(
                        "{} lists {} layers, its config {} diff_ids",
                        e.config,
                        e.layers.len(),
                        config.rootfs.diff_ids.len()
                    ),
                });
            }
            let mut layers = Vec::new();
            let mut top_id = String::new();
            for (i, lp) in e.layers.iter().enumerate() {
                let p = clean_path(Path::new(lp))?;
                let st = self.files.get(&p).ok_or_else(|| Error::Missing {
                    file: "manifest.json".into(),
                    what: format!("layer {lp}"),
                })?;
                let media_type = match st.magic {
                    [0x1f, 0x8b, ..] => MEDIA_OCI_LAYER_GZIP,
                    [0x28, 0xb5, 0x2f, 0xfd] => MEDIA_OCI_LAYER_ZSTD,
                    _ => MEDIA_OCI_LAYER,
                };
                if media_type == MEDIA_OCI_LAYER && st.digest != config.rootfs.diff_ids[i] {
                    return Err(Error::Content {
                        path: p.clone(),
                        source: content::Error::DigestMismatch {
                            expected: config.rootfs.diff_ids[i].clone(),
                            actual: st.digest.clone(),
                        },
                    });
                }
                top_id = p.split('/').next().unwrap_or("").to_string();
                layers.push(Descriptor {
                    media_type: media_type.to_string(),
                    digest: st.digest.clone(),
                    size: st.size,
                    urls: None,
                    annotations: None,
                    platform: None,
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: MEDIA_OCI_CONFIG.to_string(),
                    digest: cfg.digest.clone(),
                    size: cfg.size,
                    urls: None,
                    annotations: None,
                    platform: None,
                },
                layers,
                annotations: None,
            };
            let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
            let st = store_bytes(self.store, "manifest (built)", &bytes)?;
            let target = Descriptor {
                media_type: MEDIA_OCI_MANIFEST.to_string(),
                digest: st.digest,
                size: st.size,
                urls: None,
                annotations: None,
                platform: None,
            };
            let mut names: Vec<String> = e
                .repo_tags
                .iter()
                .flatten()
                .filter_map(|t| normalise(t))
                .collect();
            if names.is_empty() {
                for (repo, tags) in &legacy {
                    for (tag, id) in tags {
                        if *id == top_id {
                            if let Some(n) = normalise(&format!("{repo}:{tag}")) {
                                names.push(n);
                            }
                        }
                    }
                }
            }
            if names.is_empty() {
                out.push(ImportedImage { name: None, target });
            } else {
                for n in names {
                    out.push(ImportedImage {
                        name: Some(n),
                        target: target.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
