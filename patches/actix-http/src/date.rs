use std::{
    cell::Cell,
    fmt::{self, Write},
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    task::{spawn_local, JoinHandle},
    time::interval,
};

/// "Thu, 01 Jan 1970 00:00:00 GMT".len()
pub(crate) const DATE_VALUE_LENGTH: usize = 29;

#[derive(Clone, Copy)]
pub(crate) struct Date {
    pub(crate) bytes: [u8; DATE_VALUE_LENGTH],
    pos: usize,
}

impl Date {
    fn new() -> Date {
        let mut date = Date {
            bytes: [0; DATE_VALUE_LENGTH],
            pos: 0,
        };
        date.update();
        date
    }

    fn update(&mut self) {
        self.pos = 0;
        write!(self, "{}", httpdate::HttpDate::from(SystemTime::now())).unwrap();
    }
}

impl fmt::Write for Date {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let len = s.len();
        self.bytes[self.pos..self.pos + len].copy_from_slice(s.as_bytes());
        self.pos += len;
        Ok(())
    }
}

/// hubferry: how often the date and instant are refreshed.
const REFRESH: Duration = Duration::from_millis(500);

/// Service for update Date and Instant periodically at 500 millis interval.
pub(crate) struct DateService {
    current: Rc<Cell<(Date, Instant)>>,
    /// hubferry: the task refreshing `current`; `None` for a service that refreshes on use
    /// ([`DateService::on_demand`]).
    handle: Option<JoinHandle<()>>,
}

thread_local! {
    /// hubferry: the date and instant shared by this thread's on-demand services.
    static ON_DEMAND: Rc<Cell<(Date, Instant)>> = Rc::new(Cell::new((Date::new(), Instant::now())));
}

/// hubferry: whether a date taken at `taken` is due for a refresh at `now`.
fn refresh_due(taken: Instant, now: Instant) -> bool {
    now.saturating_duration_since(taken) >= REFRESH
}

impl DateService {
    pub(crate) fn new() -> Self {
        // shared date and timer for DateService and update async task.
        let current = Rc::new(Cell::new((Date::new(), Instant::now())));
        let current_clone = Rc::clone(&current);
        // spawn an async task sleep for 500 millis and update current date/timer in a loop.
        // handle is used to stop the task on DateService drop.
        let handle = spawn_local(async move {
            #[cfg(test)]
            let _notify = crate::notify_on_drop::NotifyOnDrop::new();

            let mut interval = interval(REFRESH);
            loop {
                let now = interval.tick().await;
                let date = Date::new();
                current_clone.set((date, now.into_std()));
            }
        });

        DateService {
            current,
            handle: Some(handle),
        }
    }

    /// hubferry: a service with no task of its own: the date is refreshed when it is used and 500 ms old,
    /// from a copy shared by the thread. For the HTTP/1.1 client, which makes a codec (and so a
    /// service) for every request: a task and a timer each time cost a spawn, a timer
    /// registration and a wake-up of the runtime's driver (an eventfd write) per request.
    pub(crate) fn on_demand() -> Self {
        DateService {
            current: ON_DEMAND.with(Rc::clone),
            handle: None,
        }
    }

    /// hubferry: the current date and instant, refreshed first if this service refreshes on use.
    fn current(&self) -> (Date, Instant) {
        let current = self.current.get();
        if self.handle.is_none() {
            let now = Instant::now();
            if refresh_due(current.1, now) {
                let fresh = (Date::new(), now);
                self.current.set(fresh);
                return fresh;
            }
        }
        current
    }

    pub(crate) fn now(&self) -> Instant {
        self.current().1
    }

    pub(crate) fn with_date<F: FnMut(&Date)>(&self, mut f: F) {
        f(&self.current().0);
    }
}

impl fmt::Debug for DateService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateService").finish_non_exhaustive()
    }
}

impl Drop for DateService {
    fn drop(&mut self) {
        // stop the timer update async task on drop (hubferry: if it has one).
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// hubferry: tests of the on-demand service.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_on_demand_service_needs_no_runtime_and_tells_the_date() {
        // Outside any runtime: `DateService::new` would panic here (spawn_local).
        let service = DateService::on_demand();
        let mut text = String::new();
        service.with_date(|date| text = String::from_utf8(date.bytes.to_vec()).unwrap());
        let parsed = httpdate::parse_http_date(&text).unwrap();
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age < Duration::from_secs(5), "{text}");
    }

    #[test]
    fn an_on_demand_date_is_refreshed_once_500_ms_old() {
        let taken = Instant::now();
        assert!(!refresh_due(taken, taken));
        assert!(!refresh_due(taken, taken + Duration::from_millis(499)));
        assert!(refresh_due(taken, taken + REFRESH));
        // A clock read before `taken` (another thread's copy) is not a reason to refresh.
        assert!(!refresh_due(taken + Duration::from_secs(1), taken));
    }

    #[test]
    fn on_demand_services_of_a_thread_share_one_date() {
        let a = DateService::on_demand();
        let b = DateService::on_demand();
        assert!(Rc::ptr_eq(&a.current, &b.current));
    }
}
