//! OCI resource values turned into what cgroup files take, shared by v1 and v2; the v1 -> v2
//! conversions use the formulas runc and crun use, so containers get the same numbers.

use super::CgroupError;
use serde_json::Value;
use std::collections::BTreeMap;

/// cpu.shares (2..=262144, v1) -> cpu.weight (1..=10000, v2): `1 + ((shares - 2) * 9999) / 262142`.
/// Out-of-range shares are clamped first, as the kernel clamps them on v1.
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio.weight (10..=1000, v1) -> io.weight (1..=10000, v2): `1 + (weight - 10) * 9999 / 990`.
pub(super) fn blkio_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// pids.max: a positive limit, or "max" for 0 and below.
pub(super) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// A v2 limit file value (memory.max, memory.low): -1 means "max".
pub(super) fn v2_limit(value: i64) -> String {
    if value == -1 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// OCI `memory.swap` is memory+swap together (v1's memsw); v2's memory.swap.max is swap alone.
/// Returns what to write to memory.swap.max, or `None` to leave it alone (runc's rules).
pub(super) fn swap_to_v2(swap: i64, limit: i64) -> Result<Option<String>, CgroupError> {
    let invalid = |reason: String| CgroupError::Invalid {
        field: "linux.resources.memory.swap".to_string(),
        value: swap.to_string(),
        reason,
    };
    Ok(match (swap, limit) {
        // Unlimited memory with swap unset: unlimited swap too, as v1 would behave.
        (0, -1) => Some("max".to_string()),
        (0, _) => None,
        (-1, _) => Some("max".to_string()),
        (_, -1) => Some(swap.to_string()),
        (_, 0) => {
            return Err(invalid(
                "cgroup v2 needs linux.resources.memory.limit to derive the swap limit".into(),
            ))
        }
        (_, limit) if limit < 0 => {
            return Err(invalid(format!(
                "linux.resources.memory.limit {limit} is not a valid limit"
            )))
        }
        (swap, limit) if swap < limit => {
            return Err(invalid(format!(
                "memory+swap must be at least linux.resources.memory.limit ({limit})"
            )))
        }
        (swap, limit) => Some((swap - limit).to_string()),
    })
}

/// A hugepage size as the hugetlb files name it ("2MB", "1GB", "64KB"); anything else could
/// also be a path, so it is refused.
pub(super) fn hugepage_size(page_size: &str) -> Result<&str, CgroupError> {
    let digits = ["KB", "MB", "GB"]
        .iter()
        .find_map(|unit| page_size.strip_suffix(unit))
        .unwrap_or("");
    let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if well_formed {
        Ok(page_size)
    } else {
        Err(CgroupError::Invalid {
            field: "linux.resources.hugepageLimits[].pageSize".to_string(),
            value: page_size.to_string(),
            reason: "expected a size such as \"2MB\" or \"1GB\"".to_string(),
        })
    }
}

/// A name that goes into a control file line (interface, rdma device): one word.
pub(super) fn single_word<'a>(field: &str, value: &'a str) -> Result<&'a str, CgroupError> {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '\0') {
        return Err(CgroupError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            reason: "must be a single word".to_string(),
        });
    }
    Ok(value)
}

/// `linux.resources.rdma` as rdma.max lines: "<device> hca_handle=<n> hca_object=<n>".
pub(super) fn rdma_lines(rdma: &BTreeMap<String, Value>) -> Result<Vec<String>, CgroupError> {
    let mut lines = Vec::new();
    for (device, limits) in rdma {
        let field = format!("linux.resources.rdma[{device:?}]");
        let device = single_word(&field, device)?;
        let mut line = device.to_string();
        for (key, file_key) in [("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")] {
            match limits.get(key) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    let n = value
                        .as_u64()
                        .filter(|n| u32::try_from(*n).is_ok())
                        .ok_or_else(|| CgroupError::Invalid {
                            field: format!("{field}.{key}"),
                            value: value.to_string(),
                            reason: "must be a number from 0 to 4294967295".to_string(),
                        })?;
                    line.push_str(&format!(" {file_key}={n}"));
                }
            }
        }
        if line.len() > device.len() {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// A cgroup cpu/memory node list ("0-3,5") as numbers; `None` if malformed.
pub(super) fn parse_list(text: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(512), 20);
        // Clamped like the kernel clamps cpu.shares.
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 30), 10_000);
    }

    #[test]
    fn blkio_to_io_weight_matches_runc() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_conversion() {
        let mib = 1 << 20;
        assert_eq!(
            swap_to_v2(192 * mib, 64 * mib).unwrap(),
            Some((128 * mib).to_string())
        );
        assert_eq!(swap_to_v2(64 * mib, 64 * mib).unwrap(), Some("0".into()));
        assert_eq!(swap_to_v2(-1, 64 * mib).unwrap(), Some("max".into()));
        assert_eq!(swap_to_v2(0, -1).unwrap(), Some("max".into()));
        assert_eq!(swap_to_v2(0, 64 * mib).unwrap(), None);
        assert_eq!(swap_to_v2(mib, -1).unwrap(), Some(mib.to_string()));
        assert!(swap_to_v2(mib, 0).is_err());
        assert!(swap_to_v2(mib, 2 * mib).is_err());
        assert!(swap_to_v2(mib, -5).is_err());
    }

    #[test]
    fn small_conversions() {
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(100), "100");
        assert_eq!(v2_limit(-1), "max");
        assert_eq!(hugepage_size("2MB").unwrap(), "2MB");
        assert_eq!(hugepage_size("1GB").unwrap(), "1GB");
        for bad in ["", "MB", "2mb", "../x", "2MB/../../x", "2 MB"] {
            assert!(hugepage_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_list("0-2,5\n"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_list(""), Some(vec![]));
        assert_eq!(parse_list("3-1"), None);
    }

    #[test]
    fn rdma() {
        let rdma = BTreeMap::from([
            (
                "mlx5_1".to_string(),
                serde_json::json!({"hcaHandles": 3, "hcaObjects": 10000}),
            ),
            ("mlx4_0".to_string(), serde_json::json!({"hcaObjects": 7})),
            ("none".to_string(), serde_json::json!({})),
        ]);
        assert_eq!(
            rdma_lines(&rdma).unwrap(),
            vec![
                "mlx4_0 hca_object=7",
                "mlx5_1 hca_handle=3 hca_object=10000"
            ]
        );
        let bad = BTreeMap::from([("a b".to_string(), serde_json::json!({"hcaHandles": 1}))]);
        assert!(rdma_lines(&bad).is_err());
        let bad = BTreeMap::from([("x".to_string(), serde_json::json!({"hcaHandles": -1}))]);
        assert!(rdma_lines(&bad).is_err());
    }
}
