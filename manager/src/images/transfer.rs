//! Pull, push, import (load) and export (save) as jobs.
//!
//! A pull or import holds a lease named after its job for its whole run: the blobs it is
//! about to fetch are added to the lease before they are written, and the snapshots it is
//! about to commit before unpacking, so a concurrent garbage collection keeps them; the image
//! record is created (under the GC lock, after checking every blob is there) before the lease
//! is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::jobs::Job;
use super::{namespace, Error, Result, Service};
use crate::metadata::Resource;
use crate::oci::{Compression, Descriptor};
use crate::registry::{self, Credentials, ProgressState, Reference};
use crate::unpack::{self, UnpackEvent};

/// A lease outlives a crashed daemon by at most this long (GC drops it afterwards).
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Default)]
pub struct PullArgs {
    pub namespace: String,
    pub reference: String,
    pub platform: Option<String>,
    pub credentials: Option<Credentials>,
    pub no_unpack: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PushArgs {
    pub namespace: String,
    pub reference: String,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportArgs {
    pub namespace: String,
    pub path: String,
    pub no_unpack: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ExportArgs {
    pub namespace: String,
    pub references: Vec<String>,
    pub path: String,
    pub oci: bool,
}

/// Deletes its lease when the job ends, however it ends.
struct LeaseGuard<'a> {
    svc: &'a Service,
    ns: String,
    id: String,
    /// The first resource the lease failed to record: the job must not make an image of
    /// content the lease did not protect (GC could have taken it meanwhile).
    failed: Mutex<Option<crate::metadata::Error>>,
}

impl<'a> LeaseGuard<'a> {
    fn new(svc: &'a Service, ns: &str, id: &str) -> Result<LeaseGuard<'a>> {
        svc.db.create_lease(ns, id, Some(LEASE_TTL))?;
        Ok(LeaseGuard {
            svc,
            ns: ns.to_string(),
            id: id.to_string(),
            failed: Mutex::new(None),
        })
    }

    /// Records `res` under the lease; a failure is kept for `check` (callers are progress
    /// callbacks that cannot return one).
    fn hold(&self, res: &Resource) {
        if let Err(e) = self.svc.db.add_lease_resource(&self.ns, &self.id, res) {
            tracing::warn!(lease = self.id.as_str(), "{e}");
            self.failed
                .lock()
                .expect("lease failure slot")
                .get_or_insert(e);
        }
    }

    /// Fails when any `hold` failed.
    fn check(&self) -> Result<()> {
        match self.failed.lock().expect("lease failure slot").take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.svc.db.delete_lease(&self.ns, &self.id) {
            tracing::warn!(lease = self.id.as_str(), "{e}");
        }
    }
}

fn kind_of(media_type: &str) -> &'static str {
    if Compression::of_layer(media_type).is_some() {
        "layer"
    } else if media_type.contains("config") {
        "config"
    } else if media_type.contains("index") || media_type.contains("list") {
        "index"
    } else {
        "manifest"
    }
}

fn state_name(s: ProgressState, push: bool) -> &'static str {
    match s {
        ProgressState::Waiting => "waiting",
        ProgressState::Exists if push => "already exists",
        ProgressState::Exists => "exists",
        ProgressState::Downloading => "downloading",
        ProgressState::Uploading => "pushing",
        ProgressState::Mounted => "mounted",
        ProgressState::Done if push => "pushed",
        ProgressState::Done => "downloaded",
    }
}

impl Service {
    /// After a failed pull or load (its lease released), collects what it committed before
    /// failing: no image refers to it, and the store is left as it was. Bytes kept in an ingest
    /// for a resume are not blobs and stay.
    fn collect_if_failed(&self, r: &Result<()>) {
        if r.is_err() {
            if let Err(e) = self.collect() {
                tracing::warn!("after a failed transfer: {e}");
            }
        }
    }

    pub fn start_pull(self: &Arc<Self>, args: PullArgs) -> Result<Arc<Job>> {
        Reference::parse(&args.reference)?;
        if let Some(p) = &args.platform {
            registry::parse_platform(p)?;
        }
        let svc = self.clone();
        Ok(self.jobs.start("pull", move |job| {
            let r = svc.pull(job, args);
            svc.collect_if_failed(&r);
            r
        }))
    }

    pub fn start_push(self: &Arc<Self>, args: PushArgs) -> Result<Arc<Job>> {
        let r = Reference::parse(&args.reference)?;
        let ns = namespace(&args.namespace).to_string();
        self.db.get_image(&ns, &r.to_string()).map_err(|_| {
            Error::NotFound(format!(
                "{} (an image does not exist locally with this tag)",
                r.familiar()
            ))
        })?;
        let svc = self.clone();
        Ok(self.jobs.start("push", move |job| svc.push(job, args)))
    }

