//! Volume records: `volumes[(namespace, name)]` → JSON [`VolumeRecord`]. Which containers use
//! a volume is not stored twice: it is read from the container records (`ContainerRecord::
//! volumes`) in the same transaction that creates or removes a volume, so "in use" can never
//! disagree with the containers that exist.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::containers::ContainerRecord;
use super::{decode, validate_namespace, Db, Error, Result, CONTAINERS, VOLUMES};

/// Volume name → the ids of the containers that mount it.
type Users = BTreeMap<String, BTreeSet<String>>;
/// A `(namespace, key)` → JSON table open for writing.
type RecordTable<'t> = redb::Table<'t, (&'static str, &'static str), &'static [u8]>;

/// A volume (Docker's local driver: a directory kapseld owns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `Volumes`, `volume create` without a
    /// name): `rm -v` and `--rm` remove it with its container, `volume prune` without `-a`
    /// removes it once unused.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume a container mounts (kept in its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Db {
    /// The ids of the containers of `ns` that mount each volume.
    fn volume_users(
        &self,
        t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        ns: &str,
        op: &'static str,
    ) -> Result<Users> {
        let mut out = Users::new();
        for rec in self.ns_records::<ContainerRecord>(t, "containers", ns, op)? {
            for m in rec.volumes {
                out.entry(m.name).or_default().insert(rec.id.clone());
            }
        }
        Ok(out)
    }

    /// In a write transaction: who uses each volume, and the volumes table.
    fn users_and_volumes<'t>(
        &self,
        txn: &'t redb::WriteTransaction,
        ns: &str,
        op: &'static str,
    ) -> Result<(Users, RecordTable<'t>)> {
        let c = txn
            .open_table(CONTAINERS)
            .map_err(|e| self.err(op)(e.into()))?;
        let users = self.volume_users(&c, ns, op)?;
        let t = txn
            .open_table(VOLUMES)
            .map_err(|e| self.err(op)(e.into()))?;
        Ok((users, t))
    }

    /// Stores `rec` unless a volume of that name exists; returns the stored record and whether
    /// it is new.
    pub fn create_volume(&self, ns: &str, rec: &VolumeRecord) -> Result<(VolumeRecord, bool)> {
        validate_namespace(ns)?;
        super::validate_key("volume name", &rec.name)?;
        let op = "create volume";
        self.write(op, |txn| {
            self.touch_namespace(txn, ns)?;
            let mut t = txn
                .open_table(VOLUMES)
                .map_err(|e| self.err(op)(e.into()))?;
            self.insert_volume(&mut t, ns, rec)
        })
    }

    fn insert_volume(
        &self,
        t: &mut redb::Table<(&str, &str), &[u8]>,
        ns: &str,
        rec: &VolumeRecord,
    ) -> Result<(VolumeRecord, bool)> {
        let op = "create volume";
        if let Some(v) = t
            .get((ns, rec.name.as_str()))
            .map_err(|e| self.err(op)(e.into()))?
        {
            return Ok((decode("volumes", &rec.name, v.value())?, false));
        }
        let bytes = serde_json::to_vec(rec).expect("volume record serialises");
        t.insert((ns, rec.name.as_str()), bytes.as_slice())
            .map_err(|e| self.err(op)(e.into()))?;
        Ok((rec.clone(), true))
    }

    pub fn get_volume(&self, ns: &str, name: &str) -> Result<VolumeRecord> {
        validate_namespace(ns)?;
        let op = "get volume";
        let r = self.read(op)?;
        let t = r.open_table(VOLUMES).map_err(|e| self.err(op)(e.into()))?;
        let row = t.get((ns, name)).map_err(|e| self.err(op)(e.into()))?;
        match row {
            Some(v) => decode("volumes", name, v.value()),
            None => Err(Error::VolumeNotFound {
                name: name.to_string(),
            }),
        }
    }

    /// The volumes of a namespace by name, each with the ids of the containers using it.
    pub fn list_volumes(&self, ns: &str) -> Result<Vec<(VolumeRecord, Vec<String>)>> {
        validate_namespace(ns)?;
        let op = "list volumes";
        let r = self.read(op)?;
        let t = r.open_table(VOLUMES).map_err(|e| self.err(op)(e.into()))?;
        let c = r
            .open_table(CONTAINERS)
            .map_err(|e| self.err(op)(e.into()))?;
        let mut users = self.volume_users(&c, ns, op)?;
        let records: Vec<VolumeRecord> = self.ns_records(&t, "volumes", ns, op)?;
        let out = records
            .into_iter()
            .map(|rec| {
                let used = users.remove(&rec.name).unwrap_or_default();
                (rec, used.into_iter().collect())
            })
            .collect();
        Ok(out)
    }

    /// Every volume of every namespace (kapseld's start matches them with their directories).
    pub fn all_volumes(&self) -> Result<Vec<(String, VolumeRecord)>> {
        self.all_records(VOLUMES, "volumes", "list volumes")
    }

    /// Removes the record of a volume no container uses; `check` may refuse it in the same
    /// transaction (its error aborts). Fails with
    /// [`Error::VolumeInUse`] while a container (running or not) mounts it.
    pub fn delete_volume(
        &self,
        ns: &str,
        name: &str,
        check: impl FnOnce(&VolumeRecord) -> Result<()>,
    ) -> Result<VolumeRecord> {
        validate_namespace(ns)?;
        let op = "delete volume";
        self.write(op, |txn| {
            let (users, mut t) = self.users_and_volumes(txn, ns, op)?;
            let rec: VolumeRecord = match t.get((ns, name)).map_err(|e| self.err(op)(e.into()))? {
                Some(v) => decode("volumes", name, v.value())?,
                None => {
                    return Err(Error::VolumeNotFound {
                        name: name.to_string(),
                    })
                }
            };
            if let Some(ids) = users.get(name).filter(|u| !u.is_empty()) {
                return Err(Error::VolumeInUse {
                    name: name.to_string(),
                    containers: ids.iter().cloned().collect(),
                });
            }
            check(&rec)?;
            t.remove((ns, name)).map_err(|e| self.err(op)(e.into()))?;
            Ok(rec)
        })
    }

    /// Stores a new container and, in the same transaction, the records of the volumes it
    /// mounts that do not exist yet (`volumes`).
    pub fn create_container_with_volumes(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        volumes: &[VolumeRecord],
    ) -> Result<()> {
        validate_namespace(ns)?;
        for v in volumes {
            super::validate_key("volume name", &v.name)?;
        }
        self.write("create container", |txn| {
            self.insert_container(txn, ns, rec)?;
            let mut t = txn
                .open_table(VOLUMES)
                .map_err(|e| self.err("create volume")(e.into()))?;
            for v in volumes {
                self.insert_volume(&mut t, ns, v)?;
            }
            Ok(())
        })
    }

    /// Removes a container's record and, with `anonymous`, in the same transaction the
    /// records of its anonymous volumes no other container uses; returns the container and
    /// the volumes removed (their directories are the caller's to delete).
    pub fn delete_container_with_volumes(
        &self,
        ns: &str,
        id: &str,
        anonymous: bool,
    ) -> Result<(ContainerRecord, Vec<VolumeRecord>)> {
        validate_namespace(ns)?;
        let op = "delete container";
        self.write(op, |txn| {
            let rec = self.remove_container(txn, ns, id)?;
            let mut removed = Vec::new();
            if !anonymous || rec.volumes.is_empty() {
                return Ok((rec, removed));
            }
            let (users, mut t) = self.users_and_volumes(txn, ns, op)?;
            for m in &rec.volumes {
                if users.get(&m.name).is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                let v: Option<VolumeRecord> = match t
                    .get((ns, m.name.as_str()))
                    .map_err(|e| self.err(op)(e.into()))?
                {
                    Some(v) => Some(decode("volumes", &m.name, v.value())?),
                    None => None,
                };
                if let Some(v) = v.filter(|v| v.anonymous) {
                    t.remove((ns, m.name.as_str()))
                        .map_err(|e| self.err(op)(e.into()))?;
                    removed.push(v);
                }
            }
            Ok((rec, removed))
        })
    }
}
