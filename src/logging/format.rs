//! One formatter for both log formats: a record (its level, target, message and key-values) is
//! written straight into the line buffer, every value escaped where it is written, never
//! spliced into a line made by something else.
//!
//! - Text: `[time LEVEL target] message key=value ...`, the message and every value with its
//!   control characters escaped (`escape`), and a value's spaces written as `_` so each value is
//!   one word. An access record (target [`ACCESS_TARGET`]) opens with the common log format's
//!   fields instead of a message: `client "METHOD target VERSION" status bytes 12.346ms`, then
//!   its other fields as `key=value`.
//! - JSON: one object a line, `time`, `level`, `target`, `message` (when there is one), then
//!   every key-value as a top-level key; strings and keys escaped by serde_json, numbers as
//!   numbers. Key-values must not be named like the first four (an access record's request
//!   target is its `path`).

use std::{fmt, io};

use log::{
    kv::{self, Key, Value, VisitSource, VisitValue},
    Record,
};
use serde::Serializer as _;

use super::escape;
use super::LogFormat;

/// The target of the access records, one per request.
pub const ACCESS_TARGET: &str = "hubferry::access";

/// Writes `record`, stamped `time`, as one line of `format`.
pub fn write_record(
    out: &mut impl io::Write,
    format: LogFormat,
    time: &dyn fmt::Display,
    record: &Record<'_>,
) -> io::Result<()> {
    match format {
        LogFormat::Text => write_text(out, time, record),
        LogFormat::Json => write_json(out, time, record),
    }
}

fn write_text(
    out: &mut impl io::Write,
    time: &dyn fmt::Display,
    record: &Record<'_>,
) -> io::Result<()> {
    write!(out, "[{time} {:<5} {}] ", record.level(), record.target())?;
    let access = record.target() == ACCESS_TARGET;
    if !access {
        escape::write_escaped(out, *record.args())?;
    }
    // One pass over the key-values: an access record's head fields come first (as
    // `middleware::access_log` writes them) and are held until the first other field, which
    // writes the head before it.
    let mut fields = TextFields {
        out: &mut *out,
        head: access.then(AccessHead::default),
        error: None,
    };
    visit(record, &mut fields, |f| f.error.take())?;
    if let Some(head) = fields.head.take() {
        head.write(out)?;
    }
    out.write_all(b"\n")
}

/// Visits `record`'s key-values with `visitor`; a failure is the I/O error `error` took from it.
fn visit<'kvs, V: VisitSource<'kvs>>(
    record: &'kvs Record<'_>,
    visitor: &mut V,
    error: impl FnOnce(&mut V) -> Option<io::Error>,
) -> io::Result<()> {
    match record.key_values().visit(visitor) {
        Ok(()) => Ok(()),
        Err(err) => Err(error(visitor).unwrap_or_else(|| io::Error::other(err.to_string()))),
    }
}

/// The fields an access record's text line opens with, in the common log format's layout,
/// until they are written.
#[derive(Default)]
struct AccessHead<'kvs> {
    client: Option<Value<'kvs>>,
    method: Option<Value<'kvs>>,
    path: Option<Value<'kvs>>,
    version: Option<Value<'kvs>>,
    status: Option<Value<'kvs>>,
    bytes: Option<Value<'kvs>>,
    duration_ms: Option<Value<'kvs>>,
}

impl<'kvs> AccessHead<'kvs> {
    /// Holds `value` when `key` is a head field (`type` is what the target says already).
    fn hold(&mut self, key: &str, value: &Value<'kvs>) -> bool {
        let slot = match key {
            "type" => return true,
            "client" => &mut self.client,
            "method" => &mut self.method,
            "path" => &mut self.path,
            "version" => &mut self.version,
            "status" => &mut self.status,
            "bytes" => &mut self.bytes,
            "duration_ms" => &mut self.duration_ms,
            _ => return false,
        };
        *slot = Some(value.clone());
        true
    }

