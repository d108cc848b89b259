//! Task metrics in containerd's types: on a cgroup v1 host the runtime's `events --stats` JSON
//! (runc's format) becomes `io.containerd.cgroups.v1.Metrics`; on cgroup v2 the shim reads the
//! container's cgroup files itself into `io.containerd.cgroups.v2.Metrics`, as containerd's runc
//! shim does.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use serde_json::Value;
use std::path::Path;

use containerd_shim_protos::cgroups_v2::metrics as v2;

/// The type URL containerd's typeurl gives cgroup v1 metrics.
const METRICS_V1: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL containerd's typeurl gives cgroup v2 metrics.
const METRICS_V2: &str = "io.containerd.cgroups.v2.Metrics";

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

/// `key value` lines (cpu.stat, memory.stat, memory.events) as a lookup.
fn flat_keyed(text: &str) -> impl Fn(&str) -> u64 + '_ {
    move |key: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    }
}

/// One-value files: a number, or `max` (no limit) as u64::MAX; 0 when absent.
fn single(dir: &Path, file: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    match text.trim() {
        "max" => u64::MAX,
        t => t.parse().unwrap_or(0),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// cgroup v2 metrics of the cgroup directory `dir` (files that do not exist count as zero:
/// a controller may not be enabled for the container).
pub fn metrics_v2(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();

    let mut pids = v2::PidsStat::new();
    pids.current = single(dir, "pids.current");
    pids.limit = single(dir, "pids.max");
    m.pids = Some(pids).into();

    let cpu_text = read(dir, "cpu.stat");
    let c = flat_keyed(&cpu_text);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = c("usage_usec");
    cpu.user_usec = c("user_usec");
    cpu.system_usec = c("system_usec");
    cpu.nr_periods = c("nr_periods");
    cpu.nr_throttled = c("nr_throttled");
    cpu.throttled_usec = c("throttled_usec");
    cpu.nr_bursts = c("nr_bursts");
    cpu.burst_usec = c("burst_usec");
    m.cpu = Some(cpu).into();

    let mem_text = read(dir, "memory.stat");
    let r = flat_keyed(&mem_text);
    let mut mem = v2::MemoryStat::new();
    mem.anon = r("anon");
    mem.file = r("file");
    mem.kernel_stack = r("kernel_stack");
    mem.slab = r("slab");
    mem.sock = r("sock");
    mem.shmem = r("shmem");
    mem.file_mapped = r("file_mapped");
    mem.file_dirty = r("file_dirty");
    mem.file_writeback = r("file_writeback");
    mem.anon_thp = r("anon_thp");
    mem.inactive_anon = r("inactive_anon");
    mem.active_anon = r("active_anon");
    mem.inactive_file = r("inactive_file");
    mem.active_file = r("active_file");
    mem.unevictable = r("unevictable");
    mem.slab_reclaimable = r("slab_reclaimable");
    mem.slab_unreclaimable = r("slab_unreclaimable");
    mem.pgfault = r("pgfault");
    mem.pgmajfault = r("pgmajfault");
    mem.workingset_refault =
        r("workingset_refault_anon") + r("workingset_refault_file") + r("workingset_refault");
    mem.workingset_activate =
        r("workingset_activate_anon") + r("workingset_activate_file") + r("workingset_activate");
    mem.workingset_nodereclaim = r("workingset_nodereclaim");
    mem.pgrefill = r("pgrefill");
    mem.pgscan = r("pgscan");
    mem.pgsteal = r("pgsteal");
    mem.pgactivate = r("pgactivate");
    mem.pgdeactivate = r("pgdeactivate");
    mem.pglazyfree = r("pglazyfree");
    mem.pglazyfreed = r("pglazyfreed");
    mem.thp_fault_alloc = r("thp_fault_alloc");
    mem.thp_collapse_alloc = r("thp_collapse_alloc");
    mem.usage = single(dir, "memory.current");
    mem.usage_limit = single(dir, "memory.max");
    mem.max_usage = single(dir, "memory.peak");
    mem.swap_usage = single(dir, "memory.swap.current");
    mem.swap_limit = single(dir, "memory.swap.max");
    mem.swap_max_usage = single(dir, "memory.swap.peak");
    m.memory = Some(mem).into();

    let ev_text = read(dir, "memory.events");
    let e = flat_keyed(&ev_text);
    let mut events = v2::MemoryEvents::new();
    events.low = e("low");
    events.high = e("high");
    events.max = e("max");
    events.oom = e("oom");
    events.oom_kill = e("oom_kill");
    events.oom_group_kill = e("oom_group_kill");
    m.memory_events = Some(events).into();

    let mut io = v2::IOStat::new();
    for line in read(dir, "io.stat").lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let mut entry = v2::IOEntry::new();
        entry.major = major.parse().unwrap_or(0);
        entry.minor = minor.parse().unwrap_or(0);
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => entry.rbytes = v,
                "wbytes" => entry.wbytes = v,
                "rios" => entry.rios = v,
                "wios" => entry.wios = v,
                _ => {}
            }
        }
        io.usage.push(entry);
    }
    m.io = Some(io).into();
    m
}

/// cgroup v2 metrics as the `Any` a StatsResponse carries.
pub fn v2_any(m: &v2::Metrics) -> Any {
    let mut any = Any::new();
    any.type_url = METRICS_V2.to_string();
    any.value = m.write_to_bytes().unwrap_or_default();
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for a v2 cgroup.
    #[test]
    fn reads_v2_cgroup_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (f, text) in [
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_throttled 2\n"),
            ("memory.current", "4096000\n"),
            ("memory.max", "67108864\n"),
            ("memory.stat", "anon 1024\nfile 2048\npgfault 77\nworkingset_refault_anon 1\nworkingset_refault_file 2\n"),
            ("memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n"),
            ("io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"),
        ] {
            std::fs::write(d.join(f), text).unwrap();
        }
        let m = metrics_v2(d);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, u64::MAX);
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.cpu.nr_throttled, 2);
        assert_eq!(m.memory.usage, 4096000);
        assert_eq!(m.memory.usage_limit, 67108864);
        assert_eq!(m.memory.anon, 1024);
        assert_eq!(m.memory.pgfault, 77);
        assert_eq!(m.memory.workingset_refault, 3);
        assert_eq!(m.memory.swap_usage, 0);
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!((m.io.usage[0].major, m.io.usage[0].wbytes), (8, 8192));
        let any = v2_any(&m);
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(
            v2::Metrics::parse_from_bytes(&any.value)
                .unwrap()
                .pids
                .current,
            3
        );
    }

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
