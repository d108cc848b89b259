use std::sync::Arc;
use std::time::Duration;

use kapsel_proto::transfer as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::{err, status};
use crate::images::transfer::{ExportArgs, ImportArgs, PullArgs, PushArgs};
use crate::images::{code, Service};
use crate::registry::Credentials;

pub(super) struct Transfer(pub Arc<Service>);

/// Longest a Progress call waits (the client's request timeout must be above it).
const MAX_WAIT: Duration = Duration::from_secs(10);

fn creds(a: Option<&pb::RegistryAuth>) -> Option<Credentials> {
    let a = a?;
    if a.username.is_empty() && a.password.is_empty() && a.identity_token.is_empty() {
        return None;
    }
    Some(Credentials {
        username: a.username.clone(),
        password: if a.identity_token.is_empty() {
            a.password.clone()
        } else {
            a.identity_token.clone()
        },
    })
}

fn job(id: &str) -> pb::JobResponse {
    pb::JobResponse {
        job: id.to_string(),
        ..Default::default()
    }
}

impl kapsel_proto::transfer_ttrpc::Transfer for Transfer {
    fn pull(&self, _: &TtrpcContext, req: pb::PullRequest) -> ttrpc::Result<pb::JobResponse> {
        let j = self
            .0
            .start_pull(PullArgs {
                namespace: req.namespace.clone(),
                reference: req.reference.clone(),
                platform: (!req.platform.is_empty()).then(|| req.platform.clone()),
                credentials: creds(req.auth.as_ref()),
                no_unpack: req.no_unpack,
            })
            .map_err(err)?;
        Ok(job(&j.id))
    }

    fn push(&self, _: &TtrpcContext, req: pb::PushRequest) -> ttrpc::Result<pb::JobResponse> {
        let j = self
            .0
            .start_push(PushArgs {
                namespace: req.namespace.clone(),
                reference: req.reference.clone(),
                credentials: creds(req.auth.as_ref()),
            })
            .map_err(err)?;
        Ok(job(&j.id))
    }

    fn import(&self, _: &TtrpcContext, req: pb::ImportRequest) -> ttrpc::Result<pb::JobResponse> {
        let j = self
            .0
            .start_import(ImportArgs {
                namespace: req.namespace.clone(),
                path: req.path.clone(),
                no_unpack: req.no_unpack,
            })
            .map_err(err)?;
        Ok(job(&j.id))
    }

    fn export(&self, _: &TtrpcContext, req: pb::ExportRequest) -> ttrpc::Result<pb::JobResponse> {
        let oci = match req.format.as_str() {
            "" | "docker" | "docker-archive" => false,
            "oci" | "oci-archive" => true,
            other => {
                return Err(status(
                    code::INVALID_ARGUMENT,
                    format!("unknown archive format {other:?}: use docker or oci"),
                ))
            }
        };
        let j = self
            .0
            .start_export(ExportArgs {
                namespace: req.namespace.clone(),
                references: req.references.clone(),
                path: req.path.clone(),
                oci,
            })
            .map_err(err)?;
        Ok(job(&j.id))
    }

    fn progress(
        &self,
        _: &TtrpcContext,
        req: pb::ProgressRequest,
    ) -> ttrpc::Result<pb::ProgressResponse> {
        let j = self
            .0
            .jobs
            .get(&req.job)
            .ok_or_else(|| status(code::NOT_FOUND, format!("job {:?} not found", req.job)))?;
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_WAIT);
        let s = j.wait(req.after_version, wait);
        Ok(pb::ProgressResponse {
            version: s.version,
            done: s.done,
            error: s.error.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
            error_code: s.error.as_ref().map_or(0, |e| e.0),
            items: s
                .items
                .iter()
                .map(|i| pb::ItemProgress {
                    id: i.id.clone(),
                    status: i.status.clone(),
                    offset: i.offset as i64,
                    total: i.total as i64,
                    kind: i.kind.clone(),
                    ..Default::default()
                })
                .collect(),
            messages: s.messages,
            results: s.results,
            ..Default::default()
        })
    }

    fn cancel(
        &self,
        _: &TtrpcContext,
        req: pb::CancelRequest,
    ) -> ttrpc::Result<pb::CancelResponse> {
        let j = self
            .0
            .jobs
            .get(&req.job)
            .ok_or_else(|| status(code::NOT_FOUND, format!("job {:?} not found", req.job)))?;
        j.cancel();
        Ok(pb::CancelResponse::default())
    }
}
