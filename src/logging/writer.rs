//! Where log lines go: a bounded queue in front of a thread of its own that writes them out, so
//! a log pipe that is slow or not read at all (a stuck log shipper, a full journal, a terminal
//! on hold) never stalls a worker. A worker that logs only copies its line into the queue; when
//! the queue is full the line is dropped and counted (`hubferry_log_lines_dropped_total`), and
//! the next line that makes it into the queue is preceded by a warning saying how many lines
//! are missing there.

use std::{
    io::{self, Write},
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::metrics::counter::Counter;

use super::format;
use super::LogFormat;

/// Lines the queue holds: a few seconds of a busy mirror's access lines (about 300 bytes each,
/// so around a MiB at most) for the output to catch up before lines are dropped.
pub const QUEUE_LINES: usize = 4096;

/// How long the writing thread waits after writing out before it looks at the queue again.
/// Lines queued meanwhile wait for it without waking it: at a busy mirror's thousands of lines
/// a second, waking the thread for each line (a futex wake from the worker, a context switch,
/// a `write` per line) cost about a tenth of the CPU time of a proxied manifest request. A
/// line waits at most this long to be written.
const GATHER: Duration = Duration::from_millis(10);

/// Line buffers larger than this are not kept for reuse after a long line.
const SPARE_CAPACITY: usize = 4096;

enum Message {
    Line(Vec<u8>),
    /// Written out everything queued before: say so on this channel.
    Flush(mpsc::Sender<()>),
}

/// The logging side of the queue, handed to env_logger as its target (which calls it under a
/// lock, one formatted record per `write`).
pub struct QueueWriter {
    lines: SyncSender<Message>,
    /// Buffers of written lines, back from the writing thread: a line costs no allocation.
    spare: Receiver<Vec<u8>>,
    /// The buffer of the last line dropped, for the next one.
    kept: Option<Vec<u8>>,
    /// Lines dropped since the last one queued.
    gap: u64,
    dropped: Counter,
    format: LogFormat,
}

/// Waits for the lines queued so far to be written (see [`Flusher::flush`]).
#[derive(Clone)]
pub struct Flusher {
    lines: SyncSender<Message>,
}

/// Starts the thread that writes to `out`, behind a queue of `capacity` lines. Dropped lines
/// are counted in `dropped`; the warning about them is written in `format`.
pub fn spawn(
    out: impl Write + Send + 'static,
    capacity: usize,
    format: LogFormat,
    dropped: Counter,
) -> io::Result<(QueueWriter, Flusher)> {
    let (lines, queued) = mpsc::sync_channel(capacity);
    let (spare_out, spare) = mpsc::sync_channel(capacity);
    std::thread::Builder::new()
        .name("hubferry-log".into())
        .spawn(move || write_out(out, queued, spare_out))?;
    let writer = QueueWriter {
        lines: lines.clone(),
        spare,
        kept: None,
        gap: 0,
        dropped,
        format,
    };
    Ok((writer, Flusher { lines }))
}

/// The writing thread: lines in the order queued, as many at a time as are waiting, flushed
/// whenever the queue is empty, then a pause of [`GATHER`] for the next lines to gather. Output
/// errors (a closed pipe) lose the line, as env_logger's own targets do: there is nowhere left
/// to report them.
fn write_out(out: impl Write, queued: Receiver<Message>, spare: SyncSender<Vec<u8>>) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = queued.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(mut line) => {
                    let _ = out.write_all(&line);
                    if line.capacity() <= SPARE_CAPACITY {
                        line.clear();
                        let _ = spare.try_send(line);
                    }
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = queued.try_recv().ok();
        }
        let _ = out.flush();
        std::thread::sleep(GATHER);
    }
}

