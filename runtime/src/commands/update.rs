//! `update`: change a running container's cgroup limits, from a LinuxResources JSON (`-r FILE`
//! or `-r -` for stdin) and/or individual flags; the stored config is updated to match.

use super::{Global, Result};
use crate::container::{Container, ContainerError, Status};
use crate::spec::{BlockIo, Cpu, LinuxResources, Memory, Pids};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpdateArgs {
    /// Path to a file with LinuxResources JSON, or "-" for stdin
    #[arg(short = 'r', long)]
    pub resources: Option<String>,
    /// Memory limit (bytes, or with k, m, g suffix)
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit)
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit; -1 for unlimited
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (ignored where the kernel no longer has it)
    #[arg(long)]
    pub kernel_memory: Option<String>,
    #[arg(long)]
    pub kernel_memory_tcp: Option<String>,
    /// CPU shares (relative weight)
    #[arg(long, alias = "cpu-share")]
    pub cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for none)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs allowed (e.g. 0-1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of pids (-1 or 0 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10 to 1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}

/// Parses "1024", "64k", "64m", "1g", "1.5g" (binary units, as docker/runc accept); -1 stays -1.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?}: use a number of bytes or k, m, g, t"))?;
    if v < 0.0 {
        anyhow::bail!("invalid size {s:?}: must not be negative");
    }
    Ok((v * mult as f64) as i64)
}

fn merge(base: &mut LinuxResources, a: &UpdateArgs) -> Result<()> {
    if let Some(m) = &a.memory {
        base.memory.get_or_insert_with(Memory::default).limit = Some(parse_bytes(m)?);
    }
    if let Some(m) = &a.memory_reservation {
        base.memory.get_or_insert_with(Memory::default).reservation = Some(parse_bytes(m)?);
    }
    if let Some(m) = &a.memory_swap {
        base.memory.get_or_insert_with(Memory::default).swap = Some(parse_bytes(m)?);
    }
    if let Some(m) = &a.kernel_memory {
        base.memory.get_or_insert_with(Memory::default).kernel = Some(parse_bytes(m)?);
    }
    if let Some(m) = &a.kernel_memory_tcp {
        base.memory.get_or_insert_with(Memory::default).kernel_tcp = Some(parse_bytes(m)?);
    }
    let cpu = base.cpu.get_or_insert_with(Cpu::default);
    if a.cpu_shares.is_some() {
        cpu.shares = a.cpu_shares;
    }
    if a.cpu_quota.is_some() {
        cpu.quota = a.cpu_quota;
    }
    if a.cpu_period.is_some() {
        cpu.period = a.cpu_period;
    }
    if a.cpu_rt_period.is_some() {
        cpu.realtime_period = a.cpu_rt_period;
    }
    if a.cpu_rt_runtime.is_some() {
        cpu.realtime_runtime = a.cpu_rt_runtime;
    }
    if a.cpuset_cpus.is_some() {
        cpu.cpus = a.cpuset_cpus.clone();
    }
    if a.cpuset_mems.is_some() {
        cpu.mems = a.cpuset_mems.clone();
    }
    if base.cpu.as_ref().is_some_and(|c| *c == Cpu::default()) {
        base.cpu = None;
    }
    if let Some(p) = a.pids_limit {
        base.pids = Some(Pids { limit: p });
    }
    if let Some(w) = a.blkio_weight {
        if !(10..=1000).contains(&w) {
            anyhow::bail!("--blkio-weight {w}: must be between 10 and 1000");
        }
        base.block_io.get_or_insert_with(BlockIo::default).weight = Some(w);
    }
    Ok(())
}

/// Overlays the fields set in `new` onto `base` (a JSON update changes only what it names).
fn overlay(base: &mut LinuxResources, new: LinuxResources) {
    fn merge_json(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge_json(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut a = serde_json::to_value(&*base).unwrap_or_default();
    merge_json(&mut a, serde_json::to_value(new).unwrap_or_default());
    if let Ok(r) = serde_json::from_value(a) {
        *base = r;
    }
}

pub fn run(g: &Global, id: &str, a: &UpdateArgs) -> Result<i32> {
    let mut c = Container::load(&g.root, id)?;
    let status = c.status();
    if status == Status::Stopped {
        return Err(ContainerError::WrongState {
            id: id.into(),
            status,
            op: "update it",
            hint: "",
        }
        .into());
    }
    let cg = c.state.cgroup.clone().ok_or_else(|| {
        anyhow::anyhow!("container {id:?} has no cgroup of its own: nothing to update")
    })?;
    let mut requested = LinuxResources::default();
    if let Some(src) = &a.resources {
        let data = if src == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(src).map_err(|e| anyhow::anyhow!("read {src}: {e}"))?
        };
        requested = serde_json::from_str(&data)
            .map_err(|e| anyhow::anyhow!("resources JSON from {src}: {e}"))?;
    }
    merge(&mut requested, a)?;
    cg.apply(&crate::syscall::linux::Linux, &requested, true)?;
    let linux = c.state.config.linux.get_or_insert_with(Default::default);
    let res = linux.resources.get_or_insert_with(Default::default);
    overlay(res, requested);
    c.save()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn flags_merge_into_resources() {
        let a = UpdateArgs {
            memory: Some("32m".into()),
            cpu_shares: Some(512),
            pids_limit: Some(10),
            ..Default::default()
        };
        let mut r = LinuxResources::default();
        merge(&mut r, &a).unwrap();
        assert_eq!(r.memory.unwrap().limit, Some(32 << 20));
        assert_eq!(r.cpu.unwrap().shares, Some(512));
        assert_eq!(r.pids.unwrap().limit, 10);
    }

    #[test]
    fn overlay_keeps_unnamed_fields() {
        let mut base: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":100,"swap":200},"pids":{"limit":5}}"#)
                .unwrap();
        let new: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":50}}"#).unwrap();
        overlay(&mut base, new);
        let m = base.memory.unwrap();
        assert_eq!((m.limit, m.swap), (Some(50), Some(200)));
        assert_eq!(base.pids.unwrap().limit, 5);
    }
}
