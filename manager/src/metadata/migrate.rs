//! Schema migrations. `step(txn, n)` turns schema `n` into `n + 1`; [`super::Db::open`] runs the
//! steps in the same write transaction that records the new version.
//!
//! | version | layout |
//! |---|---|
//! | 1 | `images`: name → JSON `{name, target, labels, created_at}`; no namespaces, no version key |
//! | 2 | every record keyed by `(namespace, ...)`; `namespaces`, `leases`, `lease_resources`, `containers` (reserved); `meta.schema_version` |
//! | 3 | `volumes` (`(namespace, name)` → JSON `VolumeRecord`); container records gain `volumes` (absent: none) |

use redb::{ReadableTable, TableDefinition, TableHandle};

use super::{
    Error, ImageRecord, CONTAINERS, DEFAULT_NAMESPACE, IMAGES, LEASES, LEASE_RESOURCES, META,
    NAMESPACES, VOLUMES,
};

/// Schema 1's image table.
pub(super) const IMAGES_V1: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// Schema 1's image record: no `updated_at`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ImageRecordV1 {
    pub name: String,
    pub target: crate::oci::Descriptor,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub created_at: i64,
}

/// True when the file holds no table but `meta`.
pub(super) fn is_empty(txn: &redb::WriteTransaction) -> Result<bool, redb::Error> {
    Ok(txn.list_tables()?.all(|t| t.name() == META.name()))
}

pub(super) fn step(
    txn: &redb::WriteTransaction,
    from: u64,
    err: &dyn Fn(redb::Error) -> Error,
) -> Result<(), Error> {
    match from {
        1 => v1_to_v2(txn, err),
        // The `volumes` table is new (made by `ensure_tables`); container records without
        // `volumes` read as mounting none.
        2 => Ok(()),
        _ => unreachable!("no migration from schema {from}"),
    }
}

/// Creates every table of the current schema that does not exist yet.
pub(super) fn ensure_tables(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(NAMESPACES)?;
    txn.open_table(IMAGES)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_RESOURCES)?;
    txn.open_table(CONTAINERS)?;
    txn.open_table(VOLUMES)?;
    Ok(())
}

/// Schema 1 → 2: image records move into the `default` namespace and gain `updated_at`.
fn v1_to_v2(txn: &redb::WriteTransaction, err: &dyn Fn(redb::Error) -> Error) -> Result<(), Error> {
    let e = |x: redb::Error| err(x);
    let mut old: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let t = txn.open_table(IMAGES_V1).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            old.push((k.value().to_string(), v.value().to_vec()));
        }
    }
    txn.delete_table(IMAGES_V1).map_err(|x| e(x.into()))?;
    let mut images = txn.open_table(IMAGES).map_err(|x| e(x.into()))?;
    for (name, bytes) in old {
        // An unreadable record stops the migration (the transaction is dropped, the file keeps
        // schema 1) rather than being lost.
        let v1: ImageRecordV1 = super::decode("images", &name, &bytes)?;
        let rec = ImageRecord {
            name: v1.name,
            target: v1.target,
            labels: v1.labels,
            created_at: v1.created_at,
            updated_at: v1.created_at,
        };
        let bytes = serde_json::to_vec(&rec).expect("image record serialises");
        images
            .insert((DEFAULT_NAMESPACE, name.as_str()), bytes.as_slice())
            .map_err(|x| e(x.into()))?;
    }
    txn.open_table(NAMESPACES)
        .map_err(|x| e(x.into()))?
        .insert(DEFAULT_NAMESPACE, b"{}".as_slice())
        .map_err(|x| e(x.into()))?;
    Ok(())
}
