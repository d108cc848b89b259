//! Container statistics in the JSON shape of runc's `types.Stats`, the "data" of
//! `runc events --stats` (`{"type":"stats","id":...,"data":<Stats>}`), which containerd's shims
//! read. Field names, and which fields are left out when empty (Go's `omitempty`: zero numbers,
//! empty lists and maps, nil pointers; structs are never left out), follow runc's
//! types/events.go. Filled from the v1 or v2 control files; files that are missing are skipped.

use super::fs::{self, flat_keyed};
use super::{convert, CgroupError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Page size ("2MB", "1GB") -> usage.
    pub hugetlb: BTreeMap<String, Hugetlb>,
    pub intel_rdt: IntelRdt,
    /// Printed as `null` when unknown, as runc does for containers without veth statistics.
    pub network_interfaces: Option<Vec<NetworkInterface>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CpuSet {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    /// Memory+swap, as v1 counts it (v2's swap-only values have memory added back).
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as it is.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// 0 when unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Blkio {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioQueueRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(
        rename = "ioServiceTimeRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioWaitTimeRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioMergedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioTimeRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(rename = "sectorsRecursive", skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// The highest usage recorded.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Pressure stall information (v2's cpu/memory/io.pressure).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PsiStats {
    #[serde(skip_serializing_if = "PsiData::is_zero")]
    pub some: PsiData,
    #[serde(skip_serializing_if = "PsiData::is_zero")]
    pub full: PsiData,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PsiData {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total: u64,
}

impl PsiData {
    fn is_zero(&self) -> bool {
        *self == PsiData::default()
    }
}

/// Intel RDT (resctrl) statistics; the runtime does not manage resctrl, so this stays `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IntelRdt {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l3_cache_info: Option<L3CacheInfo>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema_root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub l3_cache_schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_bw_info: Option<MemBwInfo>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema_root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mem_bw_schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbm_stats: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmt_stats: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct L3CacheInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cbm_mask: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub min_cbm_bits: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub num_closids: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemBwInfo {
    #[serde(skip_serializing_if = "is_zero")]
    pub bandwidth_gran: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub delay_linear: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub min_bandwidth: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub num_closids: u64,
}

/// Go field names (no JSON tags in runc), hence PascalCase.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// USER_HZ, the unit of cpuacct.stat: 100 on every architecture Linux containers run on (the
/// kernel fixes it for the user ABI whatever HZ is); runc assumes the same.
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace().filter_map(fs::parse_u64).collect()
}

fn keyed(dir: &Path, file: &str) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(fs::read_optional(dir, file)?
        .map(|text| flat_keyed(&text).map(|(k, v)| (k.to_string(), v)).collect())
        .unwrap_or_default())
}

fn number(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    Ok(fs::read_u64_optional(dir, file)?.unwrap_or(0))
}

/// v1: each controller's statistics from its own hierarchy.
pub(super) fn collect_v1(paths: &BTreeMap<String, PathBuf>) -> Result<Stats, CgroupError> {
    let mut stats = Stats::default();
    if let Some(dir) = paths.get("cpuacct") {
        cpuacct(dir, &mut stats.cpu.usage)?;
    }
    if let Some(dir) = paths.get("cpu") {
        let cpu_stat = keyed(dir, "cpu.stat")?;
        let get = |k: &str| cpu_stat.get(k).copied().unwrap_or(0);
        stats.cpu.throttling = Throttling {
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_time: get("throttled_time"),
        };
    }
    if let Some(dir) = paths.get("cpuset") {
        stats.cpuset = cpuset(dir)?;
    }
    if let Some(dir) = paths.get("memory") {
        stats.memory = memory_v1(dir)?;
    }
    if let Some(dir) = paths.get("pids") {
        stats.pids = pids(dir)?;
    }
    if let Some(dir) = paths.get("blkio") {
        let pick = |recursive: &str, flat: &str| -> Result<Vec<BlkioEntry>, CgroupError> {
            let text = match fs::read_optional(dir, recursive)? {
                Some(text) => Some(text),
                None => fs::read_optional(dir, flat)?,
            };
            Ok(text.map(|t| blkio_v1_entries(&t)).unwrap_or_default())
        };
        stats.blkio.io_service_bytes_recursive = pick(
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        )?;
        stats.blkio.io_serviced_recursive = pick(
            "blkio.throttle.io_serviced_recursive",
            "blkio.throttle.io_serviced",
        )?;
    }
    if let Some(dir) = paths.get("hugetlb") {
        for size in hugetlb_sizes(dir, "usage_in_bytes")? {
            let file = |name: &str| format!("hugetlb.{size}.{name}");
            let entry = Hugetlb {
                usage: number(dir, &file("usage_in_bytes"))?,
                max: number(dir, &file("max_usage_in_bytes"))?,
                failcnt: number(dir, &file("failcnt"))?,
            };
            stats.hugetlb.insert(size, entry);
        }
    }
    Ok(stats)
}

