//! How a log line is written: the timestamp in `LOG_TIMEZONE`, and the text line when the output
//! is not a terminal (a file, a pipe, a container's log driver).
//!
//! Both are written by hand on purpose. The request line is logged once per request, and
//! tracing-subscriber's default text format styles every field name through `nu_ansi_term` even
//! with colours off, and chrono re-reads its format string for every timestamp: together ~20 k
//! instructions per request, as much as routing it. The line keeps the default format's layout
//! (`{timestamp} {level} {message} {field}={value}…`), so readers of the logs see no change.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use chrono::{DateTime, Local, Offset, TimeZone, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log timestamps (`2026-12-07T03:04:05.123456+05:30`) in `LOG_TIMEZONE`, or in local time.
pub struct Timestamp(pub Option<chrono_tz::Tz>);

/// The current second's text up to the fraction, and the offset after it, per thread.
struct SecondText {
    zone: Option<chrono_tz::Tz>,
    second: i64,
    head: String,
    offset: String,
}

thread_local! {
    static SECOND: RefCell<Option<SecondText>> = const { RefCell::new(None) };
}

impl Timestamp {
    /// The second's text, and the zone's offset, as `%Y-%m-%dT%H:%M:%S` and `%:z`.
    fn second_text<Tz: TimeZone>(at: DateTime<Tz>) -> (String, String)
    where
        Tz::Offset: fmt::Display,
    {
        let head = at.format("%Y-%m-%dT%H:%M:%S").to_string();
        let offset = at.offset().fix().to_string();
        (head, offset)
    }
}

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = Utc::now();
        let second = now.timestamp();
        SECOND.with(|cell| {
            let mut cached = cell.borrow_mut();
            // A new second (or a zone change at a DST boundary, which falls on one) is formatted
            // once; the rest of the second reuses it.
            if cached.as_ref().is_none_or(|c| c.second != second || c.zone != self.0) {
                let (head, offset) = match self.0 {
                    Some(tz) => Self::second_text(now.with_timezone(&tz)),
                    None => Self::second_text(now.with_timezone(&Local)),
                };
                *cached = Some(SecondText {
                    zone: self.0,
                    second,
                    head,
                    offset,
                });
            }
            let c = cached.as_ref().ok_or(fmt::Error)?;
            write!(w, "{}.{:06}{}", c.head, now.timestamp_subsec_micros(), c.offset)
        })
    }
}

/// The text line: `{timestamp} {level} {spans: }{message} {field}={value}…`, as the default format
/// writes it with colours and targets off.
pub struct PlainLine {
    pub timer: Timestamp,
}

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.timer.format_time(&mut w).is_err() {
            w.write_str("<unknown time>")?;
        }
        w.write_str(match *event.metadata().level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        let mut in_span = false;
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            w.write_str(span.name())?;
            in_span = true;
            let ext = span.extensions();
            if let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                if !fields.is_empty() {
                    write!(w, "{{{fields}}}")?;
                }
            }
            w.write_char(':')?;
        }
        if in_span {
            w.write_char(' ')?;
        }
        let mut fields = FieldWriter {
            w: &mut w,
            result: Ok(()),
            first: true,
        };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// Writes an event's fields as the default format does: the message bare, then `name=value`
/// with each value's `Debug` form (strings quoted), separated by spaces.
struct FieldWriter<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl FieldWriter<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let name = field.name();
        // A `log` record's metadata, which the line already shows as its level.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.w.write_char(' ')?;
            }
            self.first = false;
            if name != "message" {
                self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.w.write_char('=')?;
            }
            value(self.w)
        })();
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, |w| write_escaped(w, value));
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            write_escaped(w, &value.to_string())?;
            let mut source = value.source();
            if source.is_some() {
                write!(w, " {}.sources=[", field.name())?;
            }
            let mut first = true;
            while let Some(s) = source {
                if !first {
                    w.write_str(", ")?;
                }
                first = false;
                write_escaped(w, &s.to_string())?;
                source = s.source();
            }
            if !first {
                w.write_char(']')?;
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // A formatted message (`info!("{x}")`) arrives here: escaped as text is.
            self.field(field, |w| write!(Escaping(w), "{value:?}"));
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }
}

