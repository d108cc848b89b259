//! cgroup v2: one directory in the unified hierarchy. OCI's resources were designed for v1, so
//! several values are converted the way runc and crun convert them (see `convert`).

use super::fs::{self, write};
use super::{convert, device_filter, devices, CgroupError, FREEZE_TIMEOUT};
use crate::spec::{BlockIo, Cpu, HugepageLimit, LinuxResources, Memory, Network};
use crate::syscall::bpf::Bpf;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A write for `field` through `controller`'s file: a missing file means the controller is not
/// enabled for this cgroup, which is worth saying in those words.
fn set(dir: &Path, file: &str, value: &str, field: &str) -> Result<(), CgroupError> {
    write(dir, file, value).map_err(|e| match e {
        CgroupError::Write { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CgroupError::NotEnabled {
                controller: file.split('.').next().unwrap_or(file).to_string(),
                field: field.to_string(),
                path: dir.to_path_buf(),
                source,
            }
        }
        e => e,
    })
}

pub(super) fn apply(
    bpf: &dyn Bpf,
    dir: &Path,
    res: &LinuxResources,
    update: bool,
) -> Result<(), CgroupError> {
    for key in res.unified.keys() {
        check_unified_key(key)?;
    }
    // Checked before anything is written.
    let device_rules = devices::rules(&res.devices)?;
    if let Some(cpu) = &res.cpu {
        for (file, value) in [("cpuset.cpus", &cpu.cpus), ("cpuset.mems", &cpu.mems)] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                set(dir, file, value, "linux.resources.cpu.cpus/mems")?;
            }
        }
    }
    if let Some(memory) = &res.memory {
        apply_memory(dir, memory, update)?;
    }
    if let Some(cpu) = &res.cpu {
        apply_cpu(dir, cpu)?;
    }
    if let Some(pids) = &res.pids {
        set(
            dir,
            "pids.max",
            &convert::pids_max(pids.limit),
            "linux.resources.pids",
        )?;
    }
    if let Some(block_io) = &res.block_io {
        apply_io(dir, block_io)?;
    }
    apply_hugetlb(dir, &res.hugepage_limits)?;
    if let Some(network) = &res.network {
        refuse_network(network)?;
    }
    if let Some(rdma) = res.rdma.as_ref() {
        for line in convert::rdma_lines(rdma)? {
            set(dir, "rdma.max", &line, "linux.resources.rdma")?;
        }
    }
    // v2 has no devices.* files: the rules become an eBPF program on the cgroup. An update
    // replaces it only when it names rules (runc's update takes none); the swap is atomic.
    if !update || !res.devices.is_empty() {
        device_filter::install(bpf, dir, &device_rules)?;
    }
    for (key, value) in &res.unified {
        apply_unified(dir, key, value)?;
    }
    Ok(())
}

fn apply_memory(dir: &Path, m: &Memory, update: bool) -> Result<(), CgroupError> {
    if m.kernel.is_some() || m.kernel_tcp.is_some() {
        tracing::warn!("ignoring linux.resources.memory.kernel/kernelTCP: cgroup v2 has no kernel memory limit");
    }
    if m.swappiness.is_some() {
        tracing::warn!(
            "ignoring linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness"
        );
    }
    if m.disable_oom_killer == Some(true) {
        tracing::warn!("ignoring linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer");
    }
    let limit = m.limit.unwrap_or(0);
    let swap = m.swap.unwrap_or(0);
    let reservation = m.reservation.unwrap_or(0);
    if limit == 0 && swap == 0 && reservation == 0 {
        return Ok(());
    }
    if update && m.check_before_update == Some(true) {
        check_usage(dir, limit, swap)?;
    }
    if let Some(swap_max) = convert::swap_to_v2(swap, limit)? {
        match set(
            dir,
            "memory.swap.max",
            &swap_max,
            "linux.resources.memory.swap",
        ) {
            // No swap accounting (CONFIG_MEMCG_SWAP off, swapaccount=0): "no swap" and
            // "unlimited swap" both hold anyway.
            Err(CgroupError::NotEnabled { .. }) if swap_max == "max" || swap_max == "0" => {}
            other => other?,
        }
    }
    if limit != 0 {
        set(
            dir,
            "memory.max",
            &convert::v2_limit(limit),
            "linux.resources.memory.limit",
        )?;
    }
    if reservation != 0 {
        let value = convert::v2_limit(reservation);
        set(
            dir,
            "memory.low",
            &value,
            "linux.resources.memory.reservation",
        )?;
    }
    Ok(())
}