fn cpuacct(dir: &Path, usage: &mut CpuUsage) -> Result<(), CgroupError> {
    usage.total = number(dir, "cpuacct.usage")?;
    let list = |file: &str| -> Result<Vec<u64>, CgroupError> {
        Ok(fs::read_optional(dir, file)?
            .map(|t| numbers(&t))
            .unwrap_or_default())
    };
    usage.percpu = list("cpuacct.usage_percpu")?;
    usage.percpu_user = list("cpuacct.usage_percpu_user")?;
    usage.percpu_kernel = list("cpuacct.usage_percpu_sys")?;
    let ticks = keyed(dir, "cpuacct.stat")?;
    usage.user = ticks.get("user").copied().unwrap_or(0) * NANOS_PER_TICK;
    usage.kernel = ticks.get("system").copied().unwrap_or(0) * NANOS_PER_TICK;
    Ok(())
}

fn cpuset(dir: &Path) -> Result<CpuSet, CgroupError> {
    let list = |file: &str| -> Result<Vec<u16>, CgroupError> {
        Ok(fs::read_optional(dir, file)?
            .and_then(|t| convert::parse_list(&t))
            .unwrap_or_default())
    };
    let relax = fs::read_optional(dir, "cpuset.sched_relax_domain_level")?
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok(CpuSet {
        cpus: list("cpuset.cpus")?,
        cpu_exclusive: number(dir, "cpuset.cpu_exclusive")?,
        mems: list("cpuset.mems")?,
        mem_hardwall: number(dir, "cpuset.mem_hardwall")?,
        mem_exclusive: number(dir, "cpuset.mem_exclusive")?,
        memory_migrate: number(dir, "cpuset.memory_migrate")?,
        memory_spread_page: number(dir, "cpuset.memory_spread_page")?,
        memory_spread_slab: number(dir, "cpuset.memory_spread_slab")?,
        memory_pressure: number(dir, "cpuset.memory_pressure")?,
        sched_load_balance: number(dir, "cpuset.sched_load_balance")?,
        sched_relax_domain_level: relax,
    })
}

fn memory_v1(dir: &Path) -> Result<Memory, CgroupError> {
    let entry = |prefix: &str| -> Result<MemoryEntry, CgroupError> {
        Ok(MemoryEntry {
            limit: number(dir, &format!("{prefix}.limit_in_bytes"))?,
            usage: number(dir, &format!("{prefix}.usage_in_bytes"))?,
            max: number(dir, &format!("{prefix}.max_usage_in_bytes"))?,
            failcnt: number(dir, &format!("{prefix}.failcnt"))?,
        })
    };
    let raw = keyed(dir, "memory.stat")?;
    Ok(Memory {
        cache: raw.get("cache").copied().unwrap_or(0),
        usage: entry("memory")?,
        swap: entry("memory.memsw")?,
        kernel: entry("memory.kmem")?,
        kernel_tcp: entry("memory.kmem.tcp")?,
        raw,
        psi: None,
    })
}

