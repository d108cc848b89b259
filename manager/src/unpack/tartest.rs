//! A raw tar writer for tests (containerd's `archive/tartest` idea): entries are written as
//! given, hostile names included (`../x`, `/abs`), which the `tar` crate's builder refuses.

/// One tar stream being written.
#[derive(Debug, Default, Clone)]
pub struct TarWriter {
    buf: Vec<u8>,
}

/// Metadata of one entry; `Meta::default()` is root-owned, mode 0644, mtime 1e9.
#[derive(Debug, Clone)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// PAX records (`SCHILY.xattr.user.x`, `mtime`, ...), written as an `x` header first.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_000_000_000,
            pax: Vec::new(),
        }
    }
}

impl Meta {
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Meta {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Meta {
        self.mtime = mtime;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Meta {
        self.pax
            .push((format!("SCHILY.xattr.{key}"), value.to_vec()));
        self
    }
}

impl TarWriter {
    pub fn new() -> TarWriter {
        TarWriter::default()
    }

    pub fn dir(&mut self, name: &str, meta: Meta) -> &mut Self {
        self.entry(b'5', name.as_bytes(), b"", b"", &meta, (0, 0))
    }

    pub fn file(&mut self, name: &str, data: &[u8], meta: Meta) -> &mut Self {
        self.entry(b'0', name.as_bytes(), b"", data, &meta, (0, 0))
    }

    /// A root-owned symlink.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.symlink_with(name, target, Meta::mode(0o777))
    }

    pub fn symlink_with(&mut self, name: &str, target: &str, meta: Meta) -> &mut Self {
        self.entry(b'2', name.as_bytes(), target.as_bytes(), b"", &meta, (0, 0))
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            b'1',
            name.as_bytes(),
            target.as_bytes(),
            b"",
            &Meta::default(),
            (0, 0),
        )
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32, meta: Meta) -> &mut Self {
        self.entry(b'3', name.as_bytes(), b"", b"", &meta, (major, minor))
    }

    pub fn block_dev(&mut self, name: &str, major: u32, minor: u32, meta: Meta) -> &mut Self {
        self.entry(b'4', name.as_bytes(), b"", b"", &meta, (major, minor))
    }

    pub fn fifo(&mut self, name: &str, meta: Meta) -> &mut Self {
        self.entry(b'6', name.as_bytes(), b"", b"", &meta, (0, 0))
    }

    /// A whiteout of `name` in `dir` (`dir/.wh.name`).
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{}/.wh.{name}", dir.trim_end_matches('/'))
        };
        self.file(&p, b"", Meta::default())
    }

    /// Marks `dir` opaque (`dir/.wh..wh..opq`).
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let p = if dir.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{}/.wh..wh..opq", dir.trim_end_matches('/'))
        };
        self.file(&p, b"", Meta::default())
    }

    /// Any entry, names given as raw bytes (up to 100 bytes each; longer ones go to PAX).
    pub fn entry(
        &mut self,
        kind: u8,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        meta: &Meta,
        dev: (u32, u32),
    ) -> &mut Self {
        let mut pax = meta.pax.clone();
        if name.len() > 100 {
            pax.push(("path".into(), name.to_vec()));
        }
        if link.len() > 100 {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                // "<len> <key>=<value>\n", where <len> counts itself.
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            self.header(
                b'x',
                b"PaxHeaders/x",
                b"",
                body.len() as u64,
                &Meta::default(),
                (0, 0),
            );
            self.data(&body);
        }
        let short = |b: &[u8]| b[..b.len().min(100)].to_vec();
        self.header(
            kind,
            &short(name),
            &short(link),
            data.len() as u64,
            meta,
            dev,
        );
        self.data(data);
        self
    }

    fn header(&mut self, kind: u8, name: &[u8], link: &[u8], size: u64, m: &Meta, dev: (u32, u32)) {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(m.mode));
        octal(&mut h[108..116], m.uid);
        octal(&mut h[116..124], m.gid);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], m.mtime);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], u64::from(dev.0));
        octal(&mut h[337..345], u64::from(dev.1));
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.buf.extend_from_slice(&h);
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    /// The stream with its end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// Writes `v` as NUL-terminated octal filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{:0width$o}", v, width = n);
    field[..n].copy_from_slice(&s.as_bytes()[s.len() - n..]);
    field[n] = 0;
}
