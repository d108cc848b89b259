//! Pull: resolve a reference, pick the platform's manifest, fetch config and layers in
//! parallel into the content store (resuming interrupted ingests with Range requests).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::client::{scope_pull, Session, Source};
use super::{
    add_source_label, platform_string, Error, Progress, ProgressState, PullOptions, Pulled,
    Reference, Result,
};
use crate::content::{self, Store};
use crate::oci::{
    Descriptor, Digest, Index, Manifest, Platform, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};

/// Largest manifest or index accepted (distribution's own limit is 4 MiB).
pub(crate) const MAX_MANIFEST: usize = 4 << 20;
/// Attempts per blob when the connection drops (each resumes where the last stopped).
const BLOB_ATTEMPTS: usize = 3;
/// How long a pull waits for another writer of the same blob (another pull) to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);

pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

pub(crate) fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// The media type of a manifest document: its `mediaType` field, else the HTTP Content-Type,
/// else guessed from its shape.
pub(crate) fn media_type_of(body: &[u8], content_type: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Option<Probe> = serde_json::from_slice(body).ok();
    if let Some(mt) = probe.as_ref().and_then(|p| p.media_type.clone()) {
        return mt;
    }
    if let Some(ct) = content_type {
        let ct = ct.split(';').next().unwrap_or("").trim();
        if is_index(ct) || is_manifest(ct) {
            return ct.to_string();
        }
    }
    if probe.is_some_and(|p| p.manifests.is_some()) {
        MEDIA_OCI_INDEX.to_string()
    } else {
        MEDIA_OCI_MANIFEST.to_string()
    }
}

/// The manifest of `want` in an index: same os and architecture; a variant asked for must match;
/// without one the entry without variant (or arm64's `v8`) is preferred.
pub fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(u8, &Descriptor)> = None;
    for d in &index.manifests {
        if !is_manifest(&d.media_type) && !is_index(&d.media_type) {
            continue;
        }
        let score = match &d.platform {
            None => 1,
            Some(p) => {
                if p.os != want.os || p.architecture != want.architecture {
                    continue;
                }
                match (&want.variant, &p.variant) {
                    (Some(w), Some(v)) if w == v => 4,
                    (Some(w), None) if w == "v8" && p.architecture == "arm64" => 3,
                    (Some(_), _) => continue,
                    (None, None) => 4,
                    (None, Some(v)) if v == "v8" && p.architecture == "arm64" => 3,
                    (None, Some(_)) => 2,
                }
            }
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, d));
        }
    }
    // An entry without a platform only stands in when no entry says anything else.
    match best {
        Some((1, d)) if index.manifests.iter().all(|m| m.platform.is_none()) => Some(d),
        Some((1, _)) => None,
        b => b.map(|(_, d)| d),
    }
}

struct Puller<'a> {
    s: Session,
    store: &'a dyn Store,
    progress: &'a (dyn Fn(Progress) + Sync),
    scopes: Vec<String>,
}

impl<'a> Puller<'a> {
    fn labels_for(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        add_source_label(&mut l, self.s.host(), self.s.repo());
        l
    }

    fn blob_err(&self, digest: &Digest, source: content::Error) -> Error {
        Error::Blob {
            reference: self.s.reference.to_string(),
            digest: digest.clone(),
            source,
        }
    }

    /// Records the source repository on a blob that was already there.
    fn label_existing(&self, digest: &Digest) -> Result<()> {
        let info = self
            .store
            .info(digest)
            .map_err(|e| self.blob_err(digest, e))?;
        let mut labels = info.labels.clone();
        add_source_label(&mut labels, self.s.host(), self.s.repo());
        if labels != info.labels {
            self.store
                .set_labels(digest, labels)
                .map_err(|e| self.blob_err(digest, e))?;
        }
        Ok(())
    }

