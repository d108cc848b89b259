//! Log time stamps: nanoseconds since the Unix epoch (UTC) as `i64`, written as RFC 3339 with
//! nine fraction digits (`2026-11-29T10:00:00.123456789Z`, what `docker logs -t` prints), and
//! the forms `--since`/`--until` accept.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::images::time::{civil_from_days, days_from_civil};

const NANOS_PER_SEC: i64 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error(
        "invalid time {input:?}: use RFC 3339 (2026-11-29T10:00:00Z, 2026-11-29), \
         Unix seconds (1795946400 or 1795946400.5) or a duration before now (10m, 1h30m, 45s)"
    )]
    Invalid { input: String },
    #[error("time {input:?} is out of range (years 1678 to 2261)")]
    OutOfRange { input: String },
}

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    to_nanos(SystemTime::now())
}

/// A `SystemTime` in nanoseconds since the epoch (saturating outside ±292 years).
pub fn to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// `2026-11-29T10:00:00.123456789Z`.
pub fn format_rfc3339_nanos(nanos: i64) -> String {
    let mut s = String::with_capacity(30);
    write_rfc3339_nanos(&mut s, nanos);
    s
}

/// Append `2026-11-29T10:00:00.123456789Z` to `out`.
pub fn write_rfc3339_nanos(out: &mut String, nanos: i64) {
    use std::fmt::Write;
    let secs = nanos.div_euclid(NANOS_PER_SEC);
    let frac = nanos.rem_euclid(NANOS_PER_SEC);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// A fixed-width decimal field of `s` at `at..at+n`.
fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let f = s.get(at..at + n)?;
    f.iter()
        .all(u8::is_ascii_digit)
        .then(|| f.iter().fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')))
}

/// A fraction `.ddd` (1 to 9 digits used, more are read and dropped) at the start of `s`:
/// (nanoseconds, bytes used).
fn fraction(s: &[u8]) -> Option<(i64, usize)> {
    if s.first() != Some(&b'.') && s.first() != Some(&b',') {
        return Some((0, 0));
    }
    let n = s[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut nanos = 0;
    for i in 0..9 {
        let d = if i < n { i64::from(s[1 + i] - b'0') } else { 0 };
        nanos = nanos * 10 + d;
    }
    Some((nanos, 1 + n))
}

/// Parsed `YYYY-MM-DD[THH[:MM[:SS[.frac]]]][Z|±HH:MM]`: the wall time as nanoseconds as if
/// UTC, and the zone offset in seconds if one was given.
fn parse_datetime(s: &[u8]) -> Option<(i64, Option<i64>)> {
    let (y, mo, d) = (digits(s, 0, 4)?, digits(s, 5, 2)?, digits(s, 8, 2)?);
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (mut h, mut mi, mut sec, mut nanos) = (0, 0, 0, 0);
    let mut i = 10;
    if matches!(s.get(i), Some(b'T' | b't' | b' ')) {
        h = digits(s, i + 1, 2)?;
        i += 3;
        if s.get(i) == Some(&b':') {
            mi = digits(s, i + 1, 2)?;
            i += 3;
            if s.get(i) == Some(&b':') {
                sec = digits(s, i + 1, 2)?;
                i += 3;
                let (f, used) = fraction(&s[i..])?;
                nanos = f;
                i += used;
            }
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset = match s.get(i) {
        None => None,
        Some(b'Z' | b'z') if i + 1 == s.len() => Some(0),
        Some(&sign @ (b'+' | b'-')) if i + 6 == s.len() && s[i + 3] == b':' => {
            let (oh, om) = (digits(s, i + 1, 2)?, digits(s, i + 4, 2)?);
            let off = oh * 3600 + om * 60;
            Some(if sign == b'-' { -off } else { off })
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Some((secs * NANOS_PER_SEC + nanos, offset))
}

/// An RFC 3339 time with a zone (`Z` or `±HH:MM`, any number of fraction digits), as the log
/// files hold: nanoseconds since the epoch.
pub use crate::images::time::parse_rfc3339;

/// The offset from UTC, in seconds, of the local zone for a wall time given as if UTC.
fn local_offset(wall_secs: i64) -> i64 {
    let t = wall_secs as libc::time_t;
    // SAFETY: localtime_r writes only into the `tm` we pass and reads `t`; both live on this
    // stack frame for the whole call. An all-zero `tm` is a valid value of the C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// A Go duration (`10m`, `1h30m`, `1.5h`, `300ms`, `2us`, `5ns`) in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let number: f64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * unit;
    }
    (total < i64::MAX as f64).then_some(total as i64)
}

/// What `--since` and `--until` accept, as `docker logs` does: RFC 3339 with or without a zone
/// (`2026-11-29T10:00:00.5Z`, `2026-11-29T10:00`, `2026-11-29`: without a zone, local time),
/// Unix seconds with an optional fraction (`1795946400.123`), or a duration before `now`
/// (`10m`, `1h30m`). Nanoseconds since the epoch.
pub fn parse_time(input: &str, now: i64) -> Result<i64, TimeError> {
    let s = input.trim();
    let invalid = || TimeError::Invalid {
        input: input.to_string(),
    };
    let range = || TimeError::OutOfRange {
        input: input.to_string(),
    };
    if s.is_empty() {
        return Err(invalid());
    }
    let b = s.as_bytes();
    if b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let secs: i64 = int.parse().map_err(|_| invalid())?;
        let (nanos, used) = if frac.is_empty() {
            (0, 0)
        } else {
            fraction(&b[int.len()..]).ok_or_else(invalid)?
        };
        if used != b.len() - int.len() {
            return Err(invalid());
        }
        return secs
            .checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(range);
    }
    if b.len() >= 10 && b[4] == b'-' {
        let (wall, offset) = parse_datetime(b).ok_or_else(invalid)?;
        let offset = offset.unwrap_or_else(|| local_offset(wall.div_euclid(NANOS_PER_SEC)));
        return wall.checked_sub(offset * NANOS_PER_SEC).ok_or_else(range);
    }
    let d = parse_duration(s).ok_or_else(invalid)?;
    now.checked_sub(d).ok_or_else(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_nine_fraction_digits_in_utc() {
        assert_eq!(format_rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-29T10:00:00Z
        let t = 1_795_946_400 * NANOS_PER_SEC + 123_456_789;
        assert_eq!(format_rfc3339_nanos(t), "2026-11-29T10:00:00.123456789Z");
        assert_eq!(format_rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_rfc3339_nanos(951_782_400 * NANOS_PER_SEC),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn rfc3339_round_trips_and_takes_zones_and_short_fractions() {
        for t in [
            0,
            1_795_946_400_123_456_789,
            4_102_444_799_999_999_999,
            -86_400,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339_nanos(t)), Some(t), "{t}");
        }
        let base = 1_795_946_400 * NANOS_PER_SEC;
        assert_eq!(parse_rfc3339("2026-11-29T10:00:00Z"), Some(base));
        assert_eq!(
            parse_rfc3339("2026-11-29T10:00:00.5Z"),
            Some(base + 500_000_000)
        );
        assert_eq!(parse_rfc3339("2026-11-29T11:30:00+01:30"), Some(base));
        assert_eq!(parse_rfc3339("2026-11-29T08:00:00-02:00"), Some(base));
        for bad in [
            "2026-11-29T10:00:00",
            "2026-13-29T10:00:00Z",
            "2026-11-29T25:00:00Z",
            "2026-11-29T10:00:00.Z",
            "2026-11-29T10:00:00Zx",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_takes_rfc3339_unix_seconds_and_durations() {
        let now = 1_795_946_400 * NANOS_PER_SEC;
        assert_eq!(parse_time("2026-11-29T10:00:00Z", 0).unwrap(), now);
        assert_eq!(parse_time("1795946400", 0).unwrap(), now);
        assert_eq!(parse_time("1795946400.000000250", 0).unwrap(), now + 250);
        assert_eq!(parse_time("10m", now).unwrap(), now - 600 * NANOS_PER_SEC);
        assert_eq!(
            parse_time("1h30m", now).unwrap(),
            now - 5400 * NANOS_PER_SEC
        );
        assert_eq!(parse_time("1.5h", now).unwrap(), now - 5400 * NANOS_PER_SEC);
        assert_eq!(parse_time("250ms", now).unwrap(), now - 250_000_000);
        // Without a zone: local time (this host runs in UTC unless TZ says otherwise).
        let local = parse_time("2026-11-29", 0).unwrap();
        let offset = local_offset(1_795_946_400 - 36_000);
        assert_eq!(local, (1_795_946_400 - 36_000 - offset) * NANOS_PER_SEC);
        for bad in ["", "10x", "m", "1.2.3", "2026-11-29T", "-5m", "12:00"] {
            let e = parse_time(bad, now).unwrap_err().to_string();
            assert!(
                e.contains("invalid time") && e.contains("RFC 3339"),
                "{bad}: {e}"
            );
        }
    }
}
