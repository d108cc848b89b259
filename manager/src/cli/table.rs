//! Docker's output formats: tab-aligned tables, human sizes, short ids.

/// A table printed like Docker's tabwriter: each column as wide as its widest cell plus three
/// spaces, the last column unpadded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] + 3 - c.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Docker's `HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits
/// (`2.16MB`, `512B`, `7.05kB`, `1.23GB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", sig3(v), UNITS[u])
}

/// `%.3g` without exponents for 0 <= v < 1000.
fn sig3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    // Rounding may reach the next magnitude (99.95 → "100.0"): keep three digits.
    let s = if s.len() > 4 && s.contains('.') {
        let trimmed: String = s.chars().take(4).collect();
        trimmed
    } else {
        s
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Binary units for memory (`23.44GiB`), as `docker info` shows Total Memory.
pub fn human_bytes_binary(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u]).replace(".00", "")
}

/// The first 12 hex digits of a digest (Docker's short image id).
pub fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_padded_like_docker() {
        let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
        t.row(vec![
            "busybox".into(),
            "latest".into(),
            "570b1b70e906".into(),
            "56 years ago".into(),
            "2.16MB".into(),
        ]);
        t.row(vec![
            "127.0.0.1:5201/app".into(),
            "1".into(),
            "570b1b70e906".into(),
            "2 hours ago".into(),
            "2.16MB".into(),
        ]);
        assert_eq!(
            t.render(),
            "REPOSITORY           TAG      IMAGE ID       CREATED        SIZE\n\
             busybox              latest   570b1b70e906   56 years ago   2.16MB\n\
             127.0.0.1:5201/app   1        570b1b70e906   2 hours ago    2.16MB\n"
        );
    }

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(7054), "7.05kB");
        assert_eq!(human_size(2_156_000), "2.16MB");
        assert_eq!(human_size(123_456), "123kB");
        assert_eq!(human_size(1_234_567_890), "1.23GB");
        assert_eq!(human_size(99_950), "100kB");
        assert_eq!(human_bytes_binary(24 * 1024 * 1024 * 1024), "24GiB");
        assert_eq!(short_id("sha256:570b1b70e906aaaa"), "570b1b70e906");
    }
}
