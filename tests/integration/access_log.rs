//! Reading hubferry's access log (target `hubferry::access`, text format) from its log file.

use std::time::Duration;

use crate::hubferry::{raw_get, Hubferry};
use crate::world;

/// The access lines written so far that contain `needle`.
pub fn lines_with(hf: &Hubferry, needle: &str) -> Vec<String> {
    hf.log_text()
        .lines()
        .filter(|l| l.contains("hubferry::access") && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Waits (10 s at most) until at least `n` access lines contain `needle`, and returns them.
pub fn wait_for_lines(hf: &Hubferry, needle: &str, n: usize) -> Vec<String> {
    world::wait_for(Duration::from_secs(10), || {
        let lines = lines_with(hf, needle);
        (lines.len() >= n).then_some(lines)
    })
    .unwrap_or_else(|| lines_with(hf, needle))
}

/// Every access line containing `needle`, once all of them must have been written: a later
/// request (answered by hubferry itself) is made and its own line awaited. With one worker
/// (`--workers 1`) lines are written in the order the worker finished the requests, so any line
/// of an earlier request is in the log by then.
pub fn settled_lines(hf: &Hubferry, needle: &str) -> Vec<String> {
    static MARKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mark = format!(
        "/v2/_catalog?settled={}",
        MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let res = raw_get(&hf.addr, &mark, &[]);
    assert_eq!(res.status, 404, "the marker request");
    let marked = wait_for_lines(hf, &mark, 1);
    assert_eq!(marked.len(), 1, "no access line for the marker request");
    lines_with(hf, needle)
}

/// The status field of a text access line (`peer "METHOD target VERSION" status bytes ...`).
pub fn status_of(line: &str) -> u16 {
    line.rsplit_once("\" ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line}"))
}
