//! The JSON line of one log event: `{"timestamp":…,"level":…,<fields>…,"target":…}`.
//!
//! The same shape tracing-subscriber's JSON formatter writes with `flatten_event`, written
//! straight into one string: a token costs two log lines, and the generic formatter (a
//! serde map per event) was about 3% of a DPoP token's server CPU.

use std::cell::RefCell;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The event format of every log layer (file and stderr).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = line(event, &[]);
        let written = writer.write_str(&line);
        // `try_with`: an event logged while this thread's locals are being torn down is
        // written all the same, only not remembered (`with` would panic there).
        let _ = FORMATTED.try_with(|last| *last.borrow_mut() = Some((event_key(event), line)));
        written
    }
}

thread_local! {
    /// The line a log layer formatted for the event being dispatched on this thread, so
    /// that the audit layer, which sees the same event right after the log layers, writes
    /// the same bytes instead of formatting the event a second time (`authority.token.issued`
    /// goes to both files on every token). Keyed by the event's address, which is only
    /// unique while the event is being dispatched: [`take_formatted`] empties it on every
    /// event, so a line never outlives the dispatch of its own event.
    static FORMATTED: RefCell<Option<(usize, String)>> = const { RefCell::new(None) };
}

fn event_key(event: &Event<'_>) -> usize {
    std::ptr::from_ref(event) as usize
}

/// The line a log layer formatted for `event` (same shape as `line(event, &[])`), if one
/// did during this dispatch; empties the slot either way. Call once per event, from a
/// layer that runs after the log layers.
pub(crate) fn take_formatted(event: &Event<'_>) -> Option<String> {
    let key = event_key(event);
    FORMATTED
        .try_with(|last| last.borrow_mut().take())
        .ok()
        .flatten()
        .and_then(|(formatted_for, line)| (formatted_for == key).then_some(line))
}

/// One event as a JSON line (with its `\n`); `extra` fields (name, JSON text of the value)
/// follow the event's own (the audit stream adds the operator this way).
pub(crate) fn line(event: &Event<'_>, extra: &[(&str, String)]) -> String {
    let metadata = event.metadata();
    let mut line = String::with_capacity(384);
    line.push_str("{\"timestamp\":\"");
    push_timestamp(&mut line, time::OffsetDateTime::now_utc());
    line.push_str("\",\"level\":\"");
    line.push_str(metadata.level().as_str());
    line.push('"');
    event.record(&mut Fields { line: &mut line });
    for (name, value) in extra {
        line.push(',');
        push_string(&mut line, name);
        line.push(':');
        line.push_str(value);
    }
    line.push_str(",\"target\":");
    push_string(&mut line, metadata.target());
    line.push_str("}\n");
    line
}

/// RFC 3339 in UTC with microseconds, as `2026-11-28T17:23:18.551990Z`.
pub(crate) fn push_timestamp(line: &mut String, t: time::OffsetDateTime) {
    let _ = write!(
        line,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
}

/// A JSON string literal (RFC 8259 §7): quote, backslash and control characters escaped.
///
/// Runs of characters that need no escape are copied at once (a log line is mostly such
/// runs: ids, thumbprints, event names); checking byte by byte is safe in UTF-8, where
/// every byte of a multi-byte character is ≥ 0x80.
fn push_string(line: &mut String, text: &str) {
    line.push('"');
    let mut copied = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        line.push_str(&text[copied..at]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        copied = at + 1;
    }
    line.push_str(&text[copied..]);
    line.push('"');
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn name(&mut self, field: &Field) {
        self.line.push(',');
        push_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        push_string(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.name(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
        } else {
            self.line.push_str("null");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.name(field);
        push_string(self.line, &value.to_string());
    }

    /// `%value` fields arrive here too (their Debug is their Display).
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.name(field);
        push_string(self.line, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Escaping copies unescaped runs whole: every control character, quote and backslash,
    /// at the start, in the middle and at the end, beside multi-byte characters, reads back
    /// as the text it was.
    #[test]
    fn strings_read_back_as_written() {
        let mut samples: Vec<String> = (0u8..0x20).map(|c| format!("a{}é", c as char)).collect();
        samples.extend(
            [
                "",
                "\"",
                "\\",
                "plain",
                "\"lead",
                "trail\\",
                "x\u{7f}y",
                "日本\t語\r\n",
                "€\u{1}€",
            ]
            .map(String::from),
        );
        for text in samples {
            let mut line = String::new();
            push_string(&mut line, &text);
            let back: String =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back, text, "{line}");
            assert!(!line[1..line.len() - 1].bytes().any(|b| b < 0x20), "{line}");
        }
    }

    /// Every kind of field comes out as the JSON value a reader expects, one event per line.
    #[test]
    fn events_are_one_json_object_per_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let peer: std::net::SocketAddr = "127.0.0.1:8443".parse().unwrap();
            tracing::warn!(
                event = "authority.dpop.replay",
                tenant = "t\"1\\\n\u{1}é",
                iat = -5i64,
                count = 7u64,
                flag = true,
                ratio = 0.5f64,
                nan = f64::NAN,
                peer = %peer,
                "replayed {}", "twice"
            );
            tracing::info!(event = "authority.token.issued", exp = 1_800_000_000i64);
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "replayed twice");
        assert_eq!(first["event"], "authority.dpop.replay");
        assert_eq!(first["tenant"], "t\"1\\\n\u{1}é");
        assert_eq!(first["iat"], -5);
        assert_eq!(first["count"], 7);
        assert_eq!(first["flag"], true);
        assert_eq!(first["ratio"], 0.5);
        assert!(first["nan"].is_null());
        assert_eq!(first["peer"], "127.0.0.1:8443");
        assert_eq!(first["target"], module_path!());
        let stamp = first["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{stamp}"
        );
        assert_eq!(stamp.len(), "2026-11-28T17:23:18.551990Z".len());
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["exp"], 1_800_000_000i64);
        assert!(second.get("message").is_none());
    }
}