fn pids(dir: &Path) -> Result<Pids, CgroupError> {
    let limit = number(dir, "pids.max")?;
    Ok(Pids {
        current: number(dir, "pids.current")?,
        // "max" (no limit) is reported as 0, as runc does.
        limit: if limit == u64::MAX { 0 } else { limit },
    })
}

/// blkio.throttle.* lines: "MAJ:MIN Op value", plus a closing "Total value" that is dropped.
fn blkio_v1_entries(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, op, value] = fields[..] else {
                return None;
            };
            let (major, minor) = device.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The page sizes with a `hugetlb.<size>.<suffix>` file ("2MB", "1GB"), reservations aside.
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let tail = format!(".{suffix}");
    let mut sizes: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(tail.as_str())?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// v2: everything from the one directory.
pub(super) fn collect_v2(dir: &Path) -> Result<Stats, CgroupError> {
    let mut stats = Stats::default();
    let cpu_stat = keyed(dir, "cpu.stat")?;
    let micros = |k: &str| cpu_stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
    stats.cpu.usage.total = micros("usage_usec");
    stats.cpu.usage.user = micros("user_usec");
    stats.cpu.usage.kernel = micros("system_usec");
    stats.cpu.throttling = Throttling {
        periods: cpu_stat.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu_stat.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: micros("throttled_usec"),
    };
    stats.cpu.psi = psi(dir, "cpu.pressure")?;

    stats.memory.raw = keyed(dir, "memory.stat")?;
    stats.memory.cache = stats.memory.raw.get("file").copied().unwrap_or(0);
    if let Some(usage) = fs::read_u64_optional(dir, "memory.current")? {
        stats.memory.usage = MemoryEntry {
            limit: number(dir, "memory.max")?,
            usage,
            max: number(dir, "memory.peak")?,
            failcnt: 0,
        };
        // v1 reported memory+swap; keep that meaning: add memory back to v2's swap-only values.
        if let Some(swap) = fs::read_u64_optional(dir, "memory.swap.current")? {
            let swap_max = number(dir, "memory.swap.max")?;
            let memory_max = stats.memory.usage.limit;
            stats.memory.swap = MemoryEntry {
                limit: if swap_max == u64::MAX || memory_max == u64::MAX {
                    u64::MAX
                } else {
                    swap_max.saturating_add(memory_max)
                },
                usage: swap.saturating_add(usage),
                max: 0,
                failcnt: 0,
            };
        }
    }
    stats.memory.psi = psi(dir, "memory.pressure")?;

    let pids = pids(dir)?;
    stats.pids = pids;

    if let Some(text) = fs::read_optional(dir, "io.stat")? {
        let (bytes, ios) = io_stat_entries(&text);
        stats.blkio.io_service_bytes_recursive = bytes;
        stats.blkio.io_serviced_recursive = ios;
    }
    stats.blkio.psi = psi(dir, "io.pressure")?;

    for size in hugetlb_sizes(dir, "current")? {
        let file = |name: &str| format!("hugetlb.{size}.{name}");
        let entry = Hugetlb {
            usage: number(dir, &file("current"))?,
            max: 0,
            failcnt: fs::keyed_value(dir, &file("events"), "max")?.unwrap_or(0),
        };
        stats.hugetlb.insert(size, entry);
    }
    Ok(stats)
}