    /// `client "METHOD target VERSION" status bytes 12.346ms`, each missing field as `-`.
    fn write(&self, out: &mut impl io::Write) -> io::Result<()> {
        write_text_value(out, self.client.as_ref(), true)?;
        out.write_all(b" \"")?;
        write_text_value(out, self.method.as_ref(), true)?;
        out.write_all(b" ")?;
        write_text_value(out, self.path.as_ref(), false)?;
        out.write_all(b" ")?;
        write_text_value(out, self.version.as_ref(), true)?;
        out.write_all(b"\" ")?;
        write_text_value(out, self.status.as_ref(), true)?;
        out.write_all(b" ")?;
        write_text_value(out, self.bytes.as_ref(), true)?;
        out.write_all(b" ")?;
        match self.duration_ms.as_ref().and_then(Value::to_f64) {
            // Whole microseconds, written as milliseconds with three decimals, as ever.
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                let micros = (ms * 1000.0).round() as u64;
                let mut digits = itoa::Buffer::new();
                out.write_all(digits.format(micros / 1000).as_bytes())?;
                let fraction = micros % 1000;
                out.write_all(&[
                    b'.',
                    b'0' + (fraction / 100) as u8,
                    b'0' + (fraction / 10 % 10) as u8,
                    b'0' + (fraction % 10) as u8,
                ])?;
                out.write_all(b"ms")
            }
            _ => out.write_all(b"-ms"),
        }
    }
}

/// ` key=value` for every key-value, after an access record's head (see `write_text`).
struct TextFields<'a, 'kvs, W> {
    out: &'a mut W,
    /// An access record's head, held until its first other field.
    head: Option<AccessHead<'kvs>>,
    error: Option<io::Error>,
}

impl<'kvs, W: io::Write> VisitSource<'kvs> for TextFields<'_, 'kvs, W> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let key = key.as_str();
        if let Some(head) = &mut self.head {
            if head.hold(key, &value) {
                return Ok(());
            }
        }
        let written = self
            .head
            .take()
            .map_or(Ok(()), |head| head.write(self.out))
            .and_then(|()| self.out.write_all(b" "))
            .and_then(|()| escape::write_str_escaped(self.out, key, true))
            .and_then(|()| self.out.write_all(b"="))
            .and_then(|()| write_text_value(self.out, Some(&value), true));
        written.map_err(|e| {
            self.error = Some(e);
            kv::Error::msg("a log line failed to write")
        })
    }
}

/// A value as text: escaped (one word if `word`), `-` when absent or null.
fn write_text_value(
    out: &mut impl io::Write,
    value: Option<&Value<'_>>,
    word: bool,
) -> io::Result<()> {
    let Some(value) = value else {
        return out.write_all(b"-");
    };
    let mut text = TextValue {
        out,
        word,
        error: None,
    };
    match value.visit(&mut text) {
        Ok(()) => Ok(()),
        Err(err) => Err(text
            .error
            .unwrap_or_else(|| io::Error::other(err.to_string()))),
    }
}

struct TextValue<'a, W> {
    out: &'a mut W,
    word: bool,
    error: Option<io::Error>,
}

impl<W: io::Write> TextValue<'_, W> {
    fn done(&mut self, written: io::Result<()>) -> Result<(), kv::Error> {
        written.map_err(|e| {
            self.error = Some(e);
            kv::Error::msg("a log line failed to write")
        })
    }
}

impl<'v, W: io::Write> VisitValue<'v> for TextValue<'_, W> {
    /// Every value but null is written as it displays: numbers, strings, and values captured
    /// by their `Display` (an IP address) alike.
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
        let written = if self.word {
            escape::write_escaped_word(self.out, format_args!("{value}"))
        } else {
            escape::write_escaped(self.out, format_args!("{value}"))
        };
        self.done(written)
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        let written = self.out.write_all(b"-");
        self.done(written)
    }

    // Strings and whole numbers, the most of every access line, without `fmt` in between.
    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        let written = escape::write_str_escaped(self.out, value, self.word);
        self.done(written)
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        let written = self
            .out
            .write_all(itoa::Buffer::new().format(value).as_bytes());
        self.done(written)
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        let written = self
            .out
            .write_all(itoa::Buffer::new().format(value).as_bytes());
        self.done(written)
    }
}

fn write_json(
    out: &mut impl io::Write,
    time: &dyn fmt::Display,
    record: &Record<'_>,
) -> io::Result<()> {
    out.write_all(b"{\"time\":")?;
    json_display(out, time)?;
    out.write_all(b",\"level\":\"")?;
    out.write_all(record.level().as_str().as_bytes())?;
    out.write_all(b"\",\"target\":")?;
    json_str(out, record.target())?;
    if record.args().as_str() != Some("") {
        out.write_all(b",\"message\":")?;
        json_display(out, record.args())?;
    }
    let mut fields = JsonFields {
        out: &mut *out,
        error: None,
    };
    visit(record, &mut fields, |f| f.error.take())?;
    out.write_all(b"}\n")
}

