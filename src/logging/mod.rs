//! hubferry's log: env_logger reads `RUST_LOG` (default `info`) and filters; every record is
//! written by one formatter (`format`, text or JSON, values escaped where they are written)
//! into a queue that a thread of its own empties (`writer`), so a slow log output never stalls
//! a worker.

pub mod escape;
pub mod format;
mod writer;

use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;

/// How lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub use format::ACCESS_TARGET;

/// Lines dropped because the log output did not keep up; exported by `metrics`.
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

static FLUSHER: OnceLock<writer::Flusher> = OnceLock::new();

/// The count of log lines dropped so far (shared: the same counter every time).
pub fn dropped_lines() -> Counter {
    DROPPED.clone()
}

/// Installs the logger: `RUST_LOG` as usual (default `info`), lines in `format` on stderr. In
/// JSON mode every line is one JSON object for log shippers; in text mode every value has its
/// control characters escaped (see `escape`), on a terminal too: a client's CR, LF or ESC can
/// neither start a line nor reach the reader's terminal.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.format(move |buf, record| {
        let time = match format {
            LogFormat::Text => buf.timestamp(),
            LogFormat::Json => buf.timestamp_millis(),
        };
        format::write_record(buf, format, &time, record)
    });
    match writer::spawn(
        std::io::stderr(),
        writer::QUEUE_LINES,
        format,
        dropped_lines(),
    ) {
        Ok((queue, flusher)) => {
            let _ = FLUSHER.set(flusher);
            builder.target(env_logger::Target::Pipe(Box::new(queue)));
        }
        // No thread to write with: write from the workers, as env_logger does by default.
        Err(err) => eprintln!("hubferry: logging without a queue: {err}"),
    }
    builder.init();
}

/// Waits, at most `timeout`, for the lines logged so far to be written: before the process
/// exits, so its last lines (why it stopped) are not lost in the queue.
pub fn flush(timeout: Duration) {
    if let Some(flusher) = FLUSHER.get() {
        flusher.flush(timeout);
    }
}
