//! The image service: image records (name → target descriptor) and what the CLI shows about
//! them, tag, remove (with garbage collection), inspect, prune; pull, push, import and export
//! run as jobs (`transfer.rs`, `jobs.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::content::{self, Store};
use crate::events::{self, Events};
use crate::gc;
use crate::metadata::{self, Db, ImageRecord};
use crate::oci::{Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use crate::registry::{self, Reference};
use crate::snapshots::{self, Snapshotter};

pub mod jobs;
pub mod time;
pub mod transfer;

#[cfg(test)]
mod tests;

/// gRPC status codes (what ttrpc carries and the CLI maps to messages).
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
    pub const UNAUTHENTICATED: i32 = 16;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories ({names})")]
    Conflict { id: String, names: String },
    #[error("{0}")]
    Reference(#[from] registry::ReferenceError),
    #[error("{0}")]
    Metadata(#[from] metadata::Error),
    #[error("{0}")]
    Content(#[from] content::Error),
    #[error("{0}")]
    Gc(#[from] gc::Error),
    #[error("{0}")]
    Registry(#[from] registry::Error),
    #[error("{0}")]
    Archive(#[from] crate::archive::Error),
    /// An archive being loaded, named by its path.
    #[error("{path}: {source}")]
    Load {
        path: String,
        #[source]
        source: crate::archive::Error,
    },
    #[error("unpacking {image}: {source}")]
    Unpack {
        image: String,
        #[source]
        source: crate::unpack::Error,
    },
    #[error("{0}")]
    Snapshot(#[from] snapshots::Error),
    #[error("image {image}: blob {digest} is not valid JSON: {source}")]
    Corrupt {
        image: String,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {image}: {what} is missing from the content store: pull or load it again")]
    Incomplete { image: String, what: String },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// The status code a client sees.
    pub fn code(&self) -> i32 {
        use registry::Error as R;
        match self {
            Error::NotFound(_) | Error::Metadata(metadata::Error::ImageNotFound { .. }) => {
                code::NOT_FOUND
            }
            Error::Conflict { .. } => code::FAILED_PRECONDITION,
            Error::Reference(_)
            | Error::InvalidArgument(_)
            | Error::Metadata(metadata::Error::InvalidNamespace(_))
            | Error::Metadata(metadata::Error::InvalidKey { .. }) => code::INVALID_ARGUMENT,
            Error::Registry(R::NotFound { .. }) => code::NOT_FOUND,
            Error::Registry(R::AuthRequired { .. }) => code::UNAUTHENTICATED,
            Error::Registry(R::Denied { .. }) => code::PERMISSION_DENIED,
            Error::Registry(R::Reference(_)) | Error::Registry(R::InvalidPlatform(_)) => {
                code::INVALID_ARGUMENT
            }
            Error::Registry(R::Connection { .. } | R::Tls { .. }) => code::UNAVAILABLE,
            Error::Registry(R::NoMatchingPlatform { .. }) => code::NOT_FOUND,
            Error::Archive(_) | Error::Load { .. } => code::INVALID_ARGUMENT,
            Error::Corrupt { .. } | Error::Incomplete { .. } => code::DATA_LOSS,
            Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                code::NOT_FOUND
            }
            Error::Cancelled => code::ABORTED,
            _ => code::INTERNAL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The record name of an image that has no name (loaded from an archive without one): its
/// target digest. Shown as `<none>`.
pub fn is_dangling_name(name: &str) -> bool {
    name.starts_with("sha256:")
}

/// What `kapsel images` shows about one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub record: ImageRecord,
    pub manifest: Option<Descriptor>,
    pub config: Option<Digest>,
    pub size: u64,
    /// Nanoseconds since the epoch, from the config's `created`.
    pub config_created: Option<i64>,
    pub incomplete: bool,
    pub unpacked: bool,
}

/// An image resolved to its platform manifest and config.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// kapseld's components, shared by every service.
pub struct Service {
    pub db: Db,
    pub store: Arc<dyn Store>,
    pub content_root: std::path::PathBuf,
    pub snapshotter: Arc<dyn Snapshotter>,
    pub events: Events,
    pub jobs: jobs::Jobs,
    /// Held by garbage collection, and by whatever makes content reachable (creating an
    /// image record checks its blobs under it), so neither sees the other half-done.
    pub gc_lock: Mutex<()>,
    pub insecure: Vec<String>,
    /// Roots of the per-registry certificate directories.
    pub certs_dirs: Vec<std::path::PathBuf>,
    pub platform: Platform,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("db", &self.db).finish()
    }
}

/// The namespace of a request (empty: `default`).
pub fn namespace(ns: &str) -> &str {
    if ns.is_empty() {
        metadata::DEFAULT_NAMESPACE
    } else {
        ns
    }
}

impl Service {
    fn read_json<T: for<'de> serde::Deserialize<'de>>(&self, image: &str, d: &Digest) -> Result<T> {
        let data = self.store.read_all(d).map_err(|e| match e {
            content::Error::NotFound(_) => Error::Incomplete {
                image: image.to_string(),
                what: format!("blob {d}"),
            },
            e => Error::Content(e),
        })?;
        serde_json::from_slice(&data).map_err(|source| Error::Corrupt {
            image: image.to_string(),
            digest: d.clone(),
            source,
        })
    }

    /// The manifest of this daemon's platform that `target` leads to (an index picks it; a
    /// manifest is itself), and its config.
    pub fn resolve(&self, image: &str, target: &Descriptor) -> Result<Resolved> {
        let mut desc = target.clone();
        for _ in 0..4 {
            let data = self.store.read_all(&desc.digest).map_err(|e| match e {
                content::Error::NotFound(_) => Error::Incomplete {
                    image: image.to_string(),
                    what: format!("{} {}", desc.media_type, desc.digest),
                },
                e => Error::Content(e),
            })?;
            let v: serde_json::Value =
                serde_json::from_slice(&data).map_err(|source| Error::Corrupt {
                    image: image.to_string(),
                    digest: desc.digest.clone(),
                    source,
                })?;
            if v.get("manifests").is_some() {
                let ix: Index = serde_json::from_value(v).map_err(|source| Error::Corrupt {
                    image: image.to_string(),
                    digest: desc.digest.clone(),
                    source,
                })?;
                // The platform's manifest among those present (a pull keeps only its own).
                let present = Index {
                    manifests: ix
                        .manifests
                        .iter()
                        .filter(|m| self.store.info(&m.digest).is_ok())
                        .cloned()
                        .collect(),
                    ..ix.clone()
                };
                let chosen = registry::select_manifest(&present, &self.platform)
                    .or(present.manifests.first())
                    .ok_or_else(|| Error::Incomplete {
                        image: image.to_string(),
                        what: format!("every manifest of index {}", desc.digest),
                    })?;
                desc = chosen.clone();
                continue;
            }
            let manifest: Manifest =
                serde_json::from_value(v).map_err(|source| Error::Corrupt {
                    image: image.to_string(),
                    digest: desc.digest.clone(),
                    source,
                })?;
            let config: ImageConfig = self.read_json(image, &manifest.config.digest)?;
            return Ok(Resolved {
                manifest_desc: desc,
                manifest,
                config,
            });
        }
        Err(Error::Incomplete {
            image: image.to_string(),
            what: "a manifest (indexes nested too deep)".to_string(),
        })
    }

    pub fn summarize(&self, rec: ImageRecord) -> Summary {
        let mut s = Summary {
            manifest: None,
            config: None,
            size: 0,
            config_created: None,
            incomplete: true,
            unpacked: false,
            record: rec,
        };
        let Ok(r) = self.resolve(&s.record.name, &s.record.target) else {
            return s;
        };
        s.manifest = Some(r.manifest_desc.clone());
        s.config = Some(r.manifest.config.digest.clone());
        s.config_created = r.config.created.as_deref().and_then(time::parse_rfc3339);
        s.incomplete = r
            .manifest
            .layers
            .iter()
            .any(|l| self.store.info(&l.digest).is_err());
        let chains = crate::unpack::chain_ids(&r.config.rootfs.diff_ids);
        let usages: Option<Vec<u64>> = chains
            .iter()
            .map(|c| self.snapshotter.usage(c.as_str()).ok().map(|u| u.size))
            .collect();
        match usages {
            Some(u) if !chains.is_empty() => {
                s.unpacked = true;
                s.size = u.iter().sum();
            }
            _ => {
                s.size =
                    r.manifest.config.size + r.manifest.layers.iter().map(|l| l.size).sum::<u64>();
            }
        }
        s
    }

    pub fn list(&self, ns: &str, filter: &str) -> Result<Vec<Summary>> {
        let recs = self.db.list_images(namespace(ns))?;
        Ok(recs
            .into_iter()
            .filter(|r| filter.is_empty() || r.name.contains(filter))
            .map(|r| self.summarize(r))
            .collect())
    }

    /// The records `reference` names: an exact record name, a name Docker-normalised, or an
    /// image id (config digest, with or without `sha256:`, or a prefix of its hex).
    pub fn find(&self, ns: &str, reference: &str) -> Result<Vec<Summary>> {
        let ns = namespace(ns);
        if let Ok(r) = self.db.get_image(ns, reference) {
            return Ok(vec![self.summarize(r)]);
        }
        if let Ok(norm) = Reference::parse(reference) {
            if let Ok(r) = self.db.get_image(ns, &norm.to_string()) {
                return Ok(vec![self.summarize(r)]);
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let all = self.list(ns, "")?;
            let by_id: Vec<Summary> = all
                .iter()
                .filter(|s| s.config.as_ref().is_some_and(|c| c.hex().starts_with(&hex)))
                .cloned()
                .collect();
            if !by_id.is_empty() {
                return Ok(by_id);
            }
            // A target (manifest) digest, as in a dangling record's name.
            let by_target: Vec<Summary> = all
                .into_iter()
                .filter(|s| s.record.target.digest.hex().starts_with(&hex))
                .collect();
            if !by_target.is_empty() {
                return Ok(by_target);
            }
        }
        Err(Error::NotFound(reference.to_string()))
    }

    /// Creates or replaces a record, after checking its target is in the store (under the GC
    /// lock, so a collection cannot remove it in between).
    pub fn create(
        &self,
        ns: &str,
        name: &str,
        target: Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<ImageRecord> {
        let ns = namespace(ns);
        let _g = self.gc_lock.lock().expect("gc lock");
        self.create_locked(ns, name, target, labels)
    }

    /// [`Service::create`] with the GC lock already held.
    pub fn create_locked(
        &self,
        ns: &str,
        name: &str,
        target: Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<ImageRecord> {
        let info = self.store.info(&target.digest).map_err(|e| match e {
            content::Error::NotFound(_) => Error::Incomplete {
                image: name.to_string(),
                what: format!("target {}", target.digest),
            },
            e => Error::Content(e),
        })?;
        let target = Descriptor {
            size: info.size,
            ..target
        };
        let rec = ImageRecord {
            name: name.to_string(),
            target,
            labels,
            created_at: 0,
            updated_at: 0,
        };
        let (stored, old) = self.db.put_image(ns, rec)?;
        let topic = if old.is_some() {
            events::TOPIC_IMAGE_UPDATE
        } else {
            events::TOPIC_IMAGE_CREATE
        };
        self.events.publish(
            ns,
            topic,
            serde_json::json!({"name": stored.name, "target": stored.target.digest}),
        );
        Ok(stored)
    }

    /// Tags `source` (any reference `find` accepts) as `target_name` (normalised).
    pub fn tag(&self, ns: &str, source: &str, target_name: &str) -> Result<ImageRecord> {
        let found = self.find(ns, source)?;
        let src = &found[0].record;
        let name = Reference::parse(target_name)?.to_string();
        self.create(ns, &name, src.target.clone(), src.labels.clone())
    }

    /// Removes records (see [`Error::Conflict`] for an id several names share) and collects
    /// garbage unless `no_gc`. Returns (untagged names, deleted digests and snapshots, bytes).
    pub fn delete(&self, ns: &str, reference: &str, force: bool, no_gc: bool) -> Result<Deleted> {
        let ns = namespace(ns);
        let found = self.find(ns, reference)?;
        let by_name = found.len() == 1
            && (found[0].record.name == reference
                || Reference::parse(reference)
                    .is_ok_and(|r| r.to_string() == found[0].record.name));
        let mut out = Deleted::default();
        let victims: Vec<&Summary> = if by_name {
            found.iter().collect()
        } else {
            let names: Vec<&str> = found.iter().map(|s| s.record.name.as_str()).collect();
            if names.len() > 1 && !force {
                return Err(Error::Conflict {
                    id: found[0]
                        .config
                        .as_ref()
                        .map_or(reference.to_string(), |c| c.hex()[..12].to_string()),
                    names: names.join(", "),
                });
            }
            found.iter().collect()
        };
        for v in &victims {
            self.db.delete_image(ns, &v.record.name)?;
            self.events.publish(
                ns,
                events::TOPIC_IMAGE_DELETE,
                serde_json::json!({"name": v.record.name}),
            );
            out.untagged.push(v.record.name.clone());
        }
        // The image id goes too when no record is left pointing at it.
        let remaining = self.list(ns, "")?;
        for v in &victims {
            if let Some(c) = &v.config {
                if !remaining.iter().any(|s| s.config.as_ref() == Some(c))
                    && !out.deleted.contains(&c.to_string())
                {
                    out.deleted.push(c.to_string());
                }
            }
        }
        if !no_gc {
            let c = self.collect()?;
            out.bytes = c.bytes;
            for d in c.content {
                if !out.deleted.contains(&d.to_string()) {
                    out.deleted.push(d.to_string());
                }
            }
            out.snapshots = c.snapshots;
        }
        Ok(out)
    }

    /// Garbage collection now.
    pub fn collect(&self) -> Result<gc::Collected> {
        let _g = self.gc_lock.lock().expect("gc lock");
        let c = gc::collect(&self.db, &*self.store, Some(&*self.snapshotter))?;
        for d in &c.content {
            self.events.publish(
                metadata::DEFAULT_NAMESPACE,
                events::TOPIC_CONTENT_DELETE,
                serde_json::json!({"digest": d}),
            );
        }
        for s in &c.snapshots {
            self.events.publish(
                metadata::DEFAULT_NAMESPACE,
                events::TOPIC_SNAPSHOT_REMOVE,
                serde_json::json!({"key": s, "snapshotter": self.snapshotter.driver()}),
            );
        }
        Ok(c)
    }

    /// Removes dangling records (every record with `all`) and collects garbage.
    pub fn prune(&self, ns: &str, all: bool) -> Result<Deleted> {
        let ns = namespace(ns);
        let mut out = Deleted::default();
        for s in self.list(ns, "")? {
            if all || is_dangling_name(&s.record.name) {
                let d = self.delete(ns, &s.record.name, true, true)?;
                out.untagged.extend(d.untagged);
                out.deleted.extend(d.deleted);
            }
        }
        let c = self.collect()?;
        out.bytes = c.bytes;
        for d in c.content {
            if !out.deleted.contains(&d.to_string()) {
                out.deleted.push(d.to_string());
            }
        }
        out.snapshots = c.snapshots;
        Ok(out)
    }

    /// `docker image inspect`-shaped JSON for the image `reference` names.
    pub fn inspect(&self, ns: &str, reference: &str) -> Result<serde_json::Value> {
        let ns = namespace(ns);
        let found = self.find(ns, reference)?;
        let first = &found[0];
        let r = self.resolve(&first.record.name, &first.record.target)?;
        let id = r.manifest.config.digest.to_string();
        // Every record with this id: its names.
        let all = self.list(ns, "")?;
        let same: Vec<&Summary> = all
            .iter()
            .filter(|s| s.config.as_ref() == Some(&r.manifest.config.digest))
            .collect();
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for s in &same {
            if let Ok(rf) = Reference::parse(&s.record.name) {
                if rf.tag.is_some() {
                    let mut t = rf.clone();
                    t.digest = None;
                    tags.push(t.familiar());
                }
                let d = rf.with_digest(&s.record.target.digest);
                let mut d2 = d.clone();
                d2.tag = None;
                let fam = d2.familiar();
                if !digests.contains(&fam) {
                    digests.push(fam);
                }
            }
        }
        let c = &r.config;
        Ok(serde_json::json!([{
            "Id": id,
            "RepoTags": tags,
            "RepoDigests": digests,
            "Created": c.created,
            "Author": c.author.clone().unwrap_or_default(),
            "Architecture": c.architecture,
            "Variant": c.variant,
            "Os": c.os,
            "Size": first.size,
            "Config": c.config,
            "RootFS": {"Type": c.rootfs.kind, "Layers": c.rootfs.diff_ids},
            "History": c.history,
            "Kapsel": {
                "Name": first.record.name,
                "Target": first.record.target,
                "Manifest": r.manifest_desc,
                "Layers": r.manifest.layers,
                "Labels": first.record.labels,
                "Unpacked": first.unpacked,
                "Snapshotter": self.snapshotter.driver(),
                "ChainID": crate::unpack::chain_ids(&c.rootfs.diff_ids).last(),
            },
        }]))
    }
}

/// What a removal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
    pub snapshots: Vec<String>,
    pub bytes: u64,
}