/// The JSON line (`LOG_FORMAT=json`): `{"timestamp":…,"level":…,"fields":{…}}` as
/// tracing-subscriber's JSON format writes it, each value as its serde form (strings, numbers,
/// booleans; anything else its `Debug` text). An event inside a span is left to that format, which
/// also writes the span.
pub struct JsonLine {
    pub timer: Timestamp,
    pub in_span: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json, Timestamp>,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if event.parent().is_some() || ctx.lookup_current().is_some() {
            return self.in_span.format_event(ctx, w, event);
        }
        w.write_str("{\"timestamp\":\"")?;
        // The timestamp's characters (digits, `-`, `:`, `.`, `+`, `T`) need no escaping.
        self.timer.format_time(&mut w)?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(event.metadata().level().as_str())?;
        w.write_str("\",\"fields\":{")?;
        let mut fields = JsonFields {
            w: &mut w,
            result: Ok(()),
            first: true,
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("}}\n")
    }
}

/// Writes an event's fields as JSON members, in the order they were given.
struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl JsonFields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.w.write_char(',')?;
            }
            self.first = false;
            json_string(self.w, field.name())?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| json_string(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |w| json_value(w, &value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| json_string(w, &value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| json_string(w, &format!("{value:?}")));
    }
}

/// A string as JSON. Names and most values need no escaping and are written as they are; the
/// rest are escaped by serde_json.
fn json_string(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        w.write_char('"')?;
        w.write_str(text)?;
        return w.write_char('"');
    }
    json_value(w, text)
}

fn json_value<T: serde::Serialize + ?Sized>(w: &mut Writer<'_>, value: &T) -> fmt::Result {
    serde_json::to_writer(Utf8Out(w), value).map_err(|_| fmt::Error)
}

