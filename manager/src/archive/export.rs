//! Export of images from the content store as a docker-archive or an OCI layout tarball.
//!
//! Output is deterministic (sorted where there is a choice, mtime 0, uid/gid 0): the same
//! images give the same bytes. Docker-archive layers are uncompressed tars named by their
//! diff_id (`<hex>/layer.tar`), as skopeo writes them and `docker load` reads them; compressed
//! layers are decompressed on the way (through a temporary blob, verified against the diff_id
//! and removed afterwards). `RepoTags` hold full names (`docker.io/library/busybox:latest`):
//! docker load shortens them as usual, and podman does not take a short name for `localhost/`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use super::{Error, Format, Result, ANNOTATION_IMAGE_NAME};
use crate::content::{self, Store};
use crate::oci::{
    Compression, Descriptor, Digest, ImageConfig, Index, Manifest, ANNOTATION_REF_NAME,
    MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX,
};
use crate::registry::{default_platform, select_manifest, Reference};

fn is_index(mt: &str) -> bool {
    mt == MEDIA_OCI_INDEX || mt == MEDIA_DOCKER_LIST
}

struct Exporter<'a, W: Write> {
    store: &'a dyn Store,
    tar: tar::Builder<W>,
    written: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl<'a, W: Write> Exporter<'a, W> {
    fn serr(&self, name: &str, source: content::Error) -> Error {
        Error::Store {
            name: name.to_string(),
            source,
        }
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if !self.dirs.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
            .map_err(Error::Write)
    }

    fn file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.tar
            .append_data(&mut h, path, data)
            .map_err(Error::Write)
    }

    fn blob_file(&mut self, name: &str, path: &str, digest: &Digest) -> Result<()> {
        if self.written.contains(path) {
            return Ok(());
        }
        let mut r = self.store.reader(digest).map_err(|e| self.serr(name, e))?;
        let size = r.size();
        self.file(path, size, &mut r)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str, d: &Digest) -> Result<T> {
        let data = self.store.read_all(d).map_err(|e| self.serr(name, e))?;
        serde_json::from_slice(&data).map_err(|e| Error::Image {
            name: name.to_string(),
            reason: format!("invalid JSON in {d}: {e}"),
        })
    }

    /// The manifest to write for `target`: itself, or the index's manifest for this machine's
    /// platform (else the first one the store has).
    fn platform_manifest(&self, name: &str, target: &Descriptor) -> Result<(Descriptor, Manifest)> {
        if !is_index(&target.media_type) {
            let m: Manifest = self.read_json(name, &target.digest)?;
            return Ok((target.clone(), m));
        }
        let idx: Index = self.read_json(name, &target.digest)?;
        let present = Index {
            manifests: idx
                .manifests
                .iter()
                .filter(|m| self.store.info(&m.digest).is_ok())
                .cloned()
                .collect(),
            ..idx
        };
        let chosen = select_manifest(&present, &default_platform())
            .or(present.manifests.first())
            .ok_or_else(|| Error::Image {
                name: name.to_string(),
                reason: format!(
                    "none of the manifests of index {} is in the store",
                    target.digest
                ),
            })?
            .clone();
        self.platform_manifest(name, &chosen)
    }
}

/// Writes `images` (name, target in `store`) to `writer` as `format`.
pub fn export(
    store: &dyn Store,
    images: &[(String, Descriptor)],
    writer: impl Write,
    format: Format,
) -> Result<()> {
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut ex = Exporter {
        store,
        tar,
        written: BTreeSet::new(),
        dirs: BTreeSet::new(),
    };
    match format {
        Format::DockerArchive => docker_archive(&mut ex, images)?,
        Format::OciLayout => oci_layout(&mut ex, images)?,
    }
    let mut w = ex.tar.into_inner().map_err(Error::Write)?;
    w.flush().map_err(Error::Write)
}

