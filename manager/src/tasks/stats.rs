//! A task's cgroup figures as the shim reports them (`io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`), reduced to what `kapsel stats` shows.

use containerd_shim_protos::cgroups::metrics::Metrics as V1;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as V2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time of every process of the task, in nanoseconds.
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Memory charged to the cgroup, in bytes.
    pub memory_usage: u64,
    /// The cgroup's memory limit (a huge number when unlimited).
    pub memory_limit: u64,
    /// Inactive page cache, which `docker stats` leaves out of the usage it shows.
    pub memory_inactive_file: u64,
    pub pids_current: u64,
    /// 0 when unlimited.
    pub pids_limit: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
}

impl Stats {
    pub fn decode(any: &Any) -> Result<Stats, String> {
        let kind = any.type_url.rsplit('/').next().unwrap_or_default();
        match kind {
            "io.containerd.cgroups.v1.Metrics" => {
                let m = V1::parse_from_bytes(&any.value).map_err(|e| e.to_string())?;
                Ok(Stats::from_v1(&m))
            }
            "io.containerd.cgroups.v2.Metrics" => {
                let m = V2::parse_from_bytes(&any.value).map_err(|e| e.to_string())?;
                Ok(Stats::from_v2(&m))
            }
            other => Err(format!("metrics of type {other:?} are not known")),
        }
    }

    fn from_v1(m: &V1) -> Stats {
        let mut s = Stats::default();
        if let Some(cpu) = m.cpu.as_ref().and_then(|c| c.usage.as_ref()) {
            s.cpu_total_ns = cpu.total;
            s.cpu_user_ns = cpu.user;
            s.cpu_system_ns = cpu.kernel;
        }
        if let Some(mem) = m.memory.as_ref() {
            if let Some(u) = mem.usage.as_ref() {
                s.memory_usage = u.usage;
                s.memory_limit = u.limit;
            }
            s.memory_inactive_file = mem.total_inactive_file;
        }
        if let Some(p) = m.pids.as_ref() {
            s.pids_current = p.current;
            s.pids_limit = p.limit;
        }
        if let Some(b) = m.blkio.as_ref() {
            for e in &b.io_service_bytes_recursive {
                match e.op.to_ascii_lowercase().as_str() {
                    "read" => s.block_read_bytes += e.value,
                    "write" => s.block_write_bytes += e.value,
                    _ => {}
                }
            }
        }
        s
    }

    fn from_v2(m: &V2) -> Stats {
        let mut s = Stats::default();
        if let Some(cpu) = m.cpu.as_ref() {
            s.cpu_total_ns = cpu.usage_usec * 1000;
            s.cpu_user_ns = cpu.user_usec * 1000;
            s.cpu_system_ns = cpu.system_usec * 1000;
        }
        if let Some(mem) = m.memory.as_ref() {
            s.memory_usage = mem.usage;
            s.memory_limit = mem.usage_limit;
            s.memory_inactive_file = mem.inactive_file;
        }
        if let Some(p) = m.pids.as_ref() {
            s.pids_current = p.current;
            s.pids_limit = p.limit;
        }
        if let Some(io) = m.io.as_ref() {
            for e in &io.usage {
                s.block_read_bytes += e.rbytes;
                s.block_write_bytes += e.wbytes;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_metrics_are_reduced() {
        let mut m = V2::new();
        let mut cpu = containerd_shim_protos::cgroups_v2::metrics::CPUStat::new();
        cpu.usage_usec = 1500;
        m.cpu = Some(cpu).into();
        let mut mem = containerd_shim_protos::cgroups_v2::metrics::MemoryStat::new();
        mem.usage = 4096;
        mem.usage_limit = 1 << 20;
        m.memory = Some(mem).into();
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v2.Metrics".into();
        any.value = m.write_to_bytes().unwrap();
        let s = Stats::decode(&any).unwrap();
        assert_eq!(s.cpu_total_ns, 1_500_000);
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 1 << 20));
        any.type_url = "something.Else".into();
        assert!(Stats::decode(&any).is_err());
    }
}
