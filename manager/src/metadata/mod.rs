//! kapseld's metadata: image records, leases, namespaces and containers in one
//! redb database file, `<root>/meta.redb`.
//!
//! redb gives ACID transactions on copy-on-write B-trees with a checksummed, double-buffered
//! commit slot: a crash at any point (SIGKILL, power loss after `fsync`) leaves the last
//! committed transaction. Every public mutation here is one write transaction.
//!
//! The schema is versioned (`meta["schema_version"]`, [`SCHEMA_VERSION`]); [`Db::open`] runs the
//! migrations from the stored version up to the current one in the same write transaction that
//! records the new version, so a crash during a migration leaves the old schema intact. A file
//! written by a newer kapseld (a higher version) is refused rather than misread. The layout is
//! documented in `docs/metadata-schema.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::oci::{Descriptor, Digest};

mod containers;
mod migrate;
mod volumes;

pub use containers::{ContainerRecord, State as ContainerState, Status as ContainerStatus};
pub use volumes::{VolumeMount, VolumeRecord};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 3;

/// The namespace requests without one use.
pub const DEFAULT_NAMESPACE: &str = "default";

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
/// `(namespace, id)` → JSON [`ContainerRecord`] (`containers.rs`).
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");
/// `(namespace, name)` → JSON [`VolumeRecord`] (`volumes.rs`).
pub(crate) const VOLUMES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("volumes");

