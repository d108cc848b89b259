//! Push: blobs (skipped when the registry has them, mounted across repositories when the store
//! knows where they came from, else uploaded), then manifests, children before their index.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::client::{scope_pull, scope_push, Session, Source};
use super::http::Url;
use super::pull::{is_index, is_manifest, select_manifest};
use super::{
    add_source_label, Error, Progress, ProgressState, PushOptions, Reference, Result,
    LABEL_SOURCE_PREFIX,
};
use crate::content::{self, Store};
use crate::oci::{Descriptor, Digest, Index, Manifest};

struct Pusher<'a> {
    s: Session,
    store: &'a dyn Store,
    progress: &'a (dyn Fn(Progress) + Sync),
    opts: &'a PushOptions,
}

impl<'a> Pusher<'a> {
    fn what(&self, digest: &Digest) -> String {
        format!("{}/{}@{digest}", self.s.host(), self.s.repo())
    }

    fn blob_err(&self, digest: &Digest, source: content::Error) -> Error {
        Error::Blob {
            reference: self.s.reference.to_string(),
            digest: digest.clone(),
            source,
        }
    }

    fn scopes(&self, extra_pull: Option<&str>) -> Vec<String> {
        let mut v = vec![scope_push(self.s.repo())];
        if let Some(r) = extra_pull {
            v.push(scope_pull(r));
        }
        v
    }

    fn report(&self, d: &Descriptor, current: u64, state: ProgressState) {
        (self.progress)(Progress {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            total: d.size,
            current,
            state,
        });
    }

    /// Another repository of this registry the blob came from (its source label).
    fn mount_source(&self, digest: &Digest) -> Option<String> {
        let info = self.store.info(digest).ok()?;
        let v = info
            .labels
            .get(&format!("{LABEL_SOURCE_PREFIX}{}", self.s.host()))?;
        v.split(',')
            .find(|r| !r.is_empty() && *r != self.s.repo())
            .map(str::to_string)
    }

    fn remember_source(&self, digest: &Digest) {
        if let Ok(info) = self.store.info(digest) {
            let mut l = info.labels.clone();
            add_source_label(&mut l, self.s.host(), self.s.repo());
            if l != info.labels {
                let _ = self.store.set_labels(digest, l);
            }
        }
    }

    fn push_blob(&self, d: &Descriptor) -> Result<()> {
        let digest = &d.digest;
        let what = self.what(digest);
        let info = self
            .store
            .info(digest)
            .map_err(|e| self.blob_err(digest, e))?;
        if info.size != d.size {
            return Err(self.blob_err(
                digest,
                content::Error::SizeMismatch {
                    digest: digest.clone(),
                    expected: d.size,
                    actual: info.size,
                },
            ));
        }
        let repo = self.s.repo().to_string();
        let head_url = self.s.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let head = self
            .s
            .request("HEAD", &head_url, &[], Source::Empty, &self.scopes(None))?;
        match head.status {
            200 => {
                head.discard();
                self.report(d, d.size, ProgressState::Exists);
                self.remember_source(digest);
                return Ok(());
            }
            404 => head.discard(),
            _ => return Err(self.s.error(head, &what)),
        }
        let from = self.mount_source(digest);
        let (path, scopes) = match &from {
            Some(src) => (
                format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={src}"),
                self.scopes(Some(src)),
            ),
            None => (format!("/v2/{repo}/blobs/uploads/"), self.scopes(None)),
        };
        let url = self.s.url(&path)?;
        let resp = self.s.request("POST", &url, &[], Source::Empty, &scopes)?;
        let location = match resp.status {
            201 if from.is_some() => {
                resp.discard();
                self.report(d, d.size, ProgressState::Mounted);
                self.remember_source(digest);
                return Ok(());
            }
            202 => {
                let l = resp.header("location").map(str::to_string);
                resp.discard();
                l.ok_or_else(|| Error::Protocol {
                    reference: what.clone(),
                    what: "upload started without a Location".into(),
                })?
            }
            _ => return Err(self.s.error(resp, &what)),
        };
        let mut upload = url
            .join(&location)
            .map_err(|e| self.s.conn_err(&location, e))?;
        let scopes = self.scopes(None);
        self.report(d, 0, ProgressState::Uploading);
        let mut sent = 0u64;
        if let Some(chunk) = self.opts.chunk_size.filter(|c| *c > 0 && *c < d.size) {
            while sent < d.size {
                let len = chunk.min(d.size - sent);
                let hs = [
                    ("Content-Type", "application/octet-stream".to_string()),
                    ("Content-Range", format!("{}-{}", sent, sent + len - 1)),
                ];
                let src = Source::Blob {
                    store: self.store,
                    digest,
                    offset: sent,
                    len,
                };
                let resp = self.s.request("PATCH", &upload, &hs, src, &scopes)?;
                if resp.status != 202 {
                    return Err(self.s.error(resp, &what));
                }
                let l = resp.header("location").map(str::to_string);
                resp.discard();
                if let Some(l) = l {
                    upload = upload.join(&l).map_err(|e| self.s.conn_err(&l, e))?;
                }
                sent += len;
                self.report(d, sent, ProgressState::Uploading);
            }
        }
        let sep = if upload.path.contains('?') { '&' } else { '?' };
        let put = Url {
            path: format!("{}{sep}digest={digest}", upload.path),
            ..upload
        };
        let rest = d.size - sent;
        let src = if rest == 0 {
            Source::Empty
        } else {
            Source::Blob {
                store: self.store,
                digest,
                offset: sent,
                len: rest,
            }
        };
        let hs = [("Content-Type", "application/octet-stream".to_string())];
        let resp = self.s.request("PUT", &put, &hs, src, &scopes)?;
        if resp.status != 201 {
            return Err(self.s.error(resp, &what));
        }
        resp.discard();
        self.report(d, d.size, ProgressState::Done);
        self.remember_source(digest);
        Ok(())
    }

