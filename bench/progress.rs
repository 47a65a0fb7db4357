//! Progress lines of the bench binaries, stamped with seconds since the program started.

use std::sync::OnceLock;
use std::time::Instant;

/// Seconds since the first call (call it once at start).
pub fn elapsed() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

pub fn progress(line: &str) {
    println!("[{:6.1}s] {line}", elapsed());
}
