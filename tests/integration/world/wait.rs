//! Waiting for something to happen: look again and again until it has, or a deadline passes.
//! Never a fixed sleep: a sleep long enough on a loaded machine is wasted time on an idle one,
//! and one short enough on an idle machine is a flaky test on a loaded one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait rests between two looks: short against the waits (seconds), long enough
/// that the looking (reading a log file, a connect) costs nothing that matters.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What `find` finds, looking every [`POLL_INTERVAL`] until it finds something; `None` once
/// `timeout` has passed. It always looks at least once, and once more at the deadline.
pub fn wait_for<T>(timeout: Duration, mut find: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find() {
            return Some(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Whether `condition` became true within `timeout` (see [`wait_for`]).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || condition().then_some(())).is_some()
}

/// [`wait_for`] inside an actix runtime: `find` may await, and the runtime keeps running (the
/// servers of the same test with it) between looks.
pub async fn wait_for_async<T, F>(timeout: Duration, mut find: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find().await {
            return Some(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        actix_rt::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

#[test]
fn a_wait_returns_what_it_finds_as_soon_as_it_is_there() {
    let mut looks = 0;
    let found = wait_for(Duration::from_secs(10), || {
        looks += 1;
        (looks == 3).then_some(looks)
    });
    assert_eq!(found, Some(3));
}

#[test]
fn a_wait_gives_up_at_its_deadline() {
    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false));
    assert!(started.elapsed() >= Duration::from_millis(100));
}