/// memory.checkBeforeUpdate: refuse an update that would put the limit at or below the current
/// usage (v2 would otherwise reclaim and OOM-kill to get there). Best effort, as in runc.
fn check_usage(dir: &Path, limit: i64, swap: i64) -> Result<(), CgroupError> {
    let Ok(Some(usage)) = fs::read_u64_optional(dir, "memory.current") else {
        return Ok(());
    };
    for (value, field) in [(swap, "swap"), (limit, "limit")] {
        if u64::try_from(value).is_ok_and(|v| v > 0 && v <= usage) {
            return Err(CgroupError::Invalid {
                field: format!("linux.resources.memory.{field}"),
                value: value.to_string(),
                reason: format!("the cgroup already uses {usage} bytes (checkBeforeUpdate)"),
            });
        }
    }
    Ok(())
}

fn apply_cpu(dir: &Path, c: &Cpu) -> Result<(), CgroupError> {
    if c.realtime_runtime.is_some_and(|r| r != 0) || c.realtime_period.is_some_and(|p| p != 0) {
        return Err(CgroupError::Unsupported {
            field: "linux.resources.cpu.realtimeRuntime/realtimePeriod".to_string(),
            reason: "cgroup v2 has no real-time CPU bandwidth control".to_string(),
        });
    }
    if let Some(idle) = c.idle {
        set(
            dir,
            "cpu.idle",
            &idle.to_string(),
            "linux.resources.cpu.idle",
        )?;
    }
    if let Some(shares) = c.shares.filter(|s| *s != 0) {
        let weight = convert::shares_to_weight(shares).to_string();
        set(dir, "cpu.weight", &weight, "linux.resources.cpu.shares")?;
    }
    let quota = c.quota.filter(|q| *q != 0);
    let period = c.period.filter(|p| *p != 0);
    let max = (quota.is_some() || period.is_some()).then(|| {
        let quota = quota
            .filter(|q| *q > 0)
            .map_or_else(|| "max".to_string(), |q| q.to_string());
        match period {
            Some(period) => format!("{quota} {period}"),
            None => quota,
        }
    });
    // The burst must not exceed the quota: try it first (the quota may be shrinking below the
    // old burst), and again after cpu.max if the old quota was too small for it.
    let mut burst_later = None;
    if let Some(burst) = c.burst {
        match set(
            dir,
            "cpu.max.burst",
            &burst.to_string(),
            "linux.resources.cpu.burst",
        ) {
            Err(e) if e.errno() == Some(libc::EINVAL) && max.is_some() => burst_later = Some(burst),
            other => other?,
        }
    }
    if let Some(max) = max {
        set(dir, "cpu.max", &max, "linux.resources.cpu.quota/period")?;
    }
    if let Some(burst) = burst_later {
        set(
            dir,
            "cpu.max.burst",
            &burst.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    Ok(())
}

fn apply_io(dir: &Path, b: &BlockIo) -> Result<(), CgroupError> {
    // BFQ takes blkio's own 1..1000 weights in io.bfq.weight; otherwise io.weight, converted.
    let bfq = fs::exists(dir, "io.bfq.weight");
    let weight_of = |w: u16| {
        if bfq {
            ("io.bfq.weight", u64::from(w))
        } else {
            ("io.weight", convert::blkio_to_io_weight(w))
        }
    };
    if let Some(weight) = b.weight.filter(|w| *w != 0) {
        let (file, value) = weight_of(weight);
        set(
            dir,
            file,
            &value.to_string(),
            "linux.resources.blockIO.weight",
        )?;
    }
    if b.leaf_weight.is_some_and(|w| w != 0)
        || b.weight_device.iter().any(|wd| wd.leaf_weight.is_some())
    {
        tracing::warn!(
            "ignoring linux.resources.blockIO leafWeight: cgroup v2 has no leaf weights"
        );
    }
    for wd in &b.weight_device {
        if let Some(weight) = wd.weight {
            let (file, value) = weight_of(weight);
            let line = format!("{}:{} {value}", wd.major, wd.minor);
            set(dir, file, &line, "linux.resources.blockIO.weightDevice")?;
        }
    }
    // One io.max line per device with all of its limits.
    let mut limits: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    let throttles = [
        ("rbps", &b.throttle_read_bps_device),
        ("wbps", &b.throttle_write_bps_device),
        ("riops", &b.throttle_read_iops_device),
        ("wiops", &b.throttle_write_iops_device),
    ];
    for (key, devices) in throttles {
        for td in devices {
            let entry = limits.entry((td.major, td.minor)).or_default();
            entry.push(format!("{key}={}", td.rate));
        }
    }
    for ((major, minor), settings) in limits {
        let line = format!("{major}:{minor} {}", settings.join(" "));
        set(dir, "io.max", &line, "linux.resources.blockIO.throttle*")?;
    }
    Ok(())
}

fn apply_hugetlb(dir: &Path, limits: &[HugepageLimit]) -> Result<(), CgroupError> {
    for limit in limits {
        let size = convert::hugepage_size(&limit.page_size)?;
        let value = limit.limit.to_string();
        let field = "linux.resources.hugepageLimits";
        set(dir, &format!("hugetlb.{size}.max"), &value, field)?;
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if fs::exists(dir, &rsvd) {
            set(dir, &rsvd, &value, field)?;
        }
    }
    Ok(())
}

fn refuse_network(network: &Network) -> Result<(), CgroupError> {
    let field = if network.class_id.is_some() {
        "linux.resources.network.classID"
    } else if !network.priorities.is_empty() {
        "linux.resources.network.priorities"
    } else {
        return Ok(());
    };
    Err(CgroupError::Unsupported {
        field: field.to_string(),
        reason: "cgroup v2 has no net_cls/net_prio controllers".to_string(),
    })
}

/// A `unified` key must be a file of this very directory.
fn check_unified_key(key: &str) -> Result<(), CgroupError> {
    if key.is_empty() || key.contains(['/', '\0']) || key.contains("..") {
        return Err(CgroupError::Invalid {
            field: "linux.resources.unified".to_string(),
            value: format!("{key:?}"),
            reason: "keys must be file names such as \"memory.high\"".to_string(),
        });
    }
    Ok(())
}

/// `unified` values go verbatim to `<dir>/<key>`, one write per line (files such as io.max take
/// one entry per write).
fn apply_unified(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
    let field = format!("linux.resources.unified[{key:?}]");
    let mut lines = value.lines().filter(|l| !l.trim().is_empty()).peekable();
    if lines.peek().is_none() {
        return set(dir, key, value, &field);
    }
    for line in lines {
        set(dir, key, line, &field)?;
    }
    Ok(())
}

/// Enables, in `dir`'s ancestors from the hierarchy root down to its parent, every controller
/// each one has, so that `dir` gets them all. A controller an ancestor refuses (it has processes
/// of its own, or is threaded) is skipped; applying a limit through it then fails clearly.
pub(super) fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| fs::exists(a, "cgroup.controllers"))
        .collect();
    ancestors.reverse();
    for ancestor in ancestors {
        let available = fs::read(ancestor, "cgroup.controllers")?;
        let enabled = fs::read_optional(ancestor, "cgroup.subtree_control")?.unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<String> = available
            .split_whitespace()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if write(ancestor, "cgroup.subtree_control", &missing.join(" ")).is_ok() {
            continue;
        }
        for controller in &missing {
            if let Err(e) = write(ancestor, "cgroup.subtree_control", controller) {
                tracing::debug!("controller not enabled: {e}");
            }
        }
    }
    Ok(())
}

/// Writes cgroup.freeze and waits until cgroup.events reports the state; a freeze that does not
/// finish is undone, so the container is not left half frozen.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let (value, wanted) = if frozen {
        ("1", "frozen")
    } else {
        ("0", "thawed")
    };
    write(dir, "cgroup.freeze", value)?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let state = fs::keyed_value(dir, "cgroup.events", "frozen")?;
        if state == Some(u64::from(frozen)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            if frozen {
                // Best effort: the timeout below is the error worth reporting.
                let _ = write(dir, "cgroup.freeze", "0");
            }
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_path_buf(),
                wanted,
                seen: state
                    .map_or_else(|| "no cgroup.events".to_string(), |s| format!("frozen {s}")),
                timeout: FREEZE_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