    pub fn start_import(self: &Arc<Self>, args: ImportArgs) -> Result<Arc<Job>> {
        let svc = self.clone();
        Ok(self.jobs.start("import", move |job| {
            let r = svc.import(job, args);
            svc.collect_if_failed(&r);
            r
        }))
    }

    pub fn start_export(self: &Arc<Self>, args: ExportArgs) -> Result<Arc<Job>> {
        if args.references.is_empty() {
            return Err(Error::InvalidArgument(
                "save needs at least one image".to_string(),
            ));
        }
        let ns = namespace(&args.namespace).to_string();
        for r in &args.references {
            self.find(&ns, r)?;
        }
        let svc = self.clone();
        Ok(self.jobs.start("export", move |job| svc.export(job, args)))
    }

    /// Unpacks `target` into snapshots named by chain id (held by `lease` meanwhile).
    fn unpack(
        &self,
        job: &Job,
        lease: &LeaseGuard<'_>,
        name: &str,
        target: &Descriptor,
        report_skipped: bool,
    ) -> Result<String> {
        let r = self.resolve(name, target)?;
        for c in unpack::chain_ids(&r.config.rootfs.diff_ids) {
            lease.hold(&Resource::Snapshot {
                snapshotter: self.snapshotter.driver().to_string(),
                key: c.to_string(),
            });
        }
        let layers = &r.manifest.layers;
        let mut progress = |ev: UnpackEvent| match ev {
            UnpackEvent::LayerSkipped { .. } if !report_skipped => {}
            UnpackEvent::LayerSkipped { index, .. } => {
                let l = &layers[index];
                job.item(l.digest.as_str(), "layer", "already exists", l.size, l.size);
            }
            UnpackEvent::LayerStarted { digest, size, .. } => {
                job.item(digest.as_str(), "layer", "extracting", 0, size);
            }
            UnpackEvent::LayerDone { index, .. } => {
                let l = &layers[index];
                job.item(l.digest.as_str(), "layer", "pull complete", l.size, l.size);
            }
        };
        unpack::unpack_image(
            &*self.store,
            &*self.snapshotter,
            &r.manifest,
            &r.config,
            &mut progress,
        )
        .map_err(|source| Error::Unpack {
            image: name.to_string(),
            source,
        })
    }

    /// Unpacks the layers `rx` delivers, in order, as they arrive; the config (announced by
    /// the pull's progress into `config`) gives their diff ids.
    fn unpack_stream(
        &self,
        job: &Job,
        lease: &LeaseGuard<'_>,
        name: &str,
        config: &Mutex<Option<Descriptor>>,
        pull_ended: &AtomicBool,
        rx: mpsc::Receiver<Descriptor>,
    ) -> Result<()> {
        let mut diff_ids: Option<Vec<crate::oci::Digest>> = None;
        let mut parent: Option<crate::oci::Digest> = None;
        for (index, layer) in rx.iter().enumerate() {
            if diff_ids.is_none() {
                diff_ids = Some(self.wait_config(name, config, pull_ended)?);
            }
            let ids = diff_ids.as_ref().expect("diff ids");
            let Some(diff_id) = ids.get(index) else {
                return Err(Error::Unpack {
                    image: name.to_string(),
                    source: unpack::Error::LayerCount {
                        layers: index + 1,
                        diff_ids: ids.len(),
                    },
                });
            };
            let chain = match &parent {
                None => diff_id.clone(),
                Some(p) => unpack::chain_id(p, diff_id),
            };
            lease.hold(&Resource::Snapshot {
                snapshotter: self.snapshotter.driver().to_string(),
                key: chain.to_string(),
            });
            let committed = self
                .snapshotter
                .stat(chain.as_str())
                .is_ok_and(|i| i.kind == crate::snapshots::Kind::Committed);
            if committed {
                job.item(
                    layer.digest.as_str(),
                    "layer",
                    "already exists",
                    layer.size,
                    layer.size,
                );
            } else {
                job.item(layer.digest.as_str(), "layer", "extracting", 0, layer.size);
                let blob = self.store.reader(&layer.digest)?;
                unpack::unpack_layer(&*self.snapshotter, parent.as_ref(), &layer, diff_id, blob)
                    .map_err(|source| Error::Unpack {
                        image: name.to_string(),
                        source,
                    })?;
                job.item(
                    layer.digest.as_str(),
                    "layer",
                    "pull complete",
                    layer.size,
                    layer.size,
                );
            }
            parent = Some(chain);
        }
        Ok(())
    }