const KEY_SCHEMA_VERSION: &str = "schema_version";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata database {path}: {op}: {source}")]
    Db {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("metadata database {path} has schema version {found}, newer than this kapseld's {supported}: run a newer kapseld or move the root away")]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("metadata record {table}[{key}] is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid namespace {0:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 76 characters")]
    InvalidNamespace(String),
    #[error("invalid {what} {value:?}: must be non-empty, without NUL, at most 4096 bytes")]
    InvalidKey { what: &'static str, value: String },
    #[error("image {name:?} not found in namespace {namespace:?}")]
    ImageNotFound { namespace: String, name: String },
    #[error("lease {id:?} not found in namespace {namespace:?}")]
    LeaseNotFound { namespace: String, id: String },
    #[error("lease {id:?} already exists in namespace {namespace:?}")]
    LeaseExists { namespace: String, id: String },
    #[error("no such container: {id}")]
    ContainerNotFound { namespace: String, id: String },
    #[error("container {id} already exists in namespace {namespace:?}")]
    ContainerExists { namespace: String, id: String },
    #[error("conflict: the container name \"/{name}\" is already in use by container \"{id}\": remove (or rename) that container to be able to reuse that name")]
    ContainerNameInUse { name: String, id: String },
    #[error("no such volume: {name}")]
    VolumeNotFound { name: String },
    #[error("remove {name}: volume is in use - [{}]", containers.join(" "))]
    VolumeInUse {
        name: String,
        containers: Vec<String>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An image record: a name pointing at the root descriptor (manifest or index) of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A lease keeps the resources it names from garbage collection (a pull in progress holds one
/// for the blobs it is fetching and the snapshots it is unpacking).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: String,
    pub created_at: i64,
    /// Nanoseconds since the epoch after which GC deletes the lease; `None`: until deleted.
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Content(Digest),
    /// A snapshot key of the named snapshotter.
    Snapshot {
        snapshotter: String,
        key: String,
    },
}

impl Resource {
    fn encode(&self) -> String {
        match self {
            Resource::Content(d) => format!("content/{d}"),
            Resource::Snapshot { snapshotter, key } => format!("snapshots/{snapshotter}/{key}"),
        }
    }

    fn decode(s: &str) -> Option<Resource> {
        if let Some(d) = s.strip_prefix("content/") {
            return d.parse().ok().map(Resource::Content);
        }
        let rest = s.strip_prefix("snapshots/")?;
        let (snapshotter, key) = rest.split_once('/')?;
        Some(Resource::Snapshot {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Checks a namespace name (containerd's rule: a DNS-label-like identifier).
pub fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidNamespace(ns.to_string()))
    }
}

fn validate_key(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 4096 || value.contains('\0') {
        return Err(Error::InvalidKey {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The metadata database.
pub struct Db {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating if absent) the database at `path` and migrates it to [`SCHEMA_VERSION`].
    /// The file is locked: a second opener (another kapseld on the same root) gets an error.
    pub fn open(path: &Path) -> Result<Db> {
        let db = redb::Database::create(path).map_err(|e| Error::Db {
            op: "open",
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })?;
        let db = Db {
            db,
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl Fn(redb::Error) -> Error + '_ {
        move |source| Error::Db {
            op,
            path: self.path.clone(),
            source: Box::new(source),
        }
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let txn = self.db.begin_write().map_err(|e| self.err(op)(e.into()))?;
        let out = f(&txn)?;
        txn.commit().map_err(|e| self.err(op)(e.into()))?;
        Ok(out)
    }

    fn read(&self, op: &'static str) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(|e| self.err(op)(e.into()))
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64> {
        let op = "read schema version";
        let r = self.read(op)?;
        let t = r.open_table(META).map_err(|e| self.err(op)(e.into()))?;
        let v = t
            .get(KEY_SCHEMA_VERSION)
            .map_err(|e| self.err(op)(e.into()))?
            .map(|g| g.value());
        Ok(v.unwrap_or(0))
    }

    fn migrate(&self) -> Result<()> {
        let op = "migrate schema";
        self.write(op, |txn| {
            let found = {
                let t = txn.open_table(META).map_err(|e| self.err(op)(e.into()))?;
                let v = t
                    .get(KEY_SCHEMA_VERSION)
                    .map_err(|e| self.err(op)(e.into()))?
                    .map(|g| g.value());
                v
            };
            let found = match found {
                Some(v) => v,
                // A fresh file has no tables but `meta` (just created): nothing to migrate.
                None if migrate::is_empty(txn).map_err(self.err(op))? => SCHEMA_VERSION,
                // Tables without a version key: the first layout, which had none.
                None => 1,
            };
            if found > SCHEMA_VERSION {
                return Err(Error::TooNew {
                    path: self.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for from in found..SCHEMA_VERSION {
                migrate::step(txn, from, &self.err(op))?;
            }
            migrate::ensure_tables(txn).map_err(self.err(op))?;
            let mut t = txn.open_table(META).map_err(|e| self.err(op)(e.into()))?;
            t.insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION)
                .map_err(|e| self.err(op)(e.into()))?;
            Ok(())
        })
    }

    // ---- namespaces

    /// Every namespace that holds or held records, with its labels.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let op = "list namespaces";
        let r = self.read(op)?;
        let t = r
            .open_table(NAMESPACES)
            .map_err(|e| self.err(op)(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(op)(e.into()))? {
            let (k, _) = row.map_err(|e| self.err(op)(e.into()))?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    fn touch_namespace(&self, txn: &redb::WriteTransaction, ns: &str) -> Result<()> {
        let op = "record namespace";
        let mut t = txn
            .open_table(NAMESPACES)
            .map_err(|e| self.err(op)(e.into()))?;
        let exists = t.get(ns).map_err(|e| self.err(op)(e.into()))?.is_some();
        if !exists {
            t.insert(ns, b"{}".as_slice())
                .map_err(|e| self.err(op)(e.into()))?;
        }
        Ok(())
    }

    // ---- images

    pub fn get_image(&self, ns: &str, name: &str) -> Result<ImageRecord> {
        validate_namespace(ns)?;
        let op = "get image";
        let r = self.read(op)?;
        let t = r.open_table(IMAGES).map_err(|e| self.err(op)(e.into()))?;
        let row = t.get((ns, name)).map_err(|e| self.err(op)(e.into()))?;
        match row {
            Some(v) => decode("images", name, v.value()),
            None => Err(Error::ImageNotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// The images of a namespace, by name.
    pub fn list_images(&self, ns: &str) -> Result<Vec<ImageRecord>> {
        validate_namespace(ns)?;
        let op = "list images";
        let r = self.read(op)?;
        let t = r.open_table(IMAGES).map_err(|e| self.err(op)(e.into()))?;
        self.ns_records(&t, "images", ns, op)
    }

    /// Every image of every namespace (the garbage collector's roots).
    pub fn all_images(&self) -> Result<Vec<(String, ImageRecord)>> {
        self.all_records(IMAGES, "images", "list images")
    }

    /// The records of namespace `ns` in a `(namespace, key)` table, decoded, by key.
    fn ns_records<T: for<'de> Deserialize<'de>>(
        &self,
        t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        table: &'static str,
        ns: &str,
        op: &'static str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for row in t
            .range::<(&str, &str)>((ns, "")..)
            .map_err(|e| self.err(op)(e.into()))?
        {
            let (k, v) = row.map_err(|e| self.err(op)(e.into()))?;
            let (kns, key) = k.value();
            if kns != ns {
                break;
            }
            out.push(decode(table, key, v.value())?);
        }
        Ok(out)
    }

    /// Every record of a `(namespace, key)` table, decoded, with its namespace.
    fn all_records<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<(&str, &str), &[u8]>,
        table: &'static str,
        op: &'static str,
    ) -> Result<Vec<(String, T)>> {
        let r = self.read(op)?;
        let t = r.open_table(def).map_err(|e| self.err(op)(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(op)(e.into()))? {
            let (k, v) = row.map_err(|e| self.err(op)(e.into()))?;
            let (ns, key) = k.value();
            out.push((ns.to_string(), decode(table, key, v.value())?));
        }
        Ok(out)
    }

    pub fn count_images(&self) -> Result<u64> {
        let op = "count images";
        let r = self.read(op)?;
        let t = r.open_table(IMAGES).map_err(|e| self.err(op)(e.into()))?;
        t.len().map_err(|e| self.err(op)(e.into()))
    }

    /// Creates the record, or replaces the target and labels of an existing one (keeping its
    /// creation time). Returns the stored record and the one it replaced.
    pub fn put_image(
        &self,
        ns: &str,
        mut rec: ImageRecord,
    ) -> Result<(ImageRecord, Option<ImageRecord>)> {
        validate_namespace(ns)?;
        validate_key("image name", &rec.name)?;
        let op = "put image";
        self.write(op, |txn| {
            self.touch_namespace(txn, ns)?;
            let mut t = txn.open_table(IMAGES).map_err(|e| self.err(op)(e.into()))?;
            let old = match t
                .get((ns, rec.name.as_str()))
                .map_err(|e| self.err(op)(e.into()))?
            {
                Some(v) => Some(decode::<ImageRecord>("images", &rec.name, v.value())?),
                None => None,
            };
            let now = now_nanos();
            rec.created_at = old.as_ref().map_or(now, |o| o.created_at);
            rec.updated_at = now;
            let bytes = serde_json::to_vec(&rec).expect("image record serialises");
            t.insert((ns, rec.name.as_str()), bytes.as_slice())
                .map_err(|e| self.err(op)(e.into()))?;
            Ok((rec, old))
        })
    }

    /// Replaces target and labels of an existing record.
    pub fn update_image(&self, ns: &str, rec: ImageRecord) -> Result<ImageRecord> {
        self.get_image(ns, &rec.name)?;
        // The record could be deleted between the two transactions; put_image then recreates it,
        // which is what a racing tag would have done too.
        Ok(self.put_image(ns, rec)?.0)
    }

    /// Removes the record; returns it.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<ImageRecord> {
        validate_namespace(ns)?;
        let op = "delete image";
        self.write(op, |txn| {
            let mut t = txn.open_table(IMAGES).map_err(|e| self.err(op)(e.into()))?;
            let old = t.remove((ns, name)).map_err(|e| self.err(op)(e.into()))?;
            match old {
                Some(v) => decode("images", name, v.value()),
                None => Err(Error::ImageNotFound {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                }),
            }
        })
    }

    // ---- leases

    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<Lease> {
        validate_namespace(ns)?;
        validate_key("lease id", id)?;
        let op = "create lease";
        self.write(op, |txn| {
            self.touch_namespace(txn, ns)?;
            let mut t = txn.open_table(LEASES).map_err(|e| self.err(op)(e.into()))?;
            if t.get((ns, id))
                .map_err(|e| self.err(op)(e.into()))?
                .is_some()
            {
                return Err(Error::LeaseExists {
                    namespace: ns.to_string(),
                    id: id.to_string(),
                });
            }
            let now = now_nanos();
            let lease = Lease {
                id: id.to_string(),
                created_at: now,
                expires_at: ttl.map(|d| now.saturating_add(d.as_nanos() as i64)),
                labels: BTreeMap::new(),
            };
            let bytes = serde_json::to_vec(&lease).expect("lease serialises");
            t.insert((ns, id), bytes.as_slice())
                .map_err(|e| self.err(op)(e.into()))?;
            Ok(lease)
        })
    }

    /// Adds a resource to a lease (before the resource is written, so GC never sees it
    /// unreferenced).
    pub fn add_lease_resource(&self, ns: &str, id: &str, res: &Resource) -> Result<()> {
        let op = "add lease resource";
        let enc = res.encode();
        self.write(op, |txn| {
            let leases = txn.open_table(LEASES).map_err(|e| self.err(op)(e.into()))?;
            if leases
                .get((ns, id))
                .map_err(|e| self.err(op)(e.into()))?
                .is_none()
            {
                return Err(Error::LeaseNotFound {
                    namespace: ns.to_string(),
                    id: id.to_string(),
                });
            }
            let mut t = txn
                .open_table(LEASE_RESOURCES)
                .map_err(|e| self.err(op)(e.into()))?;
            t.insert((ns, id, enc.as_str()), ())
                .map_err(|e| self.err(op)(e.into()))?;
            Ok(())
        })
    }

    /// Deletes a lease and what it lists (the resources themselves stay until GC).
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        let op = "delete lease";
        self.write(op, |txn| self.delete_lease_in(txn, ns, id))
    }

    fn delete_lease_in(&self, txn: &redb::WriteTransaction, ns: &str, id: &str) -> Result<()> {
        let op = "delete lease";
        let mut leases = txn.open_table(LEASES).map_err(|e| self.err(op)(e.into()))?;
        if leases
            .remove((ns, id))
            .map_err(|e| self.err(op)(e.into()))?
            .is_none()
        {
            return Err(Error::LeaseNotFound {
                namespace: ns.to_string(),
                id: id.to_string(),
            });
        }
        let mut t = txn
            .open_table(LEASE_RESOURCES)
            .map_err(|e| self.err(op)(e.into()))?;
        t.retain_in::<(&str, &str, &str), _>((ns, id, "")..=(ns, id, "\u{10ffff}"), |k, _| {
            !(k.0 == ns && k.1 == id)
        })
        .map_err(|e| self.err(op)(e.into()))?;
        Ok(())
    }

    /// Every lease of every namespace.
    pub fn leases(&self) -> Result<Vec<(String, Lease)>> {
        let op = "list leases";
        let r = self.read(op)?;
        let t = r.open_table(LEASES).map_err(|e| self.err(op)(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(op)(e.into()))? {
            let (k, v) = row.map_err(|e| self.err(op)(e.into()))?;
            let (ns, id) = k.value();
            out.push((ns.to_string(), decode("leases", id, v.value())?));
        }
        Ok(out)
    }

    /// Deletes leases whose expiry passed; returns their ids.
    pub fn expire_leases(&self, now: i64) -> Result<Vec<(String, String)>> {
        let expired: Vec<(String, String)> = self
            .leases()?
            .into_iter()
            .filter(|(_, l)| l.expires_at.is_some_and(|t| t <= now))
            .map(|(ns, l)| (ns, l.id))
            .collect();
        if expired.is_empty() {
            return Ok(expired);
        }
        self.write("expire leases", |txn| {
            for (ns, id) in &expired {
                match self.delete_lease_in(txn, ns, id) {
                    Ok(()) | Err(Error::LeaseNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        Ok(expired)
    }

    /// Every resource some live lease holds.
    pub fn leased_resources(&self) -> Result<Vec<Resource>> {
        let op = "list lease resources";
        let r = self.read(op)?;
        let t = r
            .open_table(LEASE_RESOURCES)
            .map_err(|e| self.err(op)(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(op)(e.into()))? {
            let (k, _) = row.map_err(|e| self.err(op)(e.into()))?;
            if let Some(res) = Resource::decode(k.value().2) {
                out.push(res);
            }
        }
        Ok(out)
    }
}

fn decode<T: for<'de> Deserialize<'de>>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        table,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