    fn put_manifest(&self, d: &Descriptor, object: &str) -> Result<()> {
        let data = self
            .store
            .read_all(&d.digest)
            .map_err(|e| self.blob_err(&d.digest, e))?;
        let what =
            format!("{}/{}:{object}", self.s.host(), self.s.repo()).replace(":sha256:", "@sha256:");
        let url = self
            .s
            .url(&format!("/v2/{}/manifests/{object}", self.s.repo()))?;
        let hs = [("Content-Type", d.media_type.clone())];
        self.report(d, 0, ProgressState::Uploading);
        let resp = self
            .s
            .request("PUT", &url, &hs, Source::Bytes(&data), &self.scopes(None))?;
        if resp.status != 201 {
            return Err(self.s.error(resp, &what));
        }
        if let Some(got) = resp
            .header("docker-content-digest")
            .and_then(|g| g.parse::<Digest>().ok())
        {
            if got != d.digest {
                return Err(Error::Protocol {
                    reference: what,
                    what: format!(
                        "the registry stored the manifest as {got}, not {}",
                        d.digest
                    ),
                });
            }
        }
        resp.discard();
        self.report(d, d.size, ProgressState::Done);
        self.remember_source(&d.digest);
        Ok(())
    }

    fn read_manifest(&self, d: &Descriptor) -> Result<Manifest> {
        let data = self
            .store
            .read_all(&d.digest)
            .map_err(|e| self.blob_err(&d.digest, e))?;
        serde_json::from_slice(&data).map_err(|e| Error::Protocol {
            reference: self.s.reference.to_string(),
            what: format!("invalid image manifest {} in the store: {e}", d.digest),
        })
    }
}

/// Pushes `target` (an index or a manifest in `store`) to `reference`.
///
/// An index whose manifests are not all in the store (a pull keeps only its platform) is
/// replaced by the manifest of `opts.platform`, which is pushed alone under the tag.
pub fn push(
    store: &dyn Store,
    target: &Descriptor,
    reference: &str,
    opts: &PushOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<()> {
    let r = Reference::parse(reference)?;
    let s = Session::new(
        &r,
        &opts.insecure,
        &opts.certs_dirs,
        opts.credentials.clone(),
    )?;
    let p = Pusher {
        s,
        store,
        progress,
        opts,
    };
    // What to push: manifests (children first) and their blobs.
    let mut target = target.clone();
    let mut manifests: Vec<(Descriptor, Manifest)> = Vec::new();
    let mut index_too = false;
    if is_index(&target.media_type) {
        let data = store
            .read_all(&target.digest)
            .map_err(|e| p.blob_err(&target.digest, e))?;
        let index: Index = serde_json::from_slice(&data).map_err(|e| Error::Protocol {
            reference: r.to_string(),
            what: format!("invalid image index {} in the store: {e}", target.digest),
        })?;
        let all_here = index
            .manifests
            .iter()
            .all(|m| store.info(&m.digest).is_ok());
        if all_here {
            index_too = true;
            for m in &index.manifests {
                if !is_manifest(&m.media_type) {
                    return Err(Error::UnsupportedMediaType {
                        reference: r.to_string(),
                        media_type: format!("{} nested in an index", m.media_type),
                    });
                }
                manifests.push((m.clone(), p.read_manifest(m)?));
            }
        } else {
            let m = select_manifest(&index, &opts.platform).ok_or_else(|| {
                Error::NoMatchingPlatform {
                    reference: r.to_string(),
                    platform: super::platform_string(&opts.platform),
                    available: "the platforms of the manifests in the store".into(),
                }
            })?;
            let m = Descriptor {
                platform: None,
                ..m.clone()
            };
            manifests.push((m.clone(), p.read_manifest(&m)?));
            target = m;
        }
    } else if is_manifest(&target.media_type) {
        manifests.push((target.clone(), p.read_manifest(&target)?));
    } else {
        return Err(Error::UnsupportedMediaType {
            reference: r.to_string(),
            media_type: target.media_type.clone(),
        });
    }

    let mut seen = BTreeSet::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    for (_, m) in &manifests {
        for b in std::iter::once(&m.config).chain(m.layers.iter()) {
            if seen.insert(b.digest.clone()) {
                blobs.push(b.clone());
            }
        }
    }
    for b in &blobs {
        p.report(b, 0, ProgressState::Waiting);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..opts.parallel.clamp(1, 16).min(blobs.len().max(1)) {
            sc.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(b) = blobs.get(i) else { return };
                if let Err(e) = p.push_blob(b) {
                    stop.store(true, Ordering::SeqCst);
                    first_err.lock().expect("error lock").get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("error lock") {
        return Err(e);
    }
    let object = r.object();
    if index_too {
        for (d, _) in &manifests {
            p.put_manifest(d, d.digest.as_str())?;
        }
        p.put_manifest(&target, &object)?;
    } else {
        p.put_manifest(&target, &object)?;
    }
    Ok(())
}
