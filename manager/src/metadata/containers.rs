//! Container records: `containers[(namespace, id)]` → JSON [`ContainerRecord`]. A name is
//! unique within its namespace: every write that sets one checks the others in the same
//! transaction.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{decode, validate_namespace, Db, Error, Result, CONTAINERS};
use crate::oci::Descriptor;

/// What a container is doing, as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    /// Its task could not be cleaned up (a removal failed half-way).
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// A task (shim) exists for the container.
    pub fn has_task(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// The container's runtime state (Docker's `State`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: u32,
    pub exit_code: i32,
    /// Why the task failed or was lost ("shim died", "OOM killed", the runtime's error).
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub oom_killed: bool,
    /// Nanoseconds since the epoch; 0: never.
    pub started_at: i64,
    pub finished_at: i64,
    #[serde(default)]
    pub restart_count: u32,
    /// Stopped by the user (stop, kill): `unless-stopped` and `always` do not restart it
    /// (`always` does again when kapseld restarts, as Docker's).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// The shim's ttrpc address while a task exists.
    #[serde(default)]
    pub shim_address: String,
}

/// A container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// The image as the user gave it.
    pub image: String,
    /// The image record it was created from and its target (kept from GC while the container
    /// exists, even if the record is removed).
    pub image_name: String,
    pub image_target: Descriptor,
    /// The config digest (Docker's image id).
    pub image_id: String,
    /// `containers::RunOptions` as given to create.
    pub options: serde_json::Value,
    /// The generated OCI runtime spec.
    pub spec: serde_json::Value,
    pub snapshotter: String,
    pub snapshot_key: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    #[serde(default)]
    pub state: State,
    /// The volumes it mounts (named and anonymous); a volume is in use while a record lists it.
    #[serde(default)]
    pub volumes: Vec<super::VolumeMount>,
}

impl Db {
    /// Stores a new container; fails when the id or the name is taken in the namespace.
    pub fn create_container(&self, ns: &str, rec: &ContainerRecord) -> Result<()> {
        self.create_container_with_volumes(ns, rec, &[])
    }

    /// [`Db::create_container`] inside the transaction `txn`.
    pub(super) fn insert_container(
        &self,
        txn: &redb::WriteTransaction,
        ns: &str,
        rec: &ContainerRecord,
    ) -> Result<()> {
        super::validate_key("container id", &rec.id)?;
        let op = "create container";
        {
            self.touch_namespace(txn, ns)?;
            let mut t = txn
                .open_table(CONTAINERS)
                .map_err(|e| self.err(op)(e.into()))?;
            for row in t
                .range::<(&str, &str)>((ns, "")..)
                .map_err(|e| self.err(op)(e.into()))?
            {
                let (k, v) = row.map_err(|e| self.err(op)(e.into()))?;
                let (kns, id) = k.value();
                if kns != ns {
                    break;
                }
                if id == rec.id {
                    return Err(Error::ContainerExists {
                        namespace: ns.to_string(),
                        id: rec.id.clone(),
                    });
                }
                let other: ContainerRecord = decode("containers", id, v.value())?;
                if other.name == rec.name {
                    return Err(Error::ContainerNameInUse {
                        name: rec.name.clone(),
                        id: other.id,
                    });
                }
            }
            let bytes = serde_json::to_vec(rec).expect("container record serialises");
            t.insert((ns, rec.id.as_str()), bytes.as_slice())
                .map_err(|e| self.err(op)(e.into()))?;
            Ok(())
        }
    }

    pub fn get_container(&self, ns: &str, id: &str) -> Result<ContainerRecord> {
        validate_namespace(ns)?;
        let op = "get container";
        let r = self.read(op)?;
        let t = r
            .open_table(CONTAINERS)
            .map_err(|e| self.err(op)(e.into()))?;
        let row = t.get((ns, id)).map_err(|e| self.err(op)(e.into()))?;
        match row {
            Some(v) => decode("containers", id, v.value()),
            None => Err(Error::ContainerNotFound {
                namespace: ns.to_string(),
                id: id.to_string(),
            }),
        }
    }

    /// The containers of a namespace, by id.
    pub fn list_containers(&self, ns: &str) -> Result<Vec<ContainerRecord>> {
        validate_namespace(ns)?;
        Ok(self
            .all_containers()?
            .into_iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, c)| c)
            .collect())
    }

    /// Every container of every namespace (recovery, GC roots).
    pub fn all_containers(&self) -> Result<Vec<(String, ContainerRecord)>> {
        self.all_records(CONTAINERS, "containers", "list containers")
    }

    /// Reads, changes and writes a record in one transaction; `f`'s error aborts it. A new
    /// name is checked against the others.
    pub fn update_container<T>(
        &self,
        ns: &str,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord) -> Result<T>,
    ) -> Result<(ContainerRecord, T)> {
        validate_namespace(ns)?;
        let op = "update container";
        self.write(op, |txn| {
            let mut t = txn
                .open_table(CONTAINERS)
                .map_err(|e| self.err(op)(e.into()))?;
            let mut rec: ContainerRecord =
                match t.get((ns, id)).map_err(|e| self.err(op)(e.into()))? {
                    Some(v) => decode("containers", id, v.value())?,
                    None => {
                        return Err(Error::ContainerNotFound {
                            namespace: ns.to_string(),
                            id: id.to_string(),
                        })
                    }
                };
            let old_name = rec.name.clone();
            let out = f(&mut rec)?;
            if rec.id != id {
                return Err(Error::InvalidKey {
                    what: "container id (cannot change)",
                    value: rec.id.clone(),
                });
            }
            if rec.name != old_name {
                for row in t
                    .range::<(&str, &str)>((ns, "")..)
                    .map_err(|e| self.err(op)(e.into()))?
                {
                    let (k, v) = row.map_err(|e| self.err(op)(e.into()))?;
                    let (kns, oid) = k.value();
                    if kns != ns {
                        break;
                    }
                    if oid == id {
                        continue;
                    }
                    let other: ContainerRecord = decode("containers", oid, v.value())?;
                    if other.name == rec.name {
                        return Err(Error::ContainerNameInUse {
                            name: rec.name.clone(),
                            id: other.id,
                        });
                    }
                }
            }
            let bytes = serde_json::to_vec(&rec).expect("container record serialises");
            t.insert((ns, id), bytes.as_slice())
                .map_err(|e| self.err(op)(e.into()))?;
            Ok((rec, out))
        })
    }

    /// Removes the record; returns it.
    pub fn delete_container(&self, ns: &str, id: &str) -> Result<ContainerRecord> {
        Ok(self.delete_container_with_volumes(ns, id, false)?.0)
    }

    /// [`Db::delete_container`] inside the transaction `txn`.
    pub(super) fn remove_container(
        &self,
        txn: &redb::WriteTransaction,
        ns: &str,
        id: &str,
    ) -> Result<ContainerRecord> {
        let op = "delete container";
        let mut t = txn
            .open_table(CONTAINERS)
            .map_err(|e| self.err(op)(e.into()))?;
        let old = t.remove((ns, id)).map_err(|e| self.err(op)(e.into()))?;
        match old {
            Some(v) => decode("containers", id, v.value()),
            None => Err(Error::ContainerNotFound {
                namespace: ns.to_string(),
                id: id.to_string(),
            }),
        }
    }
}