    fn store_bytes(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        if self.store.info(digest).is_ok() {
            return self.label_existing(digest);
        }
        let mut w = self.writer(&format!("manifest-{digest}"), digest, data.len() as u64)?;
        w.truncate().map_err(|e| self.blob_err(digest, e))?;
        w.write_all(data)
            .map_err(|e| self.blob_err(digest, io_to_content(e)))?;
        w.commit(Some((digest, data.len() as u64)), self.labels_for())
            .map_err(|e| self.blob_err(digest, e))?;
        Ok(())
    }

    /// A writer for `reference`, waiting while another writer (another pull of the same
    /// blob) holds it. `None`... never: returns once the lock is ours.
    fn writer(
        &self,
        reference: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Box<dyn content::Writer>> {
        let start = Instant::now();
        loop {
            match self.store.writer(reference, Some((digest, size))) {
                Ok(w) => return Ok(w),
                Err(content::Error::Locked { .. }) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(self.blob_err(digest, e)),
            }
        }
    }

    fn report(&self, d: &Descriptor, state: ProgressState) {
        (self.progress)(Progress {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            total: d.size,
            current: if state == ProgressState::Waiting {
                0
            } else {
                d.size
            },
            state,
        });
    }

    /// [`Self::fetch_one_manifest`], reported as progress like blobs are (Waiting, then Exists
    /// or Done), so a caller that protects what a pull writes sees the manifests too.
    fn fetch_manifest(
        &self,
        object: &str,
        known: Option<&Descriptor>,
    ) -> Result<(Descriptor, Vec<u8>)> {
        let (d, data, fetched) = self.fetch_one_manifest(object, known)?;
        if fetched {
            self.report(&d, ProgressState::Done);
        } else {
            self.report(&d, ProgressState::Waiting);
            self.report(&d, ProgressState::Exists);
        }
        Ok((d, data))
    }

    /// GETs a manifest or index by tag or digest; verifies it against the digest asked for or
    /// announced. Returns its descriptor and bytes (also stored), and whether it was
    /// downloaded.
    fn fetch_one_manifest(
        &self,
        object: &str,
        known: Option<&Descriptor>,
    ) -> Result<(Descriptor, Vec<u8>, bool)> {
        let what =
            format!("{}/{}:{object}", self.s.host(), self.s.repo()).replace(":sha256:", "@sha256:");
        // Already in the store (pull of a digest seen before).
        if let Some(d) = known {
            if let Ok(data) = self.store.read_all(&d.digest) {
                self.label_existing(&d.digest)?;
                return Ok((d.clone(), data, false));
            }
        } else if let Ok(dig) = object.parse::<Digest>() {
            if let Ok(data) = self.store.read_all(&dig) {
                self.label_existing(&dig)?;
                let mt = media_type_of(&data, None);
                let size = data.len() as u64;
                return Ok((descriptor(mt, dig, size), data, false));
            }
        }
        let url = self
            .s
            .url(&format!("/v2/{}/manifests/{object}", self.s.repo()))?;
        let accept = [("Accept", ACCEPT.to_string())];
        // A tag: HEAD first, so a manifest already stored is not downloaded again.
        if known.is_none() && !object.starts_with("sha256:") {
            let head = self
                .s
                .request("HEAD", &url, &accept, Source::Empty, &self.scopes)?;
            if head.status == 200 {
                let dig = head
                    .header("docker-content-digest")
                    .and_then(|d| d.parse::<Digest>().ok());
                let ct = head.header("content-type").map(str::to_string);
                head.discard();
                if let Some(dig) = dig {
                    if let Ok(data) = self.store.read_all(&dig) {
                        self.label_existing(&dig)?;
                        let mt = media_type_of(&data, ct.as_deref());
                        let size = data.len() as u64;
                        return Ok((descriptor(mt, dig, size), data, false));
                    }
                }
            } else if head.status == 404 {
                head.discard();
                return Err(Error::NotFound { reference: what });
            } else {
                head.discard();
            }
        }
        let mut resp = self
            .s
            .request("GET", &url, &accept, Source::Empty, &self.scopes)?;
        if resp.status != 200 {
            return Err(self.s.error(resp, &what));
        }
        let ct = resp.header("content-type").map(str::to_string);
        let announced = resp
            .header("docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let data = resp
            .read_body(MAX_MANIFEST)
            .map_err(|e| self.s.conn_err(&url.path, e))?;
        let actual = Digest::of(&data);
        let expected = known
            .map(|d| d.digest.clone())
            .or_else(|| object.parse::<Digest>().ok())
            .or(announced);
        if let Some(exp) = expected {
            if exp != actual {
                return Err(self.blob_err(
                    &exp,
                    content::Error::DigestMismatch {
                        expected: exp.clone(),
                        actual,
                    },
                ));
            }
        }
        if let Some(k) = known {
            if k.size != data.len() as u64 {
                return Err(self.blob_err(
                    &k.digest,
                    content::Error::SizeMismatch {
                        digest: k.digest.clone(),
                        expected: k.size,
                        actual: data.len() as u64,
                    },
                ));
            }
        }
        let mt = media_type_of(&data, ct.as_deref());
        let size = data.len() as u64;
        let d = descriptor(mt, actual, size);
        self.report(&d, ProgressState::Waiting);
        self.store_bytes(&d.digest, &data)?;
        Ok((d, data, true))
    }

    /// Fetches one blob into the store unless it is there; resumes an interrupted ingest.
    fn fetch_blob(&self, desc: &Descriptor, stop: &AtomicBool) -> Result<()> {
        let digest = &desc.digest;
        let report = |current, state| {
            (self.progress)(Progress {
                digest: digest.clone(),
                media_type: desc.media_type.clone(),
                total: desc.size,
                current,
                state,
            })
        };
        if self.store.info(digest).is_ok() {
            self.label_existing(digest)?;
            report(desc.size, ProgressState::Exists);
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ingest = format!("pull-{digest}");
            let mut w = self.writer(&ingest, digest, desc.size)?;
            // Another pull may have committed it while we waited for the lock.
            if self.store.info(digest).is_ok() {
                drop(w);
                let _ = self.store.abort(&ingest);
                self.label_existing(digest)?;
                report(desc.size, ProgressState::Exists);
                return Ok(());
            }
            let offset = w.offset();
            if offset < desc.size {
                match self.download(desc, &mut *w, offset, stop, &report) {
                    Ok(()) => {}
                    Err(e @ Error::Connection { .. })
                        if attempt < BLOB_ATTEMPTS && !stop.load(Ordering::Relaxed) =>
                    {
                        drop(w); // kept for the resume
                        let _ = e;
                        continue;
                    }
                    Err(e) => {
                        // Bytes cut off by the network are kept for the next pull to resume;
                        // an ingest that holds nothing, what a registry or disk error left, and
                        // a download stopped by another blob's failure (the disk may be full)
                        // go.
                        let resumable = matches!(e, Error::Connection { .. });
                        let held = w.offset();
                        drop(w);
                        if !(resumable && held > 0) {
                            let _ = self.store.abort(&ingest);
                        }
                        return Err(e);
                    }
                }
            }
            w.commit(Some((digest, desc.size)), self.labels_for())
                .map_err(|e| self.blob_err(digest, e))?;
            report(desc.size, ProgressState::Done);
            return Ok(());
        }
    }

    fn download(
        &self,
        desc: &Descriptor,
        w: &mut dyn content::Writer,
        offset: u64,
        stop: &AtomicBool,
        report: &dyn Fn(u64, ProgressState),
    ) -> Result<()> {
        let digest = &desc.digest;
        let what = format!("{}/{}@{digest}", self.s.host(), self.s.repo());
        let url = self
            .s
            .url(&format!("/v2/{}/blobs/{digest}", self.s.repo()))?;
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let mut resp = self
            .s
            .request("GET", &url, &headers, Source::Empty, &self.scopes)?;
        let mut done = match resp.status {
            206 if offset > 0 => {
                let ok = resp
                    .header("content-range")
                    .is_some_and(|r| r.trim().starts_with(&format!("bytes {offset}-")));
                if !ok {
                    return Err(Error::Protocol {
                        reference: what,
                        what: format!(
                            "asked for bytes from {offset}, got Content-Range {:?}",
                            resp.header("content-range")
                        ),
                    });
                }
                offset
            }
            200 => {
                if offset > 0 {
                    // The registry ignored the Range header: start over.
                    w.truncate().map_err(|e| self.blob_err(digest, e))?;
                }
                0
            }
            _ => return Err(self.s.error(resp, &what)),
        };
        report(done, ProgressState::Downloading);
        let mut buf = vec![0u8; 256 * 1024];
        let mut last = done;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Protocol {
                    reference: what,
                    what: "pull stopped after another blob failed".into(),
                });
            }
            let n = resp
                .read(&mut buf)
                .map_err(|e| self.s.conn_err(&url.path, e))?;
            if n == 0 {
                break;
            }
            if done + n as u64 > desc.size {
                return Err(self.blob_err(
                    digest,
                    content::Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: desc.size,
                        actual: done + n as u64,
                    },
                ));
            }
            w.write_all(&buf[..n])
                .map_err(|e| self.blob_err(digest, io_to_content(e)))?;
            done += n as u64;
            if done - last >= 1 << 20 {
                report(done, ProgressState::Downloading);
                last = done;
            }
        }
        if done < desc.size {
            return Err(self.s.conn_err(
                &url.path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("blob ended after {done} of {} bytes", desc.size),
                ),
            ));
        }
        Ok(())
    }
}

