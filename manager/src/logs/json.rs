//! One line of Docker's json-file format: `{"log":"...","stream":"stdout","time":"..."}`.
//!
//! JSON strings are Unicode, and Docker writes each byte that is not UTF-8 as U+FFFD, losing it.
//! We write `log` the same way (so that every JSON reader, Docker's and log shippers', reads the
//! line as Docker's), and for such a line only add a fourth field, `"raw"`, holding the exact
//! bytes in base64, which our reader prefers. (Lone surrogate escapes like `\udcff` would keep
//! the bytes in `log` itself, but strict parsers such as serde_json refuse the whole line.)

use super::Stream;

/// Append the json line (with its `\n`) for `log` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, log: &[u8], stream: Stream, time: i64) {
    out.extend_from_slice(b"{\"log\":\"");
    let mut lossy = false;
    for chunk in log.utf8_chunks() {
        escape_str(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            escape_str(out, "\u{fffd}");
            lossy = true;
        }
    }
    out.extend_from_slice(b"\",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    let mut t = String::with_capacity(30);
    super::time::write_rfc3339_nanos(&mut t, time);
    out.extend_from_slice(t.as_bytes());
    if lossy {
        out.extend_from_slice(b"\",\"raw\":\"");
        base64_encode(out, log);
    }
    out.extend_from_slice(b"\"}\n");
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(out: &mut Vec<u8>, data: &[u8]) {
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let chunks = s.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for c in chunks {
        let pad = c.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &b in &c[..4 - pad] {
            let v = B64.iter().position(|x| *x == b)? as u32;
            n = n << 6 | v;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

fn hex2(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 15)]);
}

fn escape_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                hex2(out, b);
            }
            _ => out.push(b),
        }
    }
}

/// The fields of one decoded line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub log: Vec<u8>,
    pub stream: Stream,
    pub time: i64,
}

/// Why a line could not be decoded (a torn or foreign line; the reader skips it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8, what: &'static str) -> Result<(), Malformed> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed(what))
        }
    }

    fn hex4(&mut self) -> Result<u32, Malformed> {
        let f = self
            .s
            .get(self.i..self.i + 4)
            .ok_or(Malformed("short \\u escape"))?;
        let text = std::str::from_utf8(f).map_err(|_| Malformed("bad \\u escape"))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| Malformed("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    /// A string's bytes (the opening quote not yet eaten).
    fn string(&mut self) -> Result<Vec<u8>, Malformed> {
        self.eat(b'"', "expected a string")?;
        let mut out = Vec::new();
        loop {
            let start = self.i;
            while !matches!(self.s.get(self.i), None | Some(b'"' | b'\\')) {
                self.i += 1;
            }
            out.extend_from_slice(&self.s[start..self.i]);
            match self.s.get(self.i) {
                None => return Err(Malformed("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {}
            }
            let esc = *self
                .s
                .get(self.i + 1)
                .ok_or(Malformed("unterminated string"))?;
            self.i += 2;
            let simple = match esc {
                b'"' => b'"',
                b'\\' => b'\\',
                b'/' => b'/',
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 8,
                b'f' => 12,
                b'u' => 0,
                _ => return Err(Malformed("bad escape")),
            };
            if esc != b'u' {
                out.push(simple);
                continue;
            }
            let u = self.hex4()?;
            let c = match u {
                0xd800..=0xdbff if self.s.get(self.i..self.i + 2) == Some(b"\\u") => {
                    let save = self.i;
                    self.i += 2;
                    let low = self.hex4()?;
                    if (0xdc00..=0xdfff).contains(&low) {
                        char::from_u32(0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00))
                    } else {
                        self.i = save;
                        None
                    }
                }
                _ => char::from_u32(u),
            };
            let mut buf = [0; 4];
            out.extend_from_slice(
                c.unwrap_or(char::REPLACEMENT_CHARACTER)
                    .encode_utf8(&mut buf)
                    .as_bytes(),
            );
        }
    }

    /// Skip any JSON value (fields we do not use, such as Docker's `attrs`).
    fn skip_value(&mut self, depth: u32) -> Result<(), Malformed> {
        if depth > 16 {
            return Err(Malformed("nested too deep"));
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'"') => self.string().map(drop),
            Some(&open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.s.get(self.i) == Some(&close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':', "expected ':'")?;
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(c) if *c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Malformed("expected ',' or a closing bracket")),
                    }
                }
            }
            Some(_) => {
                while !matches!(
                    self.s.get(self.i),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                ) {
                    self.i += 1;
                }
                Ok(())
            }
            None => Err(Malformed("expected a value")),
        }
    }
}

