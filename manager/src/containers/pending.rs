//! A stand-in for the json-file logs (`logs`, built on another branch), with its signatures:
//! reading fails with an error that names what is missing; the module replaces it when that
//! branch lands.
// The stand-ins take what the real code will read.
#![allow(dead_code)]

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0} is not built into this kapseld yet")]
pub struct Missing(pub &'static str);

pub mod logs {
    use std::path::Path;
    use std::time::Duration;

    use super::Missing;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stream {
        Stdout,
        Stderr,
    }

    impl Stream {
        pub fn as_str(self) -> &'static str {
            match self {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct Entry {
        pub stream: Stream,
        pub time: i64,
        pub log: Vec<u8>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct LogQuery {
        pub tail: Option<usize>,
        pub since: Option<i64>,
        pub until: Option<i64>,
        pub timestamps: bool,
        pub follow: bool,
        pub stdout: bool,
        pub stderr: bool,
    }

    impl LogQuery {
        pub fn matches(&self, _e: &Entry) -> bool {
            true
        }
        pub fn past_until(&self, _e: &Entry) -> bool {
            false
        }
    }

    #[derive(Debug, Clone, Default)]
    pub struct Cursor;

    impl Cursor {
        pub fn to_token(&self) -> String {
            String::new()
        }
        pub fn from_token(_t: &str) -> Result<Cursor, Missing> {
            Ok(Cursor)
        }
        pub fn seek(_logfile: &Path, _q: &LogQuery) -> Result<Cursor, Missing> {
            Ok(Cursor)
        }
    }

    #[derive(Debug, Clone, Copy, Default)]
    pub struct WriterOptions {
        pub max_size: Option<u64>,
        pub max_files: u32,
    }

    pub fn logger_uri(_logger: &Path, _logfile: &Path, _o: WriterOptions, _tty: bool) -> String {
        String::new()
    }

    pub fn read_chunk(
        _logfile: &Path,
        _cursor: &mut Cursor,
        _max_bytes: usize,
        _wait: Duration,
    ) -> Result<Vec<Entry>, Missing> {
        Err(Missing("the json-file log reader (klogs)"))
    }

    pub fn wait_writer_done(_logfile: &Path, _timeout: Duration) -> bool {
        true
    }
}