fn io_to_content(e: std::io::Error) -> content::Error {
    content::Error::Io {
        op: "write",
        path: "ingest".into(),
        source: e,
    }
}

fn descriptor(media_type: String, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type,
        digest,
        size,
        urls: None,
        annotations: None,
        platform: None,
    }
}

/// Pulls `reference` into `store`. See [`PullOptions`] for the platform, insecure registries,
/// credentials, parallelism and the in-order layer hook.
pub fn pull(
    store: &dyn Store,
    reference: &str,
    opts: &PullOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Pulled> {
    let r = Reference::parse(reference)?;
    let s = Session::new(
        &r,
        &opts.insecure,
        &opts.certs_dirs,
        opts.credentials.clone(),
    )?;
    let scopes = vec![scope_pull(&r.repository)];
    let p = Puller {
        s,
        store,
        progress,
        scopes,
    };
    let (target, data) = p.fetch_manifest(&r.object(), None)?;
    let (manifest_desc, manifest_data) = if is_index(&target.media_type) {
        let index: Index = serde_json::from_slice(&data).map_err(|e| Error::Protocol {
            reference: r.to_string(),
            what: format!("invalid image index {}: {e}", target.digest),
        })?;
        let chosen =
            select_manifest(&index, &opts.platform).ok_or_else(|| Error::NoMatchingPlatform {
                reference: r.to_string(),
                platform: platform_string(&opts.platform),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(platform_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if is_index(&chosen.media_type) {
            return Err(Error::UnsupportedMediaType {
                reference: r.to_string(),
                media_type: format!("{} nested in an index", chosen.media_type),
            });
        }
        let (mut d, bytes) = p.fetch_manifest(chosen.digest.as_str(), Some(chosen))?;
        d.platform = chosen.platform.clone();
        (d, bytes)
    } else if is_manifest(&target.media_type) {
        (target.clone(), data)
    } else {
        return Err(Error::UnsupportedMediaType {
            reference: r.to_string(),
            media_type: target.media_type.clone(),
        });
    };
    let manifest: Manifest =
        serde_json::from_slice(&manifest_data).map_err(|e| Error::Protocol {
            reference: r.to_string(),
            what: format!("invalid image manifest {}: {e}", manifest_desc.digest),
        })?;

    // Config first, then layers; `parallel` workers take the next blob in that order.
    let mut jobs: Vec<&Descriptor> = vec![&manifest.config];
    jobs.extend(manifest.layers.iter());
    for d in &jobs {
        progress(Progress {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            total: d.size,
            current: 0,
            state: ProgressState::Waiting,
        });
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    // Which layers are in the store; a separate thread hands them to `on_layer` in order, so
    // a slow handler (unpacking) never holds up the downloads.
    let done = Mutex::new(vec![false; manifest.layers.len()]);
    let done_cv = Condvar::new();
    let fail = |e: Error| {
        stop.store(true, Ordering::SeqCst);
        let mut g = first_err.lock().expect("error lock");
        if g.is_none() {
            *g = Some(e);
        }
        done_cv.notify_all();
    };
    let workers = opts.parallel.clamp(1, 16).min(jobs.len());
    let remaining_workers = AtomicUsize::new(workers);
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(desc) = jobs.get(i) else { break };
                    if let Err(e) = p.fetch_blob(desc, &stop) {
                        fail(e);
                        break;
                    }
                    if i > 0 {
                        done.lock().expect("done lock")[i - 1] = true;
                        done_cv.notify_all();
                    }
                }
                remaining_workers.fetch_sub(1, Ordering::SeqCst);
                done_cv.notify_all();
            });
        }
        if let Some(handler) = &opts.on_layer {
            sc.spawn(|| {
                for (k, l) in manifest.layers.iter().enumerate() {
                    let mut g = done.lock().expect("done lock");
                    while !g[k] {
                        if stop.load(Ordering::SeqCst)
                            || remaining_workers.load(Ordering::SeqCst) == 0
                        {
                            return;
                        }
                        g = done_cv
                            .wait_timeout(g, Duration::from_millis(200))
                            .expect("done lock")
                            .0;
                    }
                    drop(g);
                    if let Err(message) = handler(k, l) {
                        fail(Error::LayerHandler {
                            reference: r.to_string(),
                            digest: l.digest.clone(),
                            message,
                        });
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("error lock") {
        return Err(e);
    }
    Ok(Pulled {
        name: r.to_string(),
        target,
        manifest: manifest_desc,
        config: manifest.config.digest.clone(),
        layers: manifest.layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(mt: &str, n: u8, p: Option<(&str, &str, Option<&str>)>) -> Descriptor {
        Descriptor {
            media_type: mt.to_string(),
            digest: Digest::of(&[n]),
            size: 1,
            urls: None,
            annotations: None,
            platform: p.map(|(os, arch, v)| Platform {
                os: os.into(),
                architecture: arch.into(),
                os_version: None,
                variant: v.map(Into::into),
            }),
        }
    }

    fn idx(m: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.into()),
            manifests: m,
            annotations: None,
        }
    }

    fn plat(s: &str) -> Platform {
        super::super::parse_platform(s).unwrap()
    }

    #[test]
    fn selects_by_platform() {
        let m = MEDIA_OCI_MANIFEST;
        let i = idx(vec![
            d(m, 1, Some(("linux", "arm", Some("v6")))),
            d(m, 2, Some(("linux", "arm", Some("v7")))),
            d(m, 3, Some(("linux", "arm64", Some("v8")))),
            d(m, 4, Some(("linux", "amd64", None))),
            d(m, 5, Some(("unknown", "unknown", None))),
            d(m, 6, Some(("windows", "amd64", None))),
        ]);
        let pick = |p: &str| select_manifest(&i, &plat(p)).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(Digest::of(&[4])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(&[2])));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/arm64/v8"), Some(Digest::of(&[3])));
        assert_eq!(pick("windows/amd64"), Some(Digest::of(&[6])));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        // Without a variant asked for, any variant of the architecture will do.
        assert!(pick("linux/arm").is_some());
    }

    #[test]
    fn docker_list_and_missing_platforms() {
        let i = idx(vec![
            d(
                MEDIA_DOCKER_MANIFEST,
                1,
                Some(("linux", "amd64", Some("v2"))),
            ),
            d(MEDIA_DOCKER_MANIFEST, 2, Some(("linux", "amd64", None))),
            d(
                "application/vnd.in-toto+json",
                3,
                Some(("linux", "amd64", None)),
            ),
        ]);
        assert_eq!(
            select_manifest(&i, &plat("linux/amd64")).unwrap().digest,
            Digest::of(&[2]),
            "an exact match beats another variant; non-manifests are skipped"
        );
        let only = idx(vec![d(MEDIA_OCI_MANIFEST, 7, None)]);
        assert_eq!(
            select_manifest(&only, &plat("linux/amd64")).unwrap().digest,
            Digest::of(&[7])
        );
        let mixed = idx(vec![
            d(MEDIA_OCI_MANIFEST, 7, None),
            d(MEDIA_OCI_MANIFEST, 8, Some(("linux", "arm64", None))),
        ]);
        assert!(select_manifest(&mixed, &plat("linux/amd64")).is_none());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#, None),
            MEDIA_OCI_INDEX
        );
        assert_eq!(
            media_type_of(
                br#"{"schemaVersion":2}"#,
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
            ),
            MEDIA_DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#,
                None
            ),
            MEDIA_DOCKER_LIST
        );
    }
}

/// A registry that misbehaves on purpose (the real one never serves wrong bytes or 500s):
/// scripted answers by path, over real TCP.
#[cfg(test)]
mod hostile {
    use super::*;
    use crate::content::local::LocalStore;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    type Route = Box<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

    fn reply(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    /// Serves `route(request line)`; `None` closes the connection without an answer.
    fn serve(route: Route) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let route = std::sync::Arc::new(route);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let route = route.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut first = String::new();
                        if r.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                                break;
                            }
                        }
                        match route(first.trim()) {
                            Some(b) => {
                                if (&s).write_all(&b).is_err() {
                                    return;
                                }
                                // "X-Close: 1" in a scripted answer: hang up after it.
                                if b.windows(10).any(|w| w == b"X-Close: 1") {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        port
    }

    fn image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let layer = vec![7u8; 100_000];
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            Digest::of(&config),
            config.len(),
            Digest::of(&layer),
            layer.len()
        );
        (m.into_bytes(), config, layer)
    }

    fn manifest_route(m: Vec<u8>) -> impl Fn(&str) -> Option<Vec<u8>> + Send + Sync {
        move |line: &str| {
            if line.contains("/manifests/") {
                let h = format!(
                    "Content-Type: {MEDIA_OCI_MANIFEST}\r\nDocker-Content-Digest: {}\r\n",
                    Digest::of(&m)
                );
                if line.starts_with("HEAD") {
                    // A HEAD answer announces the length without a body.
                    let r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{h}\r\n", m.len());
                    return Some(r.into_bytes());
                }
                return Some(reply("200 OK", &h, &m));
            }
            None
        }
    }

    fn store() -> (tempfile::TempDir, LocalStore) {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn a_blob_with_the_wrong_bytes_is_refused_and_not_kept() {
        let (m, config, layer) = image();
        let (cd, ld) = (Digest::of(&config), Digest::of(&layer));
        let mr = manifest_route(m);
        let ld2 = ld.clone();
        let port = serve(Box::new(move |line| {
            if line.contains(&format!("/blobs/{cd}")) {
                return Some(reply("200 OK", "", &config));
            }
            if line.contains(&format!("/blobs/{ld2}")) {
                return Some(reply("200 OK", "", &vec![8u8; 100_000])); // same size, other bytes
            }
            mr(line)
        }));
        let (_d, s) = store();
        let e = pull(
            &s,
            &format!("127.0.0.1:{port}/evil:1"),
            &PullOptions::default(),
            &|_| {},
        )
        .unwrap_err();
        match &e {
            Error::Blob {
                digest,
                source: content::Error::DigestMismatch { .. },
                ..
            } => assert_eq!(*digest, ld),
            other => panic!("want a digest mismatch on the layer, got {other}"),
        }
        assert!(e.to_string().contains(ld.as_str()), "{e}");
        assert!(s.info(&ld).is_err());
        assert!(
            s.ingests().unwrap().is_empty(),
            "the bad bytes are not kept for a resume"
        );
    }

    #[test]
    fn registry_errors_are_reported_with_the_reference() {
        let port = serve(Box::new(|line| {
            if line.contains("/manifests/broken") {
                return Some(reply(
                    "500 Internal Server Error",
                    "Content-Type: application/json\r\n",
                    br#"{"errors":[{"code":"UNKNOWN","message":"storage on fire"}]}"#,
                ));
            }
            if line.contains("/manifests/denied") {
                return Some(reply(
                    "403 Forbidden",
                    "",
                    br#"{"errors":[{"code":"DENIED","message":"no way"}]}"#,
                ));
            }
            if line.contains("/manifests/noauth") {
                return Some(reply("401 Unauthorized", "", b""));
            }
            if line.contains("/manifests/garbage") {
                return Some(reply(
                    "200 OK",
                    &format!("Content-Type: {MEDIA_OCI_MANIFEST}\r\n"),
                    b"{not json",
                ));
            }
            None // drop the connection
        }));
        let (_d, s) = store();
        let host = format!("127.0.0.1:{port}");
        let err = |tag: &str| {
            pull(
                &s,
                &format!("{host}/app:{tag}"),
                &PullOptions::default(),
                &|_| {},
            )
            .unwrap_err()
        };
        let e = err("broken");
        assert!(
            matches!(&e, Error::Registry { status: 500, code, .. } if code == "UNKNOWN"),
            "{e}"
        );
        assert!(
            e.to_string().contains("storage on fire") && e.to_string().contains("app:broken"),
            "{e}"
        );
        let e = err("denied");
        assert!(matches!(e, Error::Denied { .. }), "{e}");
        let e = err("noauth");
        assert!(
            e.to_string().contains(&format!("run kapsel login {host}")),
            "{e}"
        );
        let e = err("garbage");
        assert!(e.to_string().contains("invalid image manifest"), "{e}");
        let e = err("dropped");
        assert!(matches!(e, Error::Connection { .. }), "{e}");
        assert!(s.list().unwrap().iter().all(|i| i.size > 0));
    }

    #[test]
    fn a_connection_dropped_on_every_try_keeps_the_ingest_for_later() {
        let (m, config, layer) = image();
        let (cd, ld) = (Digest::of(&config), Digest::of(&layer));
        let mr = manifest_route(m);
        let half = layer[..50_000].to_vec();
        let ld2 = ld.clone();
        let port = serve(Box::new(move |line| {
            if line.contains(&format!("/blobs/{cd}")) {
                return Some(reply("200 OK", "", &config));
            }
            if line.contains(&format!("/blobs/{ld2}")) {
                // Announces the whole blob, sends half, then the connection closes.
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Close: 1\r\n\r\n",
                    100_000
                )
                .into_bytes();
                r.extend_from_slice(&half);
                return Some(r);
            }
            mr(line)
        }));
        let (_d, s) = store();
        let e = pull(
            &s,
            &format!("127.0.0.1:{port}/cut:1"),
            &PullOptions::default(),
            &|_| {},
        )
        .unwrap_err();
        assert!(matches!(e, Error::Connection { .. }), "{e}");
        assert!(s.info(&ld).is_err());
        let ing = s.ingests().unwrap();
        assert_eq!(ing.len(), 1);
        assert_eq!(ing[0].expected.as_ref(), Some(&ld));
    }
}