/// Decode one line (without or with its trailing newline).
pub(crate) fn decode(line: &[u8]) -> Result<Line, Malformed> {
    let mut p = Parser { s: line, i: 0 };
    p.eat(b'{', "expected '{'")?;
    let (mut log, mut stream, mut time, mut raw) = (None, None, None, None);
    p.ws();
    if p.s.get(p.i) == Some(&b'}') {
        return Err(Malformed("empty object"));
    }
    loop {
        let key = p.string()?;
        p.eat(b':', "expected ':'")?;
        match key.as_slice() {
            b"log" => log = Some(p.string()?),
            b"stream" => stream = Some(p.string()?),
            b"time" => time = Some(p.string()?),
            b"raw" => raw = Some(p.string()?),
            _ => p.skip_value(0)?,
        }
        p.ws();
        match p.s.get(p.i) {
            Some(b',') => p.i += 1,
            Some(b'}') => break,
            _ => return Err(Malformed("expected ',' or '}'")),
        }
    }
    let stream = match stream.as_deref() {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        _ => return Err(Malformed("no stream stdout or stderr")),
    };
    let time = time
        .as_deref()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(super::time::parse_rfc3339)
        .ok_or(Malformed("no RFC 3339 time"))?;
    let log = log.ok_or(Malformed("no log field"))?;
    let log = match raw {
        Some(r) => base64_decode(&r).ok_or(Malformed("raw is not base64"))?,
        None => log,
    };
    Ok(Line { log, stream, time })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(log: &[u8], stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, log, stream, 1_795_946_400_123_456_789);
        out
    }

    #[test]
    fn writes_dockers_field_order_and_time_form() {
        assert_eq!(
            String::from_utf8(line(b"hi \"there\"\n", Stream::Stdout)).unwrap(),
            "{\"log\":\"hi \\\"there\\\"\\n\",\"stream\":\"stdout\",\
             \"time\":\"2026-11-29T10:00:00.123456789Z\"}\n"
        );
        // What serde_json (a standard JSON reader) makes of it.
        let v: serde_json::Value =
            serde_json::from_slice(&line(b"tab\t\x01 \xc3\xa9\\", Stream::Stderr)).unwrap();
        assert_eq!(v["log"], "tab\t\u{1} é\\");
        assert_eq!(v["stream"], "stderr");
    }

    #[test]
    fn every_byte_sequence_comes_back_exactly() {
        let samples: Vec<Vec<u8>> = vec![
            (0..=255u8).collect(),
            b"\xff\xfe plain \xe2\x82 cut \xe2\x82\xac euro \xf0\x9f\x98\x80 face\n".to_vec(),
            "ünïcødé 🎉 \u{2028}".as_bytes().to_vec(),
            Vec::new(),
        ];
        for s in samples {
            let enc = line(&s, Stream::Stdout);
            assert_eq!(enc.iter().filter(|b| **b == b'\n').count(), 1);
            // Any JSON reader takes it, and sees what Docker would have written.
            let v: serde_json::Value = serde_json::from_slice(&enc).unwrap();
            assert_eq!(v["log"], String::from_utf8_lossy(&s).as_ref());
            assert_eq!(v.get("raw").is_some(), std::str::from_utf8(&s).is_err());
            let dec = decode(&enc).unwrap();
            assert_eq!(dec.log, s);
            assert_eq!(dec.stream, Stream::Stdout);
            assert_eq!(dec.time, 1_795_946_400_123_456_789);
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..10usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 97 + 200) as u8).collect();
            let mut enc = Vec::new();
            base64_encode(&mut enc, &data);
            assert_eq!(enc.len(), n.div_ceil(3) * 4);
            assert_eq!(base64_decode(&enc).unwrap(), data);
        }
        let mut enc = Vec::new();
        base64_encode(&mut enc, b"\xff\xfe bin\n");
        assert_eq!(enc, b"//4gYmluCg==");
        assert_eq!(base64_decode(b"abc"), None);
        assert_eq!(base64_decode(b"a*c="), None);
    }

    #[test]
    fn reads_dockers_own_lines() {
        // As dockerd writes them: short fractions, HTML-safe escapes, extra attrs.
        let d = decode(
            br#"{"log":"\u003cb\u003e \ud83d\ude00 x\n","stream":"stderr","attrs":{"a":"b","n":[1,true,null]},"time":"2026-11-29T10:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(d.log, "<b> 😀 x\n".as_bytes());
        assert_eq!(d.stream, Stream::Stderr);
        assert_eq!(d.time, 1_795_946_400_500_000_000);
        // A lone surrogate is no character: U+FFFD.
        let d =
            decode(br#"{"log":"\ud800","stream":"stdout","time":"2026-11-29T10:00:00Z"}"#).unwrap();
        assert_eq!(d.log, "\u{fffd}".as_bytes());
    }

    #[test]
    fn torn_or_foreign_lines_are_refused() {
        for bad in [
            &b"{\"log\":\"abc"[..],
            b"",
            b"{}",
            b"{\"log\":\"x\",\"stream\":\"stdin\",\"time\":\"2026-11-29T10:00:00Z\"}",
            b"{\"log\":\"x\",\"stream\":\"stdout\"}",
            b"{\"stream\":\"stdout\",\"time\":\"2026-11-29T10:00:00Z\"}",
            b"[1]",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