/// A string, escaped by serde_json.
fn json_str(out: &mut impl io::Write, text: &str) -> io::Result<()> {
    serde_json::to_writer(out, text).map_err(io::Error::from)
}

/// What `value` displays, as a JSON string escaped by serde_json while it is formatted (no
/// `String` in between).
fn json_display(out: &mut impl io::Write, value: &dyn fmt::Display) -> io::Result<()> {
    let mut serializer = serde_json::Serializer::new(out);
    (&mut serializer)
        .collect_str(value)
        .map_err(io::Error::from)
}

/// `,"key":value` for every key-value.
struct JsonFields<'a, W> {
    out: &'a mut W,
    error: Option<io::Error>,
}

impl<'kvs, W: io::Write> VisitSource<'kvs> for JsonFields<'_, W> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let written = self
            .out
            .write_all(b",")
            .and_then(|()| json_str(self.out, key.as_str()))
            .and_then(|()| self.out.write_all(b":"));
        if let Err(e) = written {
            self.error = Some(e);
            return Err(kv::Error::msg("a log line failed to write"));
        }
        let mut json = JsonValue {
            out: &mut *self.out,
            error: None,
        };
        value.visit(&mut json).inspect_err(|_| {
            self.error = json.error.take();
        })
    }
}

/// One value as JSON: numbers and booleans as such, null, and everything else a string.
struct JsonValue<'a, W> {
    out: &'a mut W,
    error: Option<io::Error>,
}

impl<W: io::Write> JsonValue<'_, W> {
    fn done(&mut self, written: io::Result<()>) -> Result<(), kv::Error> {
        written.map_err(|e| {
            self.error = Some(e);
            kv::Error::msg("a log line failed to write")
        })
    }
}

