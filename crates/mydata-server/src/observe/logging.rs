//! The log subscriber of `mydata serve`: `tracing` events, and the `log` records of the
//! crates that use the `log` macros (bridged by `tracing-log`), filtered by `RUST_LOG`
//! (`EnvFilter` syntax), written to standard error as human-readable lines or as JSON objects.
//!
//! Cost (spec `operations.md`, measured with the `flow_load` bench): an event is formatted on
//! the thread that emits it into a per-thread buffer ([`JsonLine`] writes JSON without an
//! intermediate value), then appended to a queue that a writer thread ([`Background`]) empties
//! in batches, one write each. Request threads never wait for the terminal or the disk and make
//! no system call for a line, only wait for a full queue: at most [`QUEUE_BYTES`] wait, and
//! beyond that the emitting thread blocks until the writer catches up. Lines are never dropped
//! (the transaction steps are the operator's record).

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::error::{ServerError, ServerResult};

/// How log lines are written (`log_format`, `MYDATA_LOG_FORMAT`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (`message`, `event`,
    /// `tx`, `client_id`, …).
    Json,
}

impl FromStr for LogFormat {
    type Err = ServerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(ServerError::Config(format!(
                "log_format: expected human or json, not {other:?}"
            ))),
        }
    }
}

/// The filter when `RUST_LOG` is not set: the platform's own events at `info`, everything
/// else at `warn`.
pub const DEFAULT_FILTER: &str = "warn,mydata=info,mydata_server=info,mydata_cli=info";

/// The filter from `RUST_LOG`, or `default` when it is unset or empty. A `RUST_LOG` that does
/// not parse is an error naming it.
pub fn filter(default: &str) -> ServerResult<EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(v.trim()).map_err(|e| ServerError::Config(format!("RUST_LOG: {e}")))
        }
        _ => EnvFilter::try_new(default).map_err(|e| ServerError::Config(format!("filter: {e}"))),
    }
}

/// At most this many bytes of log lines (about 13,000 JSON lines) wait for the writer thread;
/// an event emitted when they are full waits for room (lines are never dropped).
pub const QUEUE_BYTES: usize = 4 << 20;

/// After the first line that finds the writer thread idle, it waits this long for more before
/// it writes, so that a burst is one write and one wake-up, not one per line.
const GATHER: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Pending {
    /// Lines not written yet.
    bytes: Vec<u8>,
    /// The writer thread waits for lines (an emitter that adds the first line wakes it).
    writer_idle: bool,
    /// Threads waiting for room or for a flush.
    waiting: usize,
    /// Flushes asked for, and done (the writer's count of the asked ones it has written).
    flush_asked: u64,
    flushed: u64,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    /// The writer thread waits here for lines or a flush request.
    wake: Condvar,
    /// Emitters wait here for room, flushers for their flush.
    room: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`MakeWriter`] that appends each formatted event to a queue that a writer thread empties
/// into the output it owns (standard error, a file): one lock and one copy per line on the
/// emitting thread, no system call; the writer thread is woken only by the first line after it
/// went idle, and writes what gathered in one call. Cloning shares the thread.
#[derive(Clone)]
pub struct Background {
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish_non_exhaustive()
    }
}

/// Flushes the [`Background`] writer when dropped: what was logged before is written out.
#[must_use = "dropping the guard at once flushes nothing later; keep it until the process ends"]
#[derive(Debug)]
pub struct LogGuard {
    writer: Background,
}

impl LogGuard {
    /// Waits (at most `limit`) until every line queued so far is written and flushed; false
    /// when the writer did not finish in time.
    pub fn flush(&self, limit: Duration) -> bool {
        self.writer.flush(limit)
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.writer.flush(Duration::from_secs(5));
    }
}

impl Background {
    /// Starts the writer thread over `out`; the guard flushes it when dropped.
    pub fn start<W: std::io::Write + Send + 'static>(out: W) -> std::io::Result<(Self, LogGuard)> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        std::thread::Builder::new()
            .name("mydata-log".into())
            .spawn(move || write_loop(&q, out))?;
        let writer = Background { queue };
        Ok((writer.clone(), LogGuard { writer }))
    }

    /// Appends one formatted line, waiting while the queue is full.
    fn push(&self, line: &[u8]) {
        let q = &self.queue;
        let mut p = q.lock();
        while p.bytes.len() >= QUEUE_BYTES {
            p.waiting += 1;
            p = q.room.wait(p).unwrap_or_else(|e| e.into_inner());
            p.waiting -= 1;
        }
        p.bytes.extend_from_slice(line);
        if p.writer_idle {
            p.writer_idle = false;
            drop(p);
            q.wake.notify_one();
        }
    }

    fn flush(&self, limit: Duration) -> bool {
        let q = &self.queue;
        let deadline = std::time::Instant::now() + limit;
        let mut p = q.lock();
        p.flush_asked += 1;
        let target = p.flush_asked;
        if p.writer_idle {
            p.writer_idle = false;
            q.wake.notify_one();
        }
        while p.flushed < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            p.waiting += 1;
            p = q
                .room
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            p.waiting -= 1;
        }
        true
    }
}

fn write_loop<W: std::io::Write>(q: &Queue, mut out: W) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut p = q.lock();
            while p.bytes.is_empty() && p.flush_asked == p.flushed {
                p.writer_idle = true;
                p = q.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writer_idle = false;
        }
        // Lines that come meanwhile join this batch without waking anyone.
        std::thread::sleep(GATHER);
        let (asked, waiting) = {
            let mut p = q.lock();
            std::mem::swap(&mut p.bytes, &mut batch);
            (p.flush_asked, p.waiting)
        };
        if waiting > 0 {
            q.room.notify_all();
        }
        // Errors are dropped: there is nowhere left to report them.
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        if batch.capacity() > QUEUE_BYTES {
            batch = Vec::with_capacity(64 * 1024);
        }
        let mut p = q.lock();
        if asked > p.flushed {
            p.flushed = asked;
            if p.waiting > 0 {
                drop(p);
                q.room.notify_all();
            }
        }
    }
}

