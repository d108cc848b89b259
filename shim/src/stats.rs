//! Task metrics: the runtime's `events --stats` JSON (runc's format) turned into the cgroup v1
//! `Metrics` message containerd 1.6 expects from a Linux shim on a cgroup v1 host.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use serde_json::Value;

/// The type URL containerd's typeurl gives cgroup v1 metrics.
const METRICS_V1: &str = "io.containerd.cgroups.v1.Metrics";

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

fn entry(v: &Value, key: &str) -> Option<MemoryEntry> {
    let e = v.get(key)?;
    let mut m = MemoryEntry::new();
    m.usage = u(e, &["usage"]);
    m.max = u(e, &["max"]);
    m.limit = u(e, &["limit"]);
    m.failcnt = u(e, &["failcnt"]);
    Some(m)
}

/// Convert one `{"type":"stats","data":{...}}` document.
pub fn metrics_from_runtime(doc: &Value) -> Metrics {
    let data = doc.get("data").unwrap_or(doc);
    let mut m = Metrics::new();

    let mut pids = PidsStat::new();
    pids.current = u(data, &["pids", "current"]);
    pids.limit = u(data, &["pids", "limit"]);
    m.pids = Some(pids).into();

    let mut usage = CPUUsage::new();
    usage.total = u(data, &["cpu", "usage", "total"]);
    usage.kernel = u(data, &["cpu", "usage", "kernel"]);
    usage.user = u(data, &["cpu", "usage", "user"]);
    usage.per_cpu = data
        .pointer("/cpu/usage/percpu")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut throttling = Throttle::new();
    throttling.periods = u(data, &["cpu", "throttling", "periods"]);
    throttling.throttled_periods = u(data, &["cpu", "throttling", "throttled_periods"]);
    throttling.throttled_time = u(data, &["cpu", "throttling", "throttled_time"]);
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttling).into();
    m.cpu = Some(cpu).into();

    if let Some(mem) = data.get("memory") {
        let raw = mem.get("raw").cloned().unwrap_or(Value::Null);
        let r = |k: &str| u(&raw, &[k]);
        let mut s = MemoryStat::new();
        s.cache = r("cache");
        s.rss = r("rss");
        s.rss_huge = r("rss_huge");
        s.mapped_file = r("mapped_file");
        s.dirty = r("dirty");
        s.writeback = r("writeback");
        s.pg_pg_in = r("pgpgin");
        s.pg_pg_out = r("pgpgout");
        s.pg_fault = r("pgfault");
        s.pg_maj_fault = r("pgmajfault");
        s.inactive_anon = r("inactive_anon");
        s.active_anon = r("active_anon");
        s.inactive_file = r("inactive_file");
        s.active_file = r("active_file");
        s.unevictable = r("unevictable");
        s.hierarchical_memory_limit = r("hierarchical_memory_limit");
        s.hierarchical_swap_limit = r("hierarchical_memsw_limit");
        s.total_cache = r("total_cache");
        s.total_rss = r("total_rss");
        s.total_rss_huge = r("total_rss_huge");
        s.total_mapped_file = r("total_mapped_file");
        s.total_dirty = r("total_dirty");
        s.total_writeback = r("total_writeback");
        s.total_pg_pg_in = r("total_pgpgin");
        s.total_pg_pg_out = r("total_pgpgout");
        s.total_pg_fault = r("total_pgfault");
        s.total_pg_maj_fault = r("total_pgmajfault");
        s.total_inactive_anon = r("total_inactive_anon");
        s.total_active_anon = r("total_active_anon");
        s.total_inactive_file = r("total_inactive_file");
        s.total_active_file = r("total_active_file");
        s.total_unevictable = r("total_unevictable");
        s.usage = entry(mem, "usage").into();
        s.swap = entry(mem, "swap").into();
        s.kernel = entry(mem, "kernel").into();
        s.kernel_tcp = entry(mem, "kernelTCP").into();
        m.memory = Some(s).into();
    }

    if let Some(h) = data.get("hugetlb").and_then(Value::as_object) {
        let mut sizes: Vec<_> = h.iter().collect();
        sizes.sort_by(|a, b| a.0.cmp(b.0));
        for (size, v) in sizes {
            let mut s = HugetlbStat::new();
            s.pagesize = size.clone();
            s.usage = u(v, &["usage"]);
            s.max = u(v, &["max"]);
            s.failcnt = u(v, &["failcnt"]);
            m.hugetlb.push(s);
        }
    }
    m
}

/// The metrics as the `Any` a StatsResponse carries.
pub fn to_any(m: &Metrics) -> Any {
    let mut any = Any::new();
    any.type_url = METRICS_V1.to_string();
    any.value = m.write_to_bytes().unwrap_or_default();
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_runc_stats() {
        let doc: Value = serde_json::from_str(
            r#"{"type":"stats","id":"m1","data":{
                "cpu":{"usage":{"total":3727602,"percpu":[3727602,0],"kernel":5,"user":7},"throttling":{}},
                "memory":{"usage":{"usage":245760,"max":262144,"limit":9223372036854771712,"failcnt":0},
                          "raw":{"rss":53248,"total_rss":53248,"pgfault":64}},
                "hugetlb":{"2MB":{"failcnt":1},"1GB":{"failcnt":0}},
                "pids":{"current":1}}}"#,
        )
        .unwrap();
        let m = metrics_from_runtime(&doc);
        assert_eq!(m.pids.current, 1);
        assert_eq!(m.cpu.usage.total, 3727602);
        assert_eq!(m.cpu.usage.per_cpu, vec![3727602, 0]);
        assert_eq!(m.memory.usage.usage, 245760);
        assert_eq!(m.memory.rss, 53248);
        assert_eq!(m.memory.pg_fault, 64);
        assert_eq!(m.hugetlb.len(), 2);
        assert_eq!(m.hugetlb[0].pagesize, "1GB");
        assert_eq!(m.hugetlb[1].failcnt, 1);
        let any = to_any(&m);
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(
            Metrics::parse_from_bytes(&any.value).unwrap().pids.current,
            1
        );
    }
}