fn docker_archive<W: Write>(
    ex: &mut Exporter<'_, W>,
    images: &[(String, Descriptor)],
) -> Result<()> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    // One entry per manifest, in the order first named.
    let mut order: Vec<Digest> = Vec::new();
    let mut entries: BTreeMap<Digest, Entry> = BTreeMap::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Temporary uncompressed blobs made for the export, removed at the end.
    let mut temps: Vec<Digest> = Vec::new();
    let res = (|| {
        for (name, target) in images {
            let (mdesc, m) = ex.platform_manifest(name, target)?;
            let tag = Reference::parse(name)
                .ok()
                .filter(|r| r.tag.is_some())
                .map(|r| r.with_tag(r.tag.as_deref().unwrap_or("latest")));
            if let Some(e) = entries.get_mut(&mdesc.digest) {
                if let (Some(t), Some(tags)) = (&tag, e.repo_tags.as_mut()) {
                    tags.push(t.to_string());
                } else if let Some(t) = &tag {
                    e.repo_tags = Some(vec![t.to_string()]);
                }
                continue;
            }
            let config: ImageConfig = ex.read_json(name, &m.config.digest)?;
            if config.rootfs.diff_ids.len() != m.layers.len() {
                return Err(Error::Image {
                    name: name.clone(),
                    reason: format!(
                        "manifest {} has {} layers, its config {} diff_ids",
                        mdesc.digest,
                        m.layers.len(),
                        config.rootfs.diff_ids.len()
                    ),
                });
            }
            let cfg_path = format!("{}.json", m.config.digest.hex());
            ex.blob_file(name, &cfg_path, &m.config.digest)?;
            let mut layer_paths = Vec::new();
            for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
                let dir = diff_id.hex().to_string();
                let path = format!("{dir}/layer.tar");
                layer_paths.push(path.clone());
                if ex.written.contains(&path) {
                    continue;
                }
                let compression =
                    Compression::of_layer(&l.media_type).ok_or_else(|| Error::Image {
                        name: name.clone(),
                        reason: format!(
                            "layer {} has media type {:?}, not a layer",
                            l.digest, l.media_type
                        ),
                    })?;
                let plain = match compression {
                    Compression::None => {
                        if l.digest != *diff_id {
                            return Err(Error::Image {
                                name: name.clone(),
                                reason: format!(
                                    "uncompressed layer {} differs from its diff_id {diff_id}",
                                    l.digest
                                ),
                            });
                        }
                        l.digest.clone()
                    }
                    c => {
                        if ex.store.info(diff_id).is_err() {
                            decompress_into_store(ex.store, name, &l.digest, diff_id, c)?;
                            temps.push(diff_id.clone());
                        }
                        diff_id.clone()
                    }
                };
                ex.dir(&dir)?;
                ex.blob_file(name, &path, &plain)?;
            }
            if let Some(t) = &tag {
                let fam = t.familiar();
                if let Some((repo, tg)) = fam.rsplit_once(':') {
                    let top = layer_paths
                        .last()
                        .and_then(|p| p.split('/').next())
                        .unwrap_or("")
                        .to_string();
                    repositories
                        .entry(repo.to_string())
                        .or_default()
                        .insert(tg.to_string(), top);
                }
            }
            order.push(mdesc.digest.clone());
            entries.insert(
                mdesc.digest.clone(),
                Entry {
                    config: cfg_path,
                    repo_tags: tag.map(|t| vec![t.to_string()]),
                    layers: layer_paths,
                },
            );
        }
        let list: Vec<&Entry> = order.iter().map(|d| &entries[d]).collect();
        let manifest = serde_json::to_vec(&list).expect("manifest.json serialises");
        ex.file(
            "manifest.json",
            manifest.len() as u64,
            &mut manifest.as_slice(),
        )?;
        if !repositories.is_empty() {
            let r = serde_json::to_vec(&repositories).expect("repositories serialises");
            ex.file("repositories", r.len() as u64, &mut r.as_slice())?;
        }
        Ok(())
    })();
    for t in temps {
        let _ = ex.store.delete(&t);
    }
    res
}

/// Stores the decompressed form of `blob` and checks it is `diff_id`.
fn decompress_into_store(
    store: &dyn Store,
    name: &str,
    blob: &Digest,
    diff_id: &Digest,
    c: Compression,
) -> Result<()> {
    let serr = |source| Error::Store {
        name: name.to_string(),
        source,
    };
    let r = store.reader(blob).map_err(serr)?;
    let mut dec: Box<dyn Read> = match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(
                zstd::stream::read::Decoder::new(r).map_err(|e| Error::Image {
                    name: name.to_string(),
                    reason: format!("layer {blob}: zstd: {e}"),
                })?,
            )
        }
        Compression::None => Box::new(r),
    };
    let reference = format!("export-{}-{}", std::process::id(), diff_id.hex());
    let mut w = store.writer(&reference, None).map_err(serr)?;
    w.truncate().map_err(serr)?;
    if let Err(e) = io::copy(&mut dec, &mut w) {
        drop(w);
        let _ = store.abort(&reference);
        return Err(Error::Image {
            name: name.to_string(),
            reason: format!("layer {blob}: decompressing: {e}"),
        });
    }
    let got = w.commit(None, BTreeMap::new()).map_err(serr)?;
    if got != *diff_id {
        let _ = store.delete(&got);
        return Err(Error::Image {
            name: name.to_string(),
            reason: format!("layer {blob} decompresses to {got}, its config says {diff_id}"),
        });
    }
    Ok(())
}

fn oci_layout<W: Write>(ex: &mut Exporter<'_, W>, images: &[(String, Descriptor)]) -> Result<()> {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    ex.file("oci-layout", layout.len() as u64, &mut layout.as_slice())?;
    ex.dir("blobs")?;
    ex.dir("blobs/sha256")?;
    let mut index_entries = Vec::new();
    for (name, target) in images {
        // An index is written whole when the store has all of it; else its platform manifest.
        let mut target = target.clone();
        if is_index(&target.media_type) {
            let idx: Index = ex.read_json(name, &target.digest)?;
            if idx
                .manifests
                .iter()
                .any(|m| ex.store.info(&m.digest).is_err())
            {
                target = ex.platform_manifest(name, &target)?.0;
            } else {
                for m in &idx.manifests {
                    write_manifest_blobs(ex, name, m)?;
                }
            }
        } else {
            write_manifest_blobs(ex, name, &target)?;
        }
        ex.blob_file(
            name,
            &format!("blobs/sha256/{}", target.digest.hex()),
            &target.digest,
        )?;
        let mut ann = BTreeMap::new();
        if let Ok(r) = Reference::parse(name) {
            ann.insert(ANNOTATION_IMAGE_NAME.to_string(), r.to_string());
            if let Some(t) = &r.tag {
                ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
            }
        }
        index_entries.push(Descriptor {
            annotations: if ann.is_empty() { None } else { Some(ann) },
            ..target
        });
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.to_string()),
        manifests: index_entries,
        annotations: None,
    };
    let data = serde_json::to_vec(&index).expect("index serialises");
    ex.file("index.json", data.len() as u64, &mut data.as_slice())
}

fn write_manifest_blobs<W: Write>(
    ex: &mut Exporter<'_, W>,
    name: &str,
    d: &Descriptor,
) -> Result<()> {
    let m: Manifest = ex.read_json(name, &d.digest)?;
    for b in std::iter::once(&m.config).chain(m.layers.iter()) {
        ex.blob_file(name, &format!("blobs/sha256/{}", b.digest.hex()), &b.digest)?;
    }
    ex.blob_file(name, &format!("blobs/sha256/{}", d.digest.hex()), &d.digest)
}
