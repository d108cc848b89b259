//! cgroup v1: one hierarchy per controller (or a few co-mounted), with a directory for the
//! container in each. Writes happen in runc's controller order: cpuset, devices, memory, cpu,
//! pids, blkio, hugetlb, net_cls, net_prio, rdma.

use super::fs::{self, write};
use super::{convert, devices, Cgroup, CgroupError, FREEZE_TIMEOUT};
use crate::spec::{BlockIo, Cpu, DeviceCgroup, HugepageLimit, LinuxResources, Memory, Network};
use std::path::Path;
use std::time::{Duration, Instant};

pub(super) fn apply(cg: &Cgroup, res: &LinuxResources, update: bool) -> Result<(), CgroupError> {
    if !res.unified.is_empty() {
        return Err(CgroupError::Unsupported {
            field: "linux.resources.unified".to_string(),
            reason: "it needs cgroup v2 and this host uses cgroup v1".to_string(),
        });
    }
    if let Some(cpu) = &res.cpu {
        if cpu.cpus.as_deref().is_some_and(|s| !s.is_empty())
            || cpu.mems.as_deref().is_some_and(|s| !s.is_empty())
        {
            cpuset(cg.v1_dir("cpuset", "linux.resources.cpu.cpus/mems")?, cpu)?;
        }
    }
    if !update {
        apply_devices(cg, &res.devices)?;
    }
    if let Some(memory) = res.memory.as_ref().filter(|m| memory_requested(m)) {
        apply_memory(cg.v1_dir("memory", "linux.resources.memory")?, memory)?;
    }
    if let Some(c) = res.cpu.as_ref().filter(|c| cpu_requested(c)) {
        apply_cpu(cg.v1_dir("cpu", "linux.resources.cpu")?, c)?;
    }
    if let Some(pids) = &res.pids {
        let dir = cg.v1_dir("pids", "linux.resources.pids")?;
        write(dir, "pids.max", &convert::pids_max(pids.limit))?;
    }
    if let Some(blkio) = res.block_io.as_ref().filter(|b| blkio_requested(b)) {
        apply_blkio(cg.v1_dir("blkio", "linux.resources.blockIO")?, blkio)?;
    }
    if !res.hugepage_limits.is_empty() {
        let dir = cg.v1_dir("hugetlb", "linux.resources.hugepageLimits")?;
        apply_hugetlb(dir, &res.hugepage_limits)?;
    }
    if let Some(network) = &res.network {
        apply_network(cg, network)?;
    }
    if let Some(rdma) = res.rdma.as_ref().filter(|r| !r.is_empty()) {
        let lines = convert::rdma_lines(rdma)?;
        if !lines.is_empty() {
            let dir = cg.v1_dir("rdma", "linux.resources.rdma")?;
            for line in lines {
                write(dir, "rdma.max", &line)?;
            }
        }
    }
    Ok(())
}

/// Every level from the hierarchy root down to `leaf` whose cpuset.cpus or cpuset.mems is empty
/// gets its parent's (v1 starts a new cpuset empty, and a task cannot join an empty one).
pub(super) fn init_cpuset(leaf: &Path) -> Result<(), CgroupError> {
    // The levels that are cpusets: up from the leaf while the parent has cpuset files.
    let mut levels = vec![leaf];
    while let Some(parent) = levels.last().and_then(|l| l.parent()) {
        if !fs::exists(parent, "cpuset.cpus") {
            break;
        }
        levels.push(parent);
    }
    if !fs::exists(leaf, "cpuset.cpus") {
        return Ok(());
    }
    levels.reverse();
    for pair in levels.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fs::read(child, file)?.trim().is_empty() {
                write(child, file, fs::read(parent, file)?.trim())?;
            }
        }
    }
    Ok(())
}

fn cpuset(dir: &Path, cpu: &Cpu) -> Result<(), CgroupError> {
    for (file, value) in [("cpuset.cpus", &cpu.cpus), ("cpuset.mems", &cpu.mems)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            write(dir, file, value)?;
        }
    }
    Ok(())
}

