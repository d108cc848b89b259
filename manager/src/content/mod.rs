//! The content store: blobs addressed by digest.
//!
//! Contract (every implementation, and the shared test suite, hold to it):
//! - A blob becomes visible under its digest only after its bytes were written to a temporary
//!   ingest file, fsynced, verified against the expected digest and size, and renamed into place.
//! - An ingest is named by a caller-chosen `reference` (e.g. `pull-<digest>`); opening a writer for
//!   a reference whose ingest was interrupted resumes it at [`Writer::offset`] (the caller may seek
//!   the source, e.g. an HTTP Range request, or call [`Writer::truncate`] to start over).
//! - Committing a blob that already exists succeeds and drops the ingest (idempotent).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::oci::Digest;

pub mod local;
pub mod testsuite;

/// What the store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    /// Seconds since the epoch when the blob was committed.
    pub created_at: u64,
    pub labels: BTreeMap<String, String>,
}

/// An ingest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: u64,
    pub expected: Option<Digest>,
    pub total: Option<u64>,
    /// Seconds since the epoch of the last write.
    pub updated_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("content {0} not found")]
    NotFound(Digest),
    #[error("ingest {reference:?} is locked by another writer")]
    Locked { reference: String },
    #[error("content verification failed: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("invalid ingest reference {0:?}")]
    InvalidReference(String),
    #[error("content store {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A blob store addressed by digest.
pub trait Store: Send + Sync {
    fn info(&self, digest: &Digest) -> Result<Info>;
    /// A reader of the whole blob.
    fn reader(&self, digest: &Digest) -> Result<Box<dyn ReadAt>>;
    /// Starts or resumes the ingest named `reference`. `expected` (digest, size) is checked at
    /// commit when given.
    fn writer(&self, reference: &str, expected: Option<(&Digest, u64)>) -> Result<Box<dyn Writer>>;
    fn set_labels(&self, digest: &Digest, labels: BTreeMap<String, String>) -> Result<Info>;
    fn delete(&self, digest: &Digest) -> Result<()>;
    /// Every committed blob.
    fn list(&self) -> Result<Vec<Info>>;
    /// Every ingest not yet committed.
    fn ingests(&self) -> Result<Vec<IngestStatus>>;
    /// Drops an ingest (an interrupted pull that will not be resumed).
    fn abort(&self, reference: &str) -> Result<()>;

    /// The whole blob in memory (manifests, configs, indexes: small documents).
    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut r = self.reader(digest)?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).map_err(|source| Error::Io {
            op: "read",
            path: digest.as_str().into(),
            source,
        })?;
        Ok(buf)
    }
}

/// A blob reader that also knows its size and can read at an offset (for range requests and
/// parallel readers).
pub trait ReadAt: Read + Send {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

/// A writer of one ingest. Dropping it without commit keeps the ingest for a later resume.
pub trait Writer: Write + Send {
    /// Bytes already in the ingest (non-zero when resuming).
    fn offset(&self) -> u64;
    /// Discards what the ingest holds and starts at offset 0.
    fn truncate(&mut self) -> Result<()>;
    /// fsyncs, verifies digest and size (the ones given here win over those given to
    /// [`Store::writer`]) and renames the blob into place; returns its digest.
    fn commit(
        self: Box<Self>,
        expected: Option<(&Digest, u64)>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest>;
}
