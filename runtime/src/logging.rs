//! runc-style logs: `--log FILE` (default stderr), `--log-format text|json`, `--debug`.
//! JSON lines carry `level`, `msg` and `time`, which containerd's shims read.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
}

struct MsgVisitor(String);

impl Visit for MsgVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl Logger {
    pub fn line(&self, level: &Level, msg: &str) -> String {
        let time = crate::time::now();
        match self.format {
            Format::Json => {
                let v = serde_json::json!({"level": level_name(level), "msg": msg, "time": time});
                format!("{v}\n")
            }
            Format::Text => format!(
                "time=\"{time}\" level={} msg={:?}\n",
                level_name(level),
                msg
            ),
        }
    }
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        let line = self.line(event.metadata().level(), &v.0);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Installs the global logger. An unopenable log file falls back to stderr with a warning.
pub fn init(path: Option<&std::path::Path>, format: Format, debug: bool) {
    let mut warn = None;
    let out: Box<dyn Write + Send> = match path {
        Some(p) => match File::options().create(true).append(true).open(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                warn = Some(format!("cannot open log file {}: {e}", p.display()));
                Box::new(std::io::stderr())
            }
        },
        None => Box::new(std::io::stderr()),
    };
    let logger = Logger {
        out: Mutex::new(out),
        format,
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let _ = tracing::subscriber::set_global_default(logger);
    if let Some(w) = warn {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_level_msg_time() {
        let l = Logger {
            out: Mutex::new(Box::new(std::io::sink())),
            format: Format::Json,
            max: Level::INFO,
        };
        let line = l.line(&Level::ERROR, "container \"x\" does not exist");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container \"x\" does not exist");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