impl Write for QueueWriter {
    /// Queues `record` (one formatted record) and never waits: when the queue is full the
    /// line is dropped and counted.
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        let mut line = self
            .kept
            .take()
            .or_else(|| self.spare.try_recv().ok())
            .unwrap_or_default();
        if self.gap > 0 {
            self.write_gap_warning(&mut line);
        }
        line.extend_from_slice(record);
        match self.lines.try_send(Message::Line(line)) {
            Ok(()) => self.gap = 0,
            Err(TrySendError::Full(Message::Line(mut line))) => {
                self.gap += 1;
                self.dropped.inc();
                line.clear();
                self.kept = Some(line);
            }
            // The writing thread is gone (it cannot panic, but the process may be ending).
            Err(_) => {
                self.dropped.inc();
            }
        }
        Ok(record.len())
    }

    /// Nothing to wait for here: the writing thread flushes once it has caught up, and waiting
    /// for it would be waiting for the output.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl QueueWriter {
    /// A warning, in the log's own format, that `gap` lines are missing here.
    fn write_gap_warning(&self, line: &mut Vec<u8>) {
        let now = SystemTime::now();
        let time: &dyn std::fmt::Display = match self.format {
            LogFormat::Text => &humantime::format_rfc3339_seconds(now),
            LogFormat::Json => &humantime::format_rfc3339_millis(now),
        };
        let _ = format::write_record(
            line,
            self.format,
            time,
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("hubferry::logging")
                .args(format_args!(
                    "{} log lines dropped here: the log output did not keep up \
                     (see hubferry_log_lines_dropped_total)",
                    self.gap
                ))
                .build(),
        );
    }
}

impl Flusher {
    /// Waits, at most `timeout`, until every line queued before the call is written out: for a
    /// process about to exit, whose last lines say why.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (done, written) = mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.lines.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    message = again;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An output that takes one write, then blocks every later one until `release` is sent to.
    struct Stuck {
        entered: mpsc::Sender<()>,
        release: Receiver<()>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize) -> Vec<u8> {
        format!("[t INFO  hubferry::access] line {n}\n").into_bytes()
    }

    #[test]
    fn a_blocked_output_drops_and_counts_lines_and_never_blocks_the_logger() {
        let (entered, entering) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let stuck = Stuck {
            entered,
            release: released,
            written: written.clone(),
        };
        let dropped = Counter::default();
        let capacity = 4;
        let (mut writer, flusher) =
            spawn(stuck, capacity, LogFormat::Text, dropped.clone()).unwrap();

        // The first line is taken off the queue and its write blocks...
        writer.write_all(&line(0)).unwrap();
        entering.recv().unwrap();
        // ...so the queue takes `capacity` lines, then lines are dropped, each write returning
        // at once.
        for n in 1..=capacity {
            writer.write_all(&line(n)).unwrap();
        }
        assert_eq!(dropped.get(), 0);
        for n in capacity + 1..capacity + 11 {
            writer.write_all(&line(n)).unwrap();
        }
        assert_eq!(dropped.get(), 10);

        // The output moves again: everything queued is written, in order, and the next line
        // is preceded by a warning naming the gap.
        drop(release);
        flusher.flush(Duration::from_secs(30));
        writer.write_all(&line(99)).unwrap();
        flusher.flush(Duration::from_secs(30));
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), capacity + 3, "{written}");
        for (n, text) in lines[..=capacity].iter().enumerate() {
            assert!(text.ends_with(&format!(" line {n}")), "{written}");
        }
        assert!(
            lines[capacity + 1].contains(" WARN  hubferry::logging] 10 log lines dropped here"),
            "{written}"
        );
        assert!(lines[capacity + 2].ends_with(" line 99"), "{written}");
        assert_eq!(dropped.get(), 10);
    }

    #[test]
    fn the_gap_warning_is_json_in_json_mode() {
        let written = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut writer, flusher) = spawn(
            Shared(written.clone()),
            1,
            LogFormat::Json,
            Counter::default(),
        )
        .unwrap();
        writer.gap = 3;
        writer.write_all(b"{\"message\":\"next\"}\n").unwrap();
        flusher.flush(Duration::from_secs(30));
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{written}");
        assert_eq!(lines[0]["level"], "WARN");
        assert!(lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("3 log lines dropped here"));
        assert_eq!(lines[1]["message"], "next");
    }
}