/// io.stat lines: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..", reported as
/// v1's Read/Write entries: bytes, then operations.
fn io_stat_entries(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let (list, op) = match key {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// A PSI file: "some avg10=0.12 avg60=0.05 avg300=0.01 total=12345" and the same for "full".
fn psi(dir: &Path, file: &str) -> Result<Option<PsiStats>, CgroupError> {
    let Some(text) = fs::read_optional(dir, file)? else {
        return Ok(None);
    };
    let mut stats = PsiStats::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let data = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        for field in fields {
            match field.split_once('=') {
                Some(("avg10", v)) => data.avg10 = v.parse().unwrap_or(0.0),
                Some(("avg60", v)) => data.avg60 = v.parse().unwrap_or(0.0),
                Some(("avg300", v)) => data.avg300 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(Some(stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files(dir: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
    }

    #[test]
    fn empty_stats_print_like_runc() {
        let value = serde_json::to_value(Stats::default()).unwrap();
        let empty_entry = json!({"limit": 0, "failcnt": 0});
        assert_eq!(
            value,
            json!({
                "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
                "cpuset": {
                    "cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                    "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                    "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0
                },
                "memory": {
                    "usage": empty_entry, "swap": empty_entry,
                    "kernel": empty_entry, "kernelTCP": empty_entry
                },
                "pids": {},
                "blkio": {},
                "hugetlb": {},
                "intel_rdt": {},
                "network_interfaces": null
            })
        );
    }

    #[test]
    fn v1_from_files() {
        let root = tempfile::tempdir().unwrap();
        let mut paths = BTreeMap::new();
        for c in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "hugetlb",
        ] {
            let dir = root.path().join(c);
            std::fs::create_dir(&dir).unwrap();
            paths.insert(c.to_string(), dir);
        }
        files(
            &paths["cpuacct"],
            &[
                ("cpuacct.usage", "3000000000\n"),
                ("cpuacct.usage_percpu", "1000000000 2000000000 \n"),
                ("cpuacct.usage_percpu_user", "600000000 1200000000 \n"),
                ("cpuacct.usage_percpu_sys", "400000000 800000000 \n"),
                ("cpuacct.stat", "user 180\nsystem 120\n"),
            ],
        );
        files(
            &paths["cpu"],
            &[(
                "cpu.stat",
                "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\nnr_bursts 0\nburst_time 0\n",
            )],
        );
        files(
            &paths["cpuset"],
            &[
                ("cpuset.cpus", "0-1\n"),
                ("cpuset.mems", "0\n"),
                ("cpuset.sched_load_balance", "1\n"),
                ("cpuset.sched_relax_domain_level", "-1\n"),
            ],
        );
        files(
            &paths["memory"],
            &[
                ("memory.stat", "cache 4096\nrss 8192\ntotal_cache 4096\n"),
                ("memory.usage_in_bytes", "12288\n"),
                ("memory.max_usage_in_bytes", "20480\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.failcnt", "3\n"),
                ("memory.memsw.usage_in_bytes", "12288\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.max_usage_in_bytes", "20480\n"),
                ("memory.memsw.failcnt", "0\n"),
            ],
        );
        files(
            &paths["pids"],
            &[("pids.current", "2\n"), ("pids.max", "max\n")],
        );
        files(
            &paths["blkio"],
            &[
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 0\n8:0 Total 4096\nTotal 4096\n",
                ),
                ("blkio.throttle.io_serviced", "8:0 Read 1\nTotal 1\n"),
            ],
        );
        files(
            &paths["hugetlb"],
            &[
                ("hugetlb.2MB.usage_in_bytes", "2097152\n"),
                ("hugetlb.2MB.max_usage_in_bytes", "4194304\n"),
                ("hugetlb.2MB.failcnt", "1\n"),
                ("hugetlb.2MB.rsvd.usage_in_bytes", "0\n"),
            ],
        );
        let stats = collect_v1(&paths).unwrap();
        let value = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            value["cpu"],
            json!({
                "usage": {
                    "total": 3_000_000_000u64,
                    "percpu": [1_000_000_000u64, 2_000_000_000u64],
                    "percpu_kernel": [400_000_000, 800_000_000],
                    "percpu_user": [600_000_000, 1_200_000_000],
                    "kernel": 1_200_000_000,
                    "user": 1_800_000_000
                },
                "throttling": {"periods": 10, "throttledPeriods": 2, "throttledTime": 5000}
            })
        );
        assert_eq!(value["cpuset"]["cpus"], json!([0, 1]));
        assert_eq!(value["cpuset"]["sched_relax_domain_level"], json!(-1));
        assert_eq!(
            value["memory"]["usage"],
            json!({"limit": 67108864, "usage": 12288, "max": 20480, "failcnt": 3})
        );
        assert_eq!(
            value["memory"]["swap"]["limit"],
            json!(9223372036854771712u64)
        );
        assert_eq!(value["memory"]["cache"], json!(4096));
        assert_eq!(value["memory"]["raw"]["rss"], json!(8192));
        assert_eq!(value["memory"]["kernel"], json!({"limit": 0, "failcnt": 0}));
        assert_eq!(value["pids"], json!({"current": 2}));
        assert_eq!(
            value["blkio"],
            json!({
                "ioServiceBytesRecursive": [
                    {"major": 8, "op": "Read", "value": 4096},
                    {"major": 8, "op": "Write"},
                    {"major": 8, "op": "Total", "value": 4096}
                ],
                "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1}]
            })
        );
        assert_eq!(
            value["hugetlb"],
            json!({"2MB": {"usage": 2097152, "max": 4194304, "failcnt": 1}})
        );
    }

    #[test]
    fn v2_from_files() {
        let dir = tempfile::tempdir().unwrap();
        files(
            dir.path(),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500\nuser_usec 1500\nsystem_usec 1000\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n",
                ),
                ("cpu.pressure", "some avg10=1.50 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
                ("memory.current", "1048576\n"),
                ("memory.max", "67108864\n"),
                ("memory.peak", "2097152\n"),
                ("memory.swap.current", "4096\n"),
                ("memory.swap.max", "max\n"),
                ("memory.stat", "anon 524288\nfile 262144\n"),
                ("pids.current", "3\n"),
                ("pids.max", "100\n"),
                (
                    "io.stat",
                    "254:1 rbytes=6901432320 wbytes=14245535744 rios=263278 wios=248603 dbytes=0 dios=0\n",
                ),
                ("hugetlb.2MB.current", "0\n"),
                ("hugetlb.2MB.events", "max 2\n"),
                ("hugetlb.2MB.rsvd.current", "0\n"),
            ],
        );
        let stats = collect_v2(dir.path()).unwrap();
        assert_eq!(stats.cpu.usage.total, 2_500_000);
        assert_eq!(stats.cpu.usage.user, 1_500_000);
        assert_eq!(stats.cpu.usage.kernel, 1_000_000);
        assert_eq!(stats.cpu.throttling.throttled_time, 7000);
        let psi = stats.cpu.psi.as_ref().unwrap();
        assert_eq!((psi.some.avg10, psi.some.total), (1.5, 42));
        assert_eq!(
            serde_json::to_value(psi).unwrap(),
            json!({"some": {"avg10": 1.5, "avg60": 0.0, "avg300": 0.0, "total": 42}})
        );
        assert_eq!(
            stats.memory.usage,
            MemoryEntry {
                limit: 67108864,
                usage: 1048576,
                max: 2097152,
                failcnt: 0
            }
        );
        assert_eq!(stats.memory.swap.usage, 1048576 + 4096);
        assert_eq!(stats.memory.swap.limit, u64::MAX);
        assert_eq!(stats.memory.cache, 262144);
        assert_eq!((stats.pids.current, stats.pids.limit), (3, 100));
        assert_eq!(
            serde_json::to_value(&stats.blkio).unwrap(),
            json!({
                "ioServiceBytesRecursive": [
                    {"major": 254, "minor": 1, "op": "Read", "value": 6901432320u64},
                    {"major": 254, "minor": 1, "op": "Write", "value": 14245535744u64}
                ],
                "ioServicedRecursive": [
                    {"major": 254, "minor": 1, "op": "Read", "value": 263278},
                    {"major": 254, "minor": 1, "op": "Write", "value": 248603}
                ]
            })
        );
        assert_eq!(
            stats.hugetlb["2MB"],
            Hugetlb {
                usage: 0,
                max: 0,
                failcnt: 2
            }
        );
        assert_eq!(stats.hugetlb.len(), 1);
    }

    #[test]
    fn missing_cgroup_gives_empty_stats() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert_eq!(collect_v2(&gone).unwrap(), Stats::default());
        let paths = BTreeMap::from([("memory".to_string(), gone)]);
        assert_eq!(collect_v1(&paths).unwrap(), Stats::default());
    }
}
