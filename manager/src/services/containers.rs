use std::sync::Arc;
use std::time::Duration;

use kapsel_proto::containers as pb;
use kapsel_proto::ttrpc::{self, TtrpcContext};

use super::{invalid, status, timestamp};
use crate::containers::{self, Containers as Svc, ExecOptions, LogsRequest};

pub(super) struct Containers(pub Arc<Svc>);

fn err(e: containers::Error) -> ttrpc::Error {
    status(e.code(), e)
}

fn empty() -> ttrpc::Result<pb::Empty> {
    Ok(pb::Empty::default())
}

fn positive(n: i64) -> Option<i64> {
    (n > 0).then_some(n)
}

impl kapsel_proto::containers_ttrpc::Containers for Containers {
    fn create(&self, _: &TtrpcContext, r: pb::CreateRequest) -> ttrpc::Result<pb::CreateResponse> {
        let opts: containers::RunOptions = serde_json::from_slice(&r.options).map_err(|e| {
            invalid(format!(
                "create: options are not valid RunOptions JSON: {e}"
            ))
        })?;
        let (id, name, warnings) = self.0.create(&r.namespace, opts).map_err(err)?;
        Ok(pb::CreateResponse {
            id,
            name,
            warnings,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, r: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        self.0.start(&r.namespace, &r.container).map_err(err)?;
        empty()
    }

    fn stop(&self, _: &TtrpcContext, r: pb::StopRequest) -> ttrpc::Result<pb::Empty> {
        let t = (r.timeout >= 0).then_some(i64::from(r.timeout));
        self.0.stop(&r.namespace, &r.container, t).map_err(err)?;
        empty()
    }

    fn restart(&self, _: &TtrpcContext, r: pb::StopRequest) -> ttrpc::Result<pb::Empty> {
        let t = (r.timeout >= 0).then_some(i64::from(r.timeout));
        self.0.restart(&r.namespace, &r.container, t).map_err(err)?;
        empty()
    }

    fn kill(&self, _: &TtrpcContext, r: pb::KillRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .kill(&r.namespace, &r.container, &r.signal)
            .map_err(err)?;
        empty()
    }

    fn remove(&self, _: &TtrpcContext, r: pb::RemoveRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .remove(&r.namespace, &r.container, r.force, r.volumes)
            .map_err(err)?;
        empty()
    }

    fn list(&self, _: &TtrpcContext, r: pb::ListRequest) -> ttrpc::Result<pb::ListResponse> {
        let list = self.0.list(&r.namespace, r.all, &r.filters).map_err(err)?;
        Ok(pb::ListResponse {
            containers: list
                .into_iter()
                .map(|s| {
                    let c = s.record;
                    pb::ContainerSummary {
                        id: c.id,
                        name: c.name,
                        image: c.image,
                        image_id: c.image_id,
                        command: s.command,
                        created_at: Some(timestamp(c.created_at)).into(),
                        state: c.state.status.as_str().to_string(),
                        status: s.status_text,
                        labels: c.labels.into_iter().collect(),
                        exit_code: c.state.exit_code,
                        pid: i64::from(c.state.pid),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
    }

    fn inspect(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::JsonResponse> {
        let v = self.0.inspect(&r.namespace, &r.container).map_err(err)?;
        Ok(pb::JsonResponse {
            json: v.to_string(),
            ..Default::default()
        })
    }

    fn wait(&self, _: &TtrpcContext, r: pb::WaitRequest) -> ttrpc::Result<pb::WaitResponse> {
        let w = self
            .0
            .wait(
                &r.namespace,
                &r.container,
                &r.exec_id,
                Duration::from_millis(u64::from(r.wait_ms)),
            )
            .map_err(err)?;
        Ok(pb::WaitResponse {
            exited: w.exited,
            exit_code: w.exit_code,
            error: w.error,
            restarting: w.restarting,
            ..Default::default()
        })
    }

    fn exec(&self, _: &TtrpcContext, r: pb::ExecRequest) -> ttrpc::Result<pb::ExecResponse> {
        let (exec_id, stdin, stdout, stderr) = self
            .0
            .exec(
                &r.namespace,
                &r.container,
                ExecOptions {
                    args: r.args,
                    env: r.env,
                    user: r.user,
                    workdir: r.workdir,
                    tty: r.tty,
                    stdin: r.stdin,
                    privileged: r.privileged,
                },
            )
            .map_err(err)?;
        Ok(pb::ExecResponse {
            exec_id,
            stdin,
            stdout,
            stderr,
            ..Default::default()
        })
    }

    fn exec_start(&self, _: &TtrpcContext, r: pb::ExecStartRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .exec_start(&r.namespace, &r.container, &r.exec_id)
            .map_err(err)?;
        empty()
    }

    fn resize_pty(&self, _: &TtrpcContext, r: pb::ResizePtyRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .resize_pty(&r.namespace, &r.container, &r.exec_id, r.width, r.height)
            .map_err(err)?;
        empty()
    }

    fn close_stdin(&self, _: &TtrpcContext, r: pb::CloseStdinRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .close_stdin(&r.namespace, &r.container, &r.exec_id)
            .map_err(err)?;
        empty()
    }

    fn logs(&self, _: &TtrpcContext, r: pb::LogsRequest) -> ttrpc::Result<pb::LogsResponse> {
        let both = !r.stdout && !r.stderr;
        let out = self
            .0
            .logs(
                &r.namespace,
                &r.container,
                LogsRequest {
                    cursor: r.cursor,
                    follow: r.follow,
                    tail: (r.tail >= 0).then_some(r.tail as usize),
                    since: positive(r.since),
                    until: positive(r.until),
                    stdout: r.stdout || both,
                    stderr: r.stderr || both,
                    wait: Duration::from_millis(u64::from(r.wait_ms)),
                },
            )
            .map_err(err)?;
        Ok(pb::LogsResponse {
            entries: out
                .entries
                .into_iter()
                .map(|(stream, time, line)| pb::LogEntry {
                    stream,
                    time,
                    line,
                    ..Default::default()
                })
                .collect(),
            cursor: out.cursor,
            done: out.done,
            ..Default::default()
        })
    }

    fn attach(
        &self,
        _: &TtrpcContext,
        r: pb::ContainerRequest,
    ) -> ttrpc::Result<pb::AttachResponse> {
        let (stdin, tty) = self.0.attach(&r.namespace, &r.container).map_err(err)?;
        Ok(pb::AttachResponse {
            stdin,
            tty,
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, r: pb::ContainerRequest) -> ttrpc::Result<pb::JsonResponse> {
        let v = self.0.stats(&r.namespace, &r.container).map_err(err)?;
        Ok(pb::JsonResponse {
            json: v.to_string(),
            ..Default::default()
        })
    }

    fn top(&self, _: &TtrpcContext, r: pb::TopRequest) -> ttrpc::Result<pb::TopResponse> {
        let (titles, rows) = self
            .0
            .top(&r.namespace, &r.container, &r.ps_args)
            .map_err(err)?;
        Ok(pb::TopResponse {
            titles,
            processes: rows
                .into_iter()
                .map(|cells| pb::TopRow {
                    cells,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, r: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        self.0.pause(&r.namespace, &r.container).map_err(err)?;
        empty()
    }

    fn unpause(&self, _: &TtrpcContext, r: pb::ContainerRequest) -> ttrpc::Result<pb::Empty> {
        self.0.unpause(&r.namespace, &r.container).map_err(err)?;
        empty()
    }

    fn rename(&self, _: &TtrpcContext, r: pb::RenameRequest) -> ttrpc::Result<pb::Empty> {
        self.0
            .rename(&r.namespace, &r.container, &r.new_name)
            .map_err(err)?;
        empty()
    }

    fn update(&self, _: &TtrpcContext, r: pb::UpdateRequest) -> ttrpc::Result<pb::Empty> {
        let v: serde_json::Value = serde_json::from_slice(&r.update)
            .map_err(|e| invalid(format!("update: not valid JSON: {e}")))?;
        self.0.update(&r.namespace, &r.container, v).map_err(err)?;
        empty()
    }

    fn prune(&self, _: &TtrpcContext, r: pb::PruneRequest) -> ttrpc::Result<pb::PruneResponse> {
        let deleted = self.0.prune(&r.namespace).map_err(err)?;
        Ok(pb::PruneResponse {
            deleted,
            ..Default::default()
        })
    }
}
