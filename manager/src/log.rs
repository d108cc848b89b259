//! A small tracing subscriber for kapseld: `time level message key=value` lines on stderr.

use std::fmt::Write as _;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

struct Logger {
    max: Level,
}

impl Subscriber for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= self.max
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let now = crate::metadata::now_nanos();
        let mut line = Line(format!(
            "{} {:5}",
            crate::images::time::format_rfc3339(now),
            event.metadata().level().as_str().to_ascii_lowercase()
        ));
        event.record(&mut line);
        line.0.push('\n');
        let _ = std::io::stderr().lock().write_all(line.0.as_bytes());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Parses a `--log-level` value.
pub fn parse_level(s: &str) -> Option<Level> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Some(Level::ERROR),
        "warn" | "warning" => Some(Level::WARN),
        "info" => Some(Level::INFO),
        "debug" => Some(Level::DEBUG),
        "trace" => Some(Level::TRACE),
        _ => None,
    }
}

pub fn init(max: Level) {
    let _ = tracing::subscriber::set_global_default(Logger { max });
}