/// serde_json writes bytes, the line is text: what serde_json writes is always whole UTF-8.
struct Utf8Out<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for Utf8Out<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Passes what is written through `write_escaped`.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// Text with the characters a terminal would act on (escape sequences, bells, C1 controls)
/// shown as escapes, so a logged value cannot rewrite the operator's screen.
fn write_escaped(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    let unsafe_char = |c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
    if !text.contains(unsafe_char) {
        return w.write_str(text);
    }
    for c in text.chars() {
        match c {
            '\u{80}'..='\u{9f}' => write!(w, "\\u{{{:x}}}", c as u32)?,
            c if unsafe_char(c) => write!(w, "\\x{:02x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Copy, PartialEq)]
    enum Format {
        Plain,
        DefaultText,
        Json,
        DefaultJson,
    }

    /// What a subscriber writing `format` wrote for the events `f` logs (the defaults are
    /// tracing-subscriber's formats, as the gateway would set them up).
    fn written(format: Format, f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let out = sink.clone();
        let tz = || Timestamp(Some(chrono_tz::Asia::Kolkata));
        let builder = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_target(false)
            .with_timer(tz());
        match format {
            Format::Plain => {
                let s = builder.event_format(PlainLine { timer: tz() }).finish();
                tracing::subscriber::with_default(s, f)
            }
            Format::DefaultText => tracing::subscriber::with_default(builder.finish(), f),
            Format::Json => {
                let s = builder
                    .json()
                    .event_format(JsonLine {
                        timer: tz(),
                        in_span: tracing_subscriber::fmt::format()
                            .json()
                            .with_target(false)
                            .with_timer(tz()),
                    })
                    .finish();
                tracing::subscriber::with_default(s, f)
            }
            Format::DefaultJson => tracing::subscriber::with_default(builder.json().finish(), f),
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn lines_of(f: impl FnOnce()) -> String {
        written(Format::Plain, f)
    }

    /// The same events as both formats write them, timestamps cut off.
    #[test]
    fn matches_the_default_format() {
        let events = || {
            tracing::info!(request_id = %"r-9", client = "te\"ster", n = 7u64, ok = false, "request");
            tracing::error!(error = &std::fmt::Error as &dyn std::error::Error, "failed: {}", 3);
            tracing::warn!(list = ?vec!["a", "b"], r#type = "x", "\u{7}bell and \u{85}next line");
            // The fields a `log` record (Pingora's) arrives with.
            tracing::warn!(log.target = "pingora_core", log.line = 7u64, "upstream closed");
        };
        let cut = |text: String| text.lines().map(|l| l[32..].to_string()).collect::<Vec<_>>();
        let ours = cut(written(Format::Plain, events));
        assert_eq!(ours.len(), 4);
        assert_eq!(ours, cut(written(Format::DefaultText, events)));
        assert_eq!(
            ours[3], "  WARN upstream closed",
            "a log record's metadata fields are not repeated"
        );
        // JSON: the same members with the same values; the timestamps compared by their shape.
        let parsed = |text: String| {
            text.lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                    let stamp = v["timestamp"].as_str().unwrap().to_string();
                    assert!(stamp.len() == 32 && stamp.ends_with("+05:30"), "{stamp}");
                    v["timestamp"] = serde_json::Value::Null;
                    v
                })
                .collect::<Vec<_>>()
        };
        let ours = parsed(written(Format::Json, events));
        assert_eq!(ours.len(), 4);
        assert_eq!(ours, parsed(written(Format::DefaultJson, events)));
        // Inside a span, the span is written too.
        let in_span = || {
            let span = tracing::info_span!("admin", user = "u1");
            let _entered = span.enter();
            tracing::info!(status = 200u64, "done");
        };
        assert_eq!(
            parsed(written(Format::Json, in_span)),
            parsed(written(Format::DefaultJson, in_span))
        );
        assert_eq!(
            cut(written(Format::Plain, in_span)),
            cut(written(Format::DefaultText, in_span))
        );
    }

    #[test]
    fn writes_the_default_layout() {
        let text = lines_of(|| {
            tracing::info!(
                request_id = %"req-1",
                client = "tester",
                attempts = 2u64,
                delta = -3i64,
                streamed = true,
                error = "-",
                "request"
            );
            tracing::warn!(up = ?Some(1), "upstream {} is \x1b[31mred", "alpha");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        // 2026-12-07T08:34:05.123456+05:30
        let (stamp, rest) = lines[0].split_at(32);
        assert!(stamp.ends_with("+05:30") && stamp.as_bytes()[19] == b'.', "{stamp}");
        assert_eq!(
            rest,
            "  INFO request request_id=req-1 client=\"tester\" attempts=2 delta=-3 streamed=true error=\"-\""
        );
        assert_eq!(&lines[1][32..], "  WARN upstream alpha is \\x1b[31mred up=Some(1)");
    }

    /// Two zones in one second on one thread: each with its own offset.
    #[test]
    fn each_zone_has_its_own_text() {
        let stamp = |tz| {
            let mut text = String::new();
            Timestamp(Some(tz)).format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        for _ in 0..2 {
            assert!(stamp(chrono_tz::Asia::Kolkata).ends_with("+05:30"));
            assert!(stamp(chrono_tz::UTC).ends_with("+00:00"));
        }
    }

    #[test]
    fn a_new_second_is_written_anew() {
        let text = lines_of(|| {
            tracing::info!("one");
            std::thread::sleep(std::time::Duration::from_millis(1100));
            tracing::info!("two");
        });
        let stamps: Vec<&str> = text.lines().map(|l| &l[..32]).collect();
        assert_eq!(stamps.len(), 2);
        assert_ne!(
            stamps[0][..19],
            stamps[1][..19],
            "a new second is written anew: {stamps:?}"
        );
    }
}