fn apply_devices(cg: &Cgroup, spec: &[DeviceCgroup]) -> Result<(), CgroupError> {
    let rules = devices::rules(spec)?;
    let dir = match cg.v1_dir("devices", "linux.resources.devices") {
        Ok(dir) => dir,
        // No devices hierarchy and nothing asked for: nothing to enforce with.
        Err(_) if spec.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for rule in rules {
        write(dir, rule.file(), &rule.line())?;
    }
    Ok(())
}

fn memory_requested(m: &Memory) -> bool {
    m.limit.is_some()
        || m.reservation.is_some()
        || m.swap.is_some()
        || m.kernel.is_some()
        || m.kernel_tcp.is_some()
        || m.swappiness.is_some()
        || m.disable_oom_killer == Some(true)
}

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

fn apply_memory(dir: &Path, m: &Memory) -> Result<(), CgroupError> {
    let limit = m.limit.unwrap_or(0);
    let mut swap = m.swap.unwrap_or(0);
    // Unlimited memory with swap unset: unlimited memory+swap too (when swap is accounted).
    if limit == -1 && swap == 0 && fs::exists(dir, MEMSW_LIMIT) {
        swap = -1;
    }
    if limit > 0 && swap > 0 && swap < limit {
        return Err(CgroupError::Invalid {
            field: "linux.resources.memory.swap".to_string(),
            value: swap.to_string(),
            reason: format!("memory+swap must be at least linux.resources.memory.limit ({limit})"),
        });
    }
    // The kernel keeps memory <= memory+swap at every step: raise memsw first when the current
    // memory limit is below the new memsw, otherwise lower the memory limit first.
    if limit != 0 && swap != 0 {
        let current = fs::read_u64_optional(dir, LIMIT)?.unwrap_or(u64::MAX);
        if swap == -1 || u64::try_from(swap).is_ok_and(|s| current < s) {
            write(dir, MEMSW_LIMIT, &swap.to_string())?;
            set_memory_limit(dir, limit)?;
        } else {
            set_memory_limit(dir, limit)?;
            write(dir, MEMSW_LIMIT, &swap.to_string())?;
        }
    } else if limit != 0 {
        set_memory_limit(dir, limit)?;
    } else if swap != 0 {
        write(dir, MEMSW_LIMIT, &swap.to_string())?;
    }
    if let Some(reservation) = m.reservation.filter(|r| *r != 0) {
        write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    let kmem = [
        (m.kernel, "memory.kmem.limit_in_bytes", "kernel"),
        (m.kernel_tcp, "memory.kmem.tcp.limit_in_bytes", "kernelTCP"),
    ];
    for (value, file, name) in kmem {
        if let Some(value) = value {
            kernel_memory(dir, file, name, value)?;
        }
    }
    if let Some(swappiness) = m.swappiness {
        if swappiness > 100 {
            return Err(CgroupError::Invalid {
                field: "linux.resources.memory.swappiness".to_string(),
                value: swappiness.to_string(),
                reason: "must be from 0 to 100".to_string(),
            });
        }
        write(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    if m.disable_oom_killer == Some(true) {
        write(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

/// memory.limit_in_bytes; EBUSY (the cgroup already uses more) becomes an error with the usage.
fn set_memory_limit(dir: &Path, limit: i64) -> Result<(), CgroupError> {
    match write(dir, LIMIT, &limit.to_string()) {
        Err(e) if e.errno() == Some(libc::EBUSY) => {
            match fs::read_u64_optional(dir, "memory.usage_in_bytes") {
                Ok(Some(usage)) => Err(CgroupError::MemoryLimitTooLow {
                    path: dir.to_path_buf(),
                    limit,
                    usage,
                }),
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// Kernel memory limits are gone from recent kernels (the files vanished, or writes are refused
/// or ignored since Linux 5.16), and runc ignores them: write them only where they still work.
fn kernel_memory(dir: &Path, file: &str, name: &str, value: i64) -> Result<(), CgroupError> {
    if !fs::exists(dir, file) {
        tracing::warn!(
            "ignoring linux.resources.memory.{name}: this kernel has no {file} (kernel memory limits were removed)"
        );
        return Ok(());
    }
    match write(dir, file, &value.to_string()) {
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            tracing::warn!("ignoring linux.resources.memory.{name}: {e}");
            Ok(())
        }
        other => other,
    }
}

fn cpu_requested(c: &Cpu) -> bool {
    c.shares.is_some()
        || c.quota.is_some()
        || c.period.is_some()
        || c.burst.is_some()
        || c.realtime_runtime.is_some()
        || c.realtime_period.is_some()
        || c.idle.is_some()
}

fn apply_cpu(dir: &Path, c: &Cpu) -> Result<(), CgroupError> {
    if let Some(shares) = c.shares.filter(|s| *s != 0) {
        write(dir, "cpu.shares", &shares.to_string())?;
    }
    let quota = c.quota.filter(|q| *q != 0);
    // The period goes first; the kernel may refuse a shorter period against the old quota
    // (EINVAL), in which case it goes again after the new quota. Same for the burst, which must
    // not exceed the quota.
    let mut retry = Vec::new();
    for (file, value) in [
        ("cpu.cfs_period_us", c.period.filter(|p| *p != 0)),
        ("cpu.cfs_burst_us", c.burst),
    ] {
        let Some(value) = value else { continue };
        match write(dir, file, &value.to_string()) {
            Err(e) if e.errno() == Some(libc::EINVAL) && quota.is_some() => {
                retry.push((file, value))
            }
            other => other?,
        }
    }
    if let Some(quota) = quota {
        write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
    }
    for (file, value) in retry {
        write(dir, file, &value.to_string())?;
    }
    // The runtime must fit in the period: period first.
    if let Some(period) = c.realtime_period.filter(|p| *p != 0) {
        write(dir, "cpu.rt_period_us", &period.to_string())?;
    }
    if let Some(runtime) = c.realtime_runtime.filter(|r| *r != 0) {
        write(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
    }
    if let Some(idle) = c.idle {
        write(dir, "cpu.idle", &idle.to_string())?;
    }
    Ok(())
}

fn blkio_requested(b: &BlockIo) -> bool {
    b.weight.is_some()
        || b.leaf_weight.is_some()
        || !b.weight_device.is_empty()
        || !b.throttle_read_bps_device.is_empty()
        || !b.throttle_write_bps_device.is_empty()
        || !b.throttle_read_iops_device.is_empty()
        || !b.throttle_write_iops_device.is_empty()
}

fn apply_blkio(dir: &Path, b: &BlockIo) -> Result<(), CgroupError> {
    // CFQ had blkio.weight; BFQ (the only proportional scheduler left) has blkio.bfq.weight,
    // which also takes "MAJ:MIN weight" lines for one device.
    let bfq = !fs::exists(dir, "blkio.weight") && fs::exists(dir, "blkio.bfq.weight");
    let (weight_file, weight_device_file) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(weight) = b.weight.filter(|w| *w != 0) {
        write(dir, weight_file, &weight.to_string())?;
    }
    if let Some(leaf_weight) = b.leaf_weight.filter(|w| *w != 0) {
        write(dir, "blkio.leaf_weight", &leaf_weight.to_string())?;
    }
    for wd in &b.weight_device {
        if let Some(weight) = wd.weight {
            let line = format!("{}:{} {weight}", wd.major, wd.minor);
            write(dir, weight_device_file, &line)?;
        }
        if let Some(leaf_weight) = wd.leaf_weight {
            let line = format!("{}:{} {leaf_weight}", wd.major, wd.minor);
            write(dir, "blkio.leaf_weight_device", &line)?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            &b.throttle_read_bps_device,
        ),
        (
            "blkio.throttle.write_bps_device",
            &b.throttle_write_bps_device,
        ),
        (
            "blkio.throttle.read_iops_device",
            &b.throttle_read_iops_device,
        ),
        (
            "blkio.throttle.write_iops_device",
            &b.throttle_write_iops_device,
        ),
    ];
    for (file, devices) in throttles {
        for td in devices {
            write(dir, file, &format!("{}:{} {}", td.major, td.minor, td.rate))?;
        }
    }
    Ok(())
}

fn apply_hugetlb(dir: &Path, limits: &[HugepageLimit]) -> Result<(), CgroupError> {
    for limit in limits {
        let size = convert::hugepage_size(&limit.page_size)?;
        let value = limit.limit.to_string();
        write(dir, &format!("hugetlb.{size}.limit_in_bytes"), &value)?;
        // Reservations have their own limit (Linux 5.7+); keep them in step, as runc does.
        let rsvd = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if fs::exists(dir, &rsvd) {
            write(dir, &rsvd, &value)?;
        }
    }
    Ok(())
}

fn apply_network(cg: &Cgroup, network: &Network) -> Result<(), CgroupError> {
    if let Some(class_id) = network.class_id {
        let dir = cg.v1_dir("net_cls", "linux.resources.network.classID")?;
        write(dir, "net_cls.classid", &class_id.to_string())?;
    }
    if !network.priorities.is_empty() {
        let dir = cg.v1_dir("net_prio", "linux.resources.network.priorities")?;
        for p in &network.priorities {
            let name = convert::single_word("linux.resources.network.priorities[].name", &p.name)?;
            write(dir, "net_prio.ifpriomap", &format!("{name} {}", p.priority))?;
        }
    }
    Ok(())
}

/// Writes FROZEN or THAWED to freezer.state and waits until the kernel reports it, writing again
/// every 100ms (tasks forked meanwhile can leave the cgroup FREEZING). A freeze that does not
/// finish is undone, so the container is not left half frozen.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let wanted = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut next_write = Instant::now();
    loop {
        if Instant::now() >= next_write {
            write(dir, "freezer.state", wanted)?;
            next_write += Duration::from_millis(100);
        }
        let seen = fs::read(dir, "freezer.state")?.trim().to_string();
        if seen == wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            if frozen {
                // Best effort: the timeout below is the error worth reporting.
                let _ = write(dir, "freezer.state", "THAWED");
            }
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_path_buf(),
                wanted,
                seen,
                timeout: FREEZE_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