impl<'v, W: io::Write> VisitValue<'v> for JsonValue<'_, W> {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
        let written = json_display(self.out, &value);
        self.done(written)
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        let written = self.out.write_all(b"null");
        self.done(written)
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        let written = write!(self.out, "{value}");
        self.done(written)
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        let written = write!(self.out, "{value}");
        self.done(written)
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), kv::Error> {
        let written = write!(self.out, "{value}");
        self.done(written)
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), kv::Error> {
        let written = write!(self.out, "{value}");
        self.done(written)
    }

    /// Shortest form that reads back the same (serde_json's); JSON has no NaN or infinity.
    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        let written = if value.is_finite() {
            serde_json::to_writer(&mut *self.out, &value).map_err(io::Error::from)
        } else {
            self.out.write_all(b"null")
        };
        self.done(written)
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        let written = self.out.write_all(if value { b"true" } else { b"false" });
        self.done(written)
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        let written = json_str(self.out, value);
        self.done(written)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const TIME: &str = "2025-06-01T12:00:00Z";

    fn line(format: LogFormat, record: &Record<'_>) -> String {
        let mut out = Vec::new();
        write_record(&mut out, format, &TIME, record).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn message(format: LogFormat, text: &str, kvs: &[(&str, Value<'_>)]) -> String {
        line(
            format,
            &Record::builder()
                .level(log::Level::Warn)
                .target("hubferry::upstream")
                .args(format_args!("upstream said {text}"))
                .key_values(&kvs)
                .build(),
        )
    }

    /// An access record as `middleware::access_log` writes one.
    fn access(format: LogFormat, target: &str, client: Option<&IpAddr>) -> String {
        let client = client.map_or_else(Value::null, Value::from_display);
        let kvs: [(&str, Value<'_>); 14] = [
            ("type", Value::from("access")),
            ("client", client),
            ("method", Value::from("GET")),
            ("path", Value::from(target)),
            ("version", Value::from("HTTP/1.1")),
            ("status", Value::from(200u16)),
            ("bytes", Value::from(1024u64)),
            ("duration_ms", Value::from(12.346f64)),
            ("route", Value::from("registry")),
            ("outcome", Value::from("complete")),
            ("resumes", Value::from(0u32)),
            ("registry", Value::from("docker.io")),
            ("upstream", Value::from("blob CDN")),
            ("redirects", Value::from(1u32)),
        ];
        line(
            format,
            &Record::builder()
                .level(log::Level::Info)
                .target(ACCESS_TARGET)
                .args(format_args!(""))
                .key_values(&kvs)
                .build(),
        )
    }

    /// A path a client could send, with a forged line and terminal escapes in it.
    const HOSTILE: &str = "/v2/x\r\n[2025-01-01T00:00:00Z INFO  hubferry::access] 6.6.6.6 \
                           \"GET /\" 200\u{1b}[2J\u{85}\u{2028}\"}{\"status\":1,\\";

    #[test]
    fn text_access_line_keeps_its_layout() {
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            access(
                LogFormat::Text,
                "/v2/library/alpine/blobs/sha256:abc",
                Some(&client)
            ),
            "[2025-06-01T12:00:00Z INFO  hubferry::access] 192.0.2.1 \
             \"GET /v2/library/alpine/blobs/sha256:abc HTTP/1.1\" 200 1024 12.346ms \
             route=registry outcome=complete resumes=0 registry=docker.io upstream=blob_CDN \
             redirects=1\n"
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(access(LogFormat::Text, "/v2/", Some(&v6))
            .contains("] 2001:db8::1 \"GET /v2/ HTTP/1.1\" 200 "));
        assert!(access(LogFormat::Text, "/v2/", None).contains("] - \"GET /v2/ HTTP/1.1\" "));
    }

    #[test]
    fn text_durations_have_three_decimals() {
        for (ms, text) in [
            (0.005, " 0.005ms\n"),
            (1234.05, " 1234.050ms\n"),
            (7.0, " 7.000ms\n"),
        ] {
            let kvs = [("duration_ms", Value::from(ms))];
            let record = Record::builder()
                .target(ACCESS_TARGET)
                .key_values(&kvs)
                .build();
            assert!(line(LogFormat::Text, &record).contains(text), "{ms}");
        }
    }

    #[test]
    fn text_escapes_hostile_values_on_one_line() {
        let text = access(LogFormat::Text, HOSTILE, None);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.trim_end().chars().any(char::is_control), "{text}");
        assert!(text.contains(r"/v2/x\r\n[2025-01-01T00:00:00Z"), "{text}");
        assert!(text.contains(r"\x1b[2J\u{85}\u{2028}"), "{text}");
        // A key-value's spaces cannot make a field of their own.
        let text = message(
            LogFormat::Text,
            "no\n",
            &[("user", Value::from("eve status=200\r\n"))],
        );
        assert_eq!(
            text,
            "[2025-06-01T12:00:00Z WARN  hubferry::upstream] upstream said no\\n \
             user=eve_status=200\\r\\n\n"
        );
    }

    #[test]
    fn json_access_line_has_its_fields_at_the_top() {
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let text = access(
            LogFormat::Json,
            "/v2/library/alpine/manifests/1",
            Some(&client),
        );
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": TIME,
                "level": "INFO",
                "target": "hubferry::access",
                "type": "access",
                "client": "192.0.2.1",
                "method": "GET",
                "path": "/v2/library/alpine/manifests/1",
                "version": "HTTP/1.1",
                "status": 200,
                "bytes": 1024,
                "duration_ms": 12.346,
                "route": "registry",
                "outcome": "complete",
                "resumes": 0,
                "registry": "docker.io",
                "upstream": "blob CDN",
                "redirects": 1,
            })
        );
    }

    #[test]
    fn json_escapes_hostile_values_exactly() {
        let text = access(LogFormat::Json, HOSTILE, None);
        assert_eq!(text.lines().count(), 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["client"], serde_json::Value::Null);
        // Read back exactly: the JSON format is the exact copy.
        assert_eq!(value["path"], HOSTILE);
        let text = message(
            LogFormat::Json,
            "\"}\u{1b}",
            &[
                ("user", Value::from("eve\"\n")),
                ("code", Value::from(-3i64)),
            ],
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["message"], "upstream said \"}\u{1b}");
        assert_eq!(value["user"], "eve\"\n");
        assert_eq!(value["code"], -3);
        assert_eq!(value["level"], "WARN");
    }

    #[test]
    fn json_numbers_stay_json() {
        let kvs = [
            ("nan", Value::from(f64::NAN)),
            ("yes", Value::from(true)),
            ("c", Value::from('"')),
        ];
        let record = Record::builder().key_values(&kvs).build();
        let value: serde_json::Value =
            serde_json::from_str(&line(LogFormat::Json, &record)).unwrap();
        assert_eq!(value["nan"], serde_json::Value::Null);
        assert_eq!(value["yes"], true);
        assert_eq!(value["c"], "\"");
        assert!(value.get("message").is_none(), "{value}");
    }
}
