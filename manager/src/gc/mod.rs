//! Garbage collection of content and snapshots: mark what is reachable, delete the rest.
//!
//! Roots: every image record of every namespace, the image of every container, every resource a live lease names, every blob
//! committed while a lease lived (a pull or load in progress holds one: the manifests it
//! stores are not announced one by one), and every active or view snapshot (a container's
//! rootfs, an unpack in progress). From an image target the walk follows index → manifests →
//! config + layers, and from a config its `rootfs.diff_ids` → chain ids, which name the
//! committed snapshots the image was unpacked into; a marked snapshot marks its parents.
//!
//! The caller serialises collection with anything that makes content reachable (creating an
//! image record checks its blobs under the same lock): see `images::Service`.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::content::{self, Store};
use crate::metadata::{self, Db, Resource};
use crate::oci::{Descriptor, Digest, ImageConfig, Index, Manifest};
use crate::snapshots::{self, Kind, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("garbage collection: {0}")]
    Metadata(#[from] metadata::Error),
    #[error("garbage collection: {0}")]
    Content(#[from] content::Error),
    #[error("garbage collection: {0}")]
    Snapshot(#[from] snapshots::Error),
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub content: Vec<Digest>,
    pub snapshots: Vec<String>,
    /// Bytes of the blobs removed (snapshot usage is not measured before removal).
    pub bytes: u64,
}

/// What is reachable.
#[derive(Debug, Default)]
pub struct Marks {
    pub content: HashSet<Digest>,
    pub snapshots: HashSet<String>,
    /// While a lease lives: seconds since the epoch from which new blobs and snapshots are kept
    /// even if marking never saw them (a pull may commit one between mark and sweep).
    pub keep_since: Option<i64>,
}

impl Marks {
    /// Whether a snapshot was made while a lease lived (see `keep_since`).
    fn keeps(&self, info: &snapshots::Info) -> bool {
        let created = info
            .created
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.keep_since.is_some_and(|since| created >= since)
    }
}

/// The children of a blob that a walk follows: an index's manifests, a manifest's config and
/// layers. Blobs that are neither (configs, layers) have none. Missing blobs have none.
pub fn children(store: &dyn Store, desc: &Descriptor) -> Vec<Descriptor> {
    if !looks_like_json_doc(&desc.media_type) {
        return Vec::new();
    }
    let Some(data) = read_small(store, &desc.digest) else {
        return Vec::new();
    };
    if let Ok(ix) = serde_json::from_slice::<Index>(&data) {
        return ix.manifests;
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(&data) {
        let mut out = vec![m.config];
        out.extend(m.layers);
        return out;
    }
    Vec::new()
}

/// Documents (indexes, manifests, configs) are small; layers are not read when a walk meets a
/// blob without a media type.
const MAX_DOC: u64 = 4 << 20;

fn read_small(store: &dyn Store, digest: &Digest) -> Option<Vec<u8>> {
    let info = store.info(digest).ok()?;
    if info.size > MAX_DOC {
        return None;
    }
    store.read_all(digest).ok()
}

/// Index and manifest media types, and unknown ones (which may be either).
fn looks_like_json_doc(media_type: &str) -> bool {
    media_type.contains("manifest")
        || media_type.contains("index")
        || media_type.is_empty()
        || media_type == "application/json"
}

fn is_config(media_type: &str) -> bool {
    media_type == crate::oci::MEDIA_OCI_CONFIG || media_type == crate::oci::MEDIA_DOCKER_CONFIG
}

/// The snapshot names (chain ids) of the image whose config is `config`.
pub fn config_chain_ids(store: &dyn Store, config: &Digest) -> Vec<Digest> {
    let Some(data) = read_small(store, config) else {
        return Vec::new();
    };
    match serde_json::from_slice::<ImageConfig>(&data) {
        Ok(c) => crate::unpack::chain_ids(&c.rootfs.diff_ids),
        Err(_) => Vec::new(),
    }
}

/// Marks everything reachable from `roots` (descriptors) in `store`.
pub fn mark_from(store: &dyn Store, roots: &[Descriptor], marks: &mut Marks) {
    let mut stack: Vec<Descriptor> = roots.to_vec();
    while let Some(d) = stack.pop() {
        if !marks.content.insert(d.digest.clone()) {
            continue;
        }
        if is_config(&d.media_type) {
            for c in config_chain_ids(store, &d.digest) {
                marks.snapshots.insert(c.to_string());
            }
            continue;
        }
        stack.extend(children(store, &d));
    }
}

/// Marks from every root the database and the snapshotter know.
pub fn mark(db: &Db, store: &dyn Store, sn: Option<&dyn Snapshotter>) -> Result<Marks, Error> {
    let mut marks = Marks::default();
    let mut roots: Vec<Descriptor> = db
        .all_images()?
        .into_iter()
        .map(|(_, r)| r.target)
        .collect();
    // A container keeps the image it was made from (its snapshot is active, kept below).
    roots.extend(
        db.all_containers()?
            .into_iter()
            .map(|(_, c)| c.image_target),
    );
    let sn_name = sn.map(|s| s.driver());
    for res in db.leased_resources()? {
        match res {
            Resource::Content(d) => roots.push(Descriptor {
                media_type: String::new(),
                digest: d,
                size: 0,
                urls: None,
                annotations: None,
                platform: None,
            }),
            Resource::Snapshot { snapshotter, key } => {
                if Some(snapshotter.as_str()) == sn_name {
                    marks.snapshots.insert(key);
                }
            }
        }
    }
    // Blobs committed while a lease lived (second resolution: one second of slack).
    let oldest_lease = db
        .leases()?
        .iter()
        .map(|(_, l)| l.created_at / 1_000_000_000 - 1)
        .min();
    marks.keep_since = oldest_lease;
    if let Some(since) = oldest_lease {
        for info in store.list()? {
            if info.created_at as i64 >= since {
                roots.push(Descriptor {
                    media_type: String::new(),
                    digest: info.digest,
                    size: info.size,
                    urls: None,
                    annotations: None,
                    platform: None,
                });
            }
        }
    }
    // Configs reached through an index/manifest carry their media type; a config reached as a
    // bare root (a lease) is recognised by trying it as one.
    let bare: Vec<Digest> = roots
        .iter()
        .filter(|d| d.media_type.is_empty())
        .map(|d| d.digest.clone())
        .collect();
    mark_from(store, &roots, &mut marks);
    for d in bare {
        for c in config_chain_ids(store, &d) {
            marks.snapshots.insert(c.to_string());
        }
    }
    if let Some(sn) = sn {
        let infos = sn.walk()?;
        let parent: HashMap<&str, Option<&str>> = infos
            .iter()
            .map(|i| (i.name.as_str(), i.parent.as_deref()))
            .collect();
        for i in &infos {
            if i.kind != Kind::Committed {
                marks.snapshots.insert(i.name.clone());
            }
        }
        // Close over parents: a kept snapshot keeps its whole chain.
        let kept: Vec<String> = marks.snapshots.iter().cloned().collect();
        for k in kept {
            let mut cur = parent.get(k.as_str()).copied().flatten();
            while let Some(p) = cur {
                if !marks.snapshots.insert(p.to_string()) {
                    break;
                }
                cur = parent.get(p).copied().flatten();
            }
        }
    }
    Ok(marks)
}

/// Deletes every blob and committed snapshot not in `marks`. Snapshots go children first.
pub fn sweep(
    store: &dyn Store,
    sn: Option<&dyn Snapshotter>,
    marks: &Marks,
) -> Result<Collected, Error> {
    let mut out = Collected::default();
    if let Some(sn) = sn {
        let infos = sn.walk()?;
        for i in infos.iter().rev() {
            if i.kind == Kind::Committed && !marks.snapshots.contains(&i.name) && !marks.keeps(i) {
                match sn.remove(&i.name) {
                    Ok(()) => out.snapshots.push(i.name.clone()),
                    Err(snapshots::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let mut gone: BTreeSet<Digest> = BTreeSet::new();
    for info in store.list()? {
        let fresh = marks
            .keep_since
            .is_some_and(|since| info.created_at as i64 >= since);
        if !marks.content.contains(&info.digest) && !fresh {
            match store.delete(&info.digest) {
                Ok(()) => {
                    out.bytes += info.size;
                    gone.insert(info.digest);
                }
                Err(content::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.content = gone.into_iter().collect();
    Ok(out)
}

/// Expires old leases, marks and sweeps.
pub fn collect(
    db: &Db,
    store: &dyn Store,
    sn: Option<&dyn Snapshotter>,
) -> Result<Collected, Error> {
    let expired = db.expire_leases(metadata::now_nanos())?;
    for (ns, id) in expired {
        tracing::info!(
            namespace = ns.as_str(),
            lease = id.as_str(),
            "lease expired"
        );
    }
    let marks = mark(db, store, sn)?;
    let out = sweep(store, sn, &marks)?;
    if !out.content.is_empty() || !out.snapshots.is_empty() {
        tracing::info!(
            blobs = out.content.len(),
            snapshots = out.snapshots.len(),
            bytes = out.bytes,
            "garbage collected"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