    /// The diff ids of the config being pulled, once it is in the store.
    fn wait_config(
        &self,
        name: &str,
        config: &Mutex<Option<Descriptor>>,
        pull_ended: &AtomicBool,
    ) -> Result<Vec<crate::oci::Digest>> {
        loop {
            let ended = pull_ended.load(Ordering::SeqCst);
            let d = config.lock().expect("config slot").clone();
            if let Some(d) = d {
                if self.store.info(&d.digest).is_ok() {
                    let c: crate::oci::ImageConfig = self.read_json(name, &d.digest)?;
                    return Ok(c.rootfs.diff_ids);
                }
            }
            // Checked before the store was: a pull that ended without the config failed.
            if ended {
                return Err(Error::Incomplete {
                    image: name.to_string(),
                    what: "the image config (never arrived)".to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Records `name` → `target` once everything it needs is in the store; returns the
    /// record it replaced.
    fn record(
        &self,
        ns: &str,
        name: &str,
        target: &Descriptor,
    ) -> Result<Option<crate::metadata::ImageRecord>> {
        let _g = self.gc_lock.lock().expect("gc lock");
        let r = self.resolve(name, target)?;
        for l in &r.manifest.layers {
            self.store.info(&l.digest).map_err(|_| Error::Incomplete {
                image: name.to_string(),
                what: format!("layer {}", l.digest),
            })?;
        }
        let old = self.db.get_image(ns, name).ok();
        self.create_locked(ns, name, target.clone(), BTreeMap::new())?;
        Ok(old)
    }

    fn pull(&self, job: &Job, a: PullArgs) -> Result<()> {
        let ns = namespace(&a.namespace).to_string();
        let r = Reference::parse(&a.reference)?;
        let name = r.to_string();
        let short_repo = {
            let mut f = r.clone();
            f.tag = None;
            f.digest = None;
            f.familiar()
        };
        job.message(format!("{}: Pulling from {short_repo}", r.object()));
        let lease = LeaseGuard::new(self, &ns, &job.id)?;
        let platform = match &a.platform {
            Some(p) => registry::parse_platform(p)?,
            None => self.platform.clone(),
        };
        // Layers are unpacked while later ones download: the pull hands each layer, in order,
        // to this thread as soon as it and the ones before it are in the store.
        let (tx, rx) = mpsc::channel::<Descriptor>();
        let config: Mutex<Option<Descriptor>> = Mutex::new(None);
        let failed = AtomicBool::new(false);
        let pull_ended = AtomicBool::new(false);
        let on_layer: Option<registry::LayerHandler> = (!a.no_unpack).then(|| {
            let tx = Mutex::new(tx);
            Arc::new(move |_: usize, d: &Descriptor| {
                tx.lock()
                    .expect("unpack channel")
                    .send(d.clone())
                    .map_err(|_| "the unpacker stopped".to_string())
            }) as registry::LayerHandler
        });
        let opts = registry::PullOptions {
            platform,
            insecure: self.insecure.clone(),
            certs_dirs: self.certs_dirs.clone(),
            credentials: a.credentials.clone(),
            parallel: 4,
            on_layer,
        };
        let progress = |p: registry::Progress| {
            if p.state == ProgressState::Waiting {
                lease.hold(&Resource::Content(p.digest.clone()));
                if kind_of(&p.media_type) == "config" {
                    *config.lock().expect("config slot") = Some(Descriptor {
                        media_type: p.media_type.clone(),
                        digest: p.digest.clone(),
                        size: p.total,
                        urls: None,
                        annotations: None,
                        platform: None,
                    });
                }
            }
            job.item(
                p.digest.as_str(),
                kind_of(&p.media_type),
                state_name(p.state, false),
                p.current,
                p.total,
            );
        };
        let (pulled, streamed) = std::thread::scope(|sc| {
            let unpacker = sc.spawn(|| {
                let r = self.unpack_stream(job, &lease, &name, &config, &pull_ended, rx);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                r
            });
            let pulled = registry::pull(&*self.store, &name, &opts, &progress);
            pull_ended.store(true, Ordering::SeqCst);
            // Closes the channel: the unpacker ends after the last layer.
            drop(opts);
            let streamed = unpacker.join().expect("unpack thread");
            (pulled, streamed)
        });
        // An unpack failure stops the pull with a vaguer error: report the unpack's own.
        if failed.load(Ordering::SeqCst) {
            streamed?;
        }
        let pulled = pulled?;
        if job.cancelled() {
            return Err(Error::Cancelled);
        }
        if !a.no_unpack {
            // Everything is normally unpacked by now; this commits whatever was not (and
            // checks the chain) without extracting anything twice.
            self.unpack(job, &lease, &name, &pulled.target, false)?;
        }
        lease.check()?;
        let old = self.record(&ns, &name, &pulled.target)?;
        job.message(format!("Digest: {}", pulled.target.digest));
        let familiar = r.familiar();
        if old.is_some_and(|o| o.target.digest == pulled.target.digest) {
            job.message(format!("Status: Image is up to date for {familiar}"));
        } else {
            job.message(format!("Status: Downloaded newer image for {familiar}"));
        }
        job.result(name);
        job.result(pulled.target.digest.to_string());
        Ok(())
    }

    fn push(&self, job: &Job, a: PushArgs) -> Result<()> {
        let ns = namespace(&a.namespace).to_string();
        let r = Reference::parse(&a.reference)?;
        let name = r.to_string();
        let rec = self.db.get_image(&ns, &name)?;
        let mut repo = r.clone();
        repo.tag = None;
        repo.digest = None;
        job.message(format!("The push refers to repository [{}]", repo.name()));
        let opts = registry::PushOptions {
            platform: self.platform.clone(),
            insecure: self.insecure.clone(),
            certs_dirs: self.certs_dirs.clone(),
            credentials: a.credentials.clone(),
            ..Default::default()
        };
        let progress = |p: registry::Progress| {
            job.item(
                p.digest.as_str(),
                kind_of(&p.media_type),
                state_name(p.state, true),
                p.current,
                p.total,
            );
        };
        registry::push(&*self.store, &rec.target, &name, &opts, &progress)?;
        // What the tag now points at: the target, or its platform manifest when the index was
        // not complete (registry::push does the same).
        let is_index =
            rec.target.media_type.contains("index") || rec.target.media_type.contains("list");
        let complete = crate::gc::children(&*self.store, &rec.target)
            .iter()
            .all(|k| self.store.info(&k.digest).is_ok());
        let pushed = if is_index && !complete {
            self.resolve(&name, &rec.target)?.manifest_desc
        } else {
            rec.target.clone()
        };
        job.message(format!(
            "{}: digest: {} size: {}",
            r.object(),
            pushed.digest,
            pushed.size
        ));
        job.result(pushed.digest.to_string());
        Ok(())
    }

    fn import(&self, job: &Job, a: ImportArgs) -> Result<()> {
        let ns = namespace(&a.namespace).to_string();
        let lease = LeaseGuard::new(self, &ns, &job.id)?;
        let file = std::fs::File::open(&a.path).map_err(|source| Error::File {
            path: a.path.clone(),
            source,
        })?;
        let progress = |p: crate::archive::Progress| {
            job.item(&p.entry, "file", "loading", p.bytes, 0);
        };
        let images = crate::archive::import(&*self.store, file, &progress).map_err(|source| {
            Error::Load {
                path: a.path.clone(),
                source,
            }
        })?;
        if images.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: the archive holds no image",
                a.path
            )));
        }
        for img in images {
            for m in crate::gc::children(&*self.store, &img.target) {
                lease.hold(&Resource::Content(m.digest));
            }
            let name = match &img.name {
                Some(n) => Reference::parse(n)?.to_string(),
                None => img.target.digest.to_string(),
            };
            if !a.no_unpack {
                self.unpack(job, &lease, &name, &img.target, true)?;
            }
            lease.check()?;
            self.record(&ns, &name, &img.target)?;
            match &img.name {
                Some(_) => {
                    let fam = Reference::parse(&name)
                        .map(|r| r.familiar())
                        .unwrap_or(name.clone());
                    job.message(format!("Loaded image: {fam}"));
                }
                None => {
                    let id = self
                        .resolve(&name, &img.target)
                        .map(|r| r.manifest.config.digest.to_string())
                        .unwrap_or(name.clone());
                    job.message(format!("Loaded image ID: {id}"));
                }
            }
            job.result(name);
        }
        Ok(())
    }

    fn export(&self, job: &Job, a: ExportArgs) -> Result<()> {
        let ns = namespace(&a.namespace).to_string();
        let mut images: Vec<(String, Descriptor)> = Vec::new();
        for r in &a.references {
            for s in self.find(&ns, r)? {
                if !images.iter().any(|(n, _)| *n == s.record.name) {
                    images.push((s.record.name.clone(), s.record.target.clone()));
                }
            }
        }
        // Open for writing without truncating first: the path may be a FIFO the client reads.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&a.path)
            .map_err(|source| Error::File {
                path: a.path.clone(),
                source,
            })?;
        let format = if a.oci {
            crate::archive::Format::OciLayout
        } else {
            crate::archive::Format::DockerArchive
        };
        for (_, t) in &images {
            job.item(t.digest.as_str(), "image", "exporting", 0, 0);
        }
        crate::archive::export(
            &*self.store,
            &images,
            std::io::BufWriter::with_capacity(1 << 20, file),
            format,
        )?;
        for (n, t) in &images {
            job.item(t.digest.as_str(), "image", "done", 0, 0);
            job.result(n.clone());
        }
        Ok(())
    }
}