/// One event's line on its way to the writer thread.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a Background,
}

impl std::io::Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Background {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self }
    }
}

/// The JSON line format: `timestamp` (UTC, RFC 3339 with microseconds), `level`, `fields` (the
/// event's fields, `message` among them; a `log` record's `log.*` fields left out) and `target`,
/// written straight into the line without building a JSON value.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_str("\",\"fields\":{")?;
        let mut fields = JsonFields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("},\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn write_timestamp(w: &mut impl std::fmt::Write, t: SystemTime) -> std::fmt::Result {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    let day = mydata_protocol::date::CivilDate::from_days_since_epoch(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        day.year(),
        day.month(),
        day.day(),
        s / 3600,
        s / 60 % 60,
        s % 60,
        since.subsec_micros()
    )
}

/// A JSON string literal of `s`.
fn write_json_str(w: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given as the inside of a JSON string (escaping as it goes, no buffer).
struct Escaped<'w, W: std::fmt::Write>(&'w mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc: Option<&str> = match b {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                0..=0x1f => None,
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            match esc {
                Some(e) => self.0.write_str(e)?,
                None => write!(self.0, "\\u{b:04x}")?,
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl JsonFields<'_, '_> {
    /// Writes `"name":` (with the comma before it when needed); false for a field left out.
    fn key(&mut self, field: &tracing::field::Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        let sep = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .w
            .write_str(sep)
            .and_then(|()| write_json_str(self.w, field.name()))
            .and_then(|()| self.w.write_char(':'));
        self.result.is_ok()
    }

    fn raw(&mut self, field: &tracing::field::Field, v: std::fmt::Arguments<'_>) {
        if self.key(field) {
            self.result = self.w.write_fmt(v);
        }
    }
}

impl tracing::field::Visit for JsonFields<'_, '_> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if self.key(field) {
            self.result = write_json_str(self.w, value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.key(field) {
            self.result = self
                .w
                .write_char('"')
                .and_then(|()| write!(Escaped(self.w), "{value:?}"))
                .and_then(|()| self.w.write_char('"'));
        }
    }
}

/// Installs the process-wide subscriber writing to standard error through a [`Background`]
/// writer, with `RUST_LOG` (or `default`) as its filter, and routes the `log` macros to it.
/// Fails when a subscriber or a logger is already installed. Keep the guard until the end:
/// dropping it flushes what is queued.
pub fn init(format: LogFormat, default: &str) -> ServerResult<LogGuard> {
    init_to(format, default, std::io::stderr())
}

/// [`init`] writing to `out` (the flow_load bench writes to a file).
pub fn init_to<W: std::io::Write + Send + 'static>(
    format: LogFormat,
    default: &str,
    out: W,
) -> ServerResult<LogGuard> {
    let (writer, guard) = Background::start(out)
        .map_err(|e| ServerError::Config(format!("log writer thread: {e}")))?;
    init_with_writer(format, default, writer)?;
    Ok(guard)
}

/// [`init`] writing each formatted event to a writer of `writer` on the emitting thread.
pub fn init_with_writer<W>(format: LogFormat, default: &str, writer: W) -> ServerResult<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(default)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
    installed.map_err(|e| ServerError::Config(format!("log subscriber: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_refused() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(" Human ".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default(), LogFormat::Human);
    }

    /// A writer of lines shared with the test.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_go_through_the_writer_thread_and_parse() {
        let out = Shared::default();
        let (writer, guard) = Background::start(out.clone()).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_writer(writer)
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "mydata::tx",
                event = "consent",
                tx = %"0b7c",
                agreed = true,
                n = 3u64,
                d = -2i64,
                ms = 1.5f64,
                odd = "quote \" back\\ nl\n tab\t bell\u{7} 中文",
                "consent given {}",
                7
            );
            tracing::debug!(target: "mydata::tx", "filtered out");
        });
        assert!(guard.flush(Duration::from_secs(5)));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "mydata::tx");
        let f = &v["fields"];
        assert_eq!(f["message"], "consent given 7");
        assert_eq!(f["event"], "consent");
        assert_eq!(f["tx"], "0b7c");
        assert_eq!(f["agreed"], true);
        assert_eq!((f["n"].as_u64(), f["d"].as_i64()), (Some(3), Some(-2)));
        assert_eq!(f["ms"].as_f64(), Some(1.5));
        assert_eq!(f["odd"], "quote \" back\\ nl\n tab\t bell\u{7} 中文");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[10..11], &ts[26..]), (27, "T", "Z"), "{ts}");
    }

    #[test]
    fn lines_from_many_threads_come_out_whole_and_all_of_them() {
        let out = Shared::default();
        let (writer, guard) = Background::start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let line = format!(
                            "{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n",
                            "x".repeat(i % 300)
                        );
                        std::io::Write::write_all(&mut w.make_writer(), line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(guard.flush(Duration::from_secs(10)));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(seen.insert((v["t"].as_u64(), v["i"].as_u64())), "{line}");
        }
        assert_eq!(seen.len(), 8_000);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut s = String::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_672_300_671_749);
        write_timestamp(&mut s, t).unwrap();
        assert_eq!(s, "2026-12-07T19:38:20.671749Z");
    }

    #[test]
    fn default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }
}
