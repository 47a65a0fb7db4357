//! Password checks in managed mode, made safe to offer to the internet. bcrypt is slow on
//! purpose (tens of milliseconds a check), so an open `/token` is a way to burn the mirror's
//! CPU and to guess passwords. Three things bound that:
//! - failures are limited per client (IPv4 address, IPv6 /64) and per user name: a burst, then
//!   a steady rate, then 429 with `Retry-After` before any bcrypt runs. A try is counted as a
//!   failure before it is checked and given back when it succeeds, so a flood of concurrent
//!   tries cannot all get in before the first one fails;
//! - at most one bcrypt check per core runs at a time, and only a few wait: beyond that, 503
//!   with `Retry-After` (the blocking thread pool no longer grows by a thread per try);
//! - a user name nobody has costs the same check as a wrong password (a dummy hash), so the
//!   time taken does not tell which names exist.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use tokio::sync::Semaphore;

use crate::auth::users::{Subject, Users};

/// Clients (and, separately, user names) whose failures are remembered; beyond it the one
/// seen longest ago is forgotten. A few MiB at most.
const TABLE_CAPACITY: usize = 65_536;
/// Longest user name counted as itself; longer ones are counted by their first bytes, so an
/// attacker's names cannot grow the table's memory.
const MAX_COUNTED_NAME: usize = 128;
/// Checks that may wait for a free core, per core.
const QUEUE_PER_CHECK: usize = 8;
/// What a client refused for a full queue is told to wait, in seconds.
const BUSY_RETRY_AFTER: u64 = 1;

/// Why a login was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong user name or password.
    Wrong,
    /// Too many failures from this client or for this user name; retry after that many
    /// seconds. `by_name` says which limit was hit.
    TooMany { retry_after: u64, by_name: bool },
    /// Every check slot and queue place is taken.
    Busy { retry_after: u64 },
}

/// Managed mode's password checks: one per process, shared by every worker.
pub struct Logins {
    users: Arc<Users>,
    /// Failures allowed per minute per client and per user name (also the burst); 0: no
    /// limit.
    per_minute: u32,
    clients: Buckets<IpAddr>,
    names: Buckets<String>,
    checks: Semaphore,
    /// Checks running or waiting for a slot.
    admitted: AtomicUsize,
    capacity: usize,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("per_minute", &self.per_minute)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Logins {
    /// `parallel` checks at once (one per core is the most bcrypt can use), with
    /// [`QUEUE_PER_CHECK`] waiting for each.
    pub fn new(users: Users, per_minute: u32, parallel: usize) -> Logins {
        let parallel = parallel.max(1);
        Logins {
            users: Arc::new(users),
            per_minute,
            clients: Buckets::new(TABLE_CAPACITY),
            names: Buckets::new(TABLE_CAPACITY),
            checks: Semaphore::new(parallel),
            admitted: AtomicUsize::new(0),
            capacity: parallel * (1 + QUEUE_PER_CHECK),
        }
    }

    /// Checks `user`'s `password` for a request from `client` (see the module comment).
    pub async fn check(
        &self,
        client: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<Subject, Refusal> {
        let client = crate::net::client_addr::limit_key(client);
        let name = counted_name(user);
        let now = Instant::now();
        let reservation = self.reserve(client, &name, now)?;
        // Static tokens are compared in constant time, without bcrypt.
        if let Some(subject) = self.users.static_token(password) {
            reservation.succeeded(self);
            return Ok(subject);
        }
        let Some(_slot) = self.admit() else {
            reservation.succeeded(self); // not a failure of the client's: nothing was checked
            return Err(Refusal::Busy {
                retry_after: BUSY_RETRY_AFTER,
            });
        };
        let permit = self
            .checks
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let users = self.users.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        let checked = actix_web::web::block(move || users.verify_password(&user, &password)).await;
        drop(permit);
        match checked {
            Ok(Some(subject)) => {
                reservation.succeeded(self);
                Ok(subject)
            }
            _ => Err(Refusal::Wrong),
        }
    }

    /// Takes one failure from the client's and the name's allowance, ahead of the check.
    fn reserve(&self, client: IpAddr, name: &str, now: Instant) -> Result<Reservation, Refusal> {
        if self.per_minute == 0 {
            return Ok(Reservation {
                client: None,
                name: None,
            });
        }
        self.clients
            .take(client, now, self.per_minute)
            .map_err(|retry_after| Refusal::TooMany {
                retry_after,
                by_name: false,
            })?;
        if let Err(retry_after) = self.names.take(name.to_owned(), now, self.per_minute) {
            self.clients.give_back(&client, self.per_minute);
            return Err(Refusal::TooMany {
                retry_after,
                by_name: true,
            });
        }
        Ok(Reservation {
            client: Some(client),
            name: Some(name.to_owned()),
        })
    }

    /// A place among the checks running or waiting, if one is free.
    fn admit(&self) -> Option<Admitted<'_>> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(&self.admitted))
    }
}

/// The user name a failure is counted against.
fn counted_name(user: &str) -> String {
    let mut end = user.len().min(MAX_COUNTED_NAME);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_owned()
}

/// A failure taken ahead of a check, given back if the check succeeds.
struct Reservation {
    client: Option<IpAddr>,
    name: Option<String>,
}

impl Reservation {
    fn succeeded(self, logins: &Logins) {
        if let Some(client) = &self.client {
            logins.clients.give_back(client, logins.per_minute);
        }
        if let Some(name) = &self.name {
            logins.names.give_back(name, logins.per_minute);
        }
    }
}

/// A check running or waiting; its place is freed when dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Failure allowances by key: token buckets holding `per_minute` failures, refilled evenly.
struct Buckets<K> {
    table: Mutex<HashMap<K, Bucket>>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_minute: u32) {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.refilled = now;
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(capacity: usize) -> Buckets<K> {
        Buckets {
            table: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Takes one failure from `key`'s allowance, or says in how many whole seconds (at least
    /// one) the next will be there.
    fn take(&self, key: K, now: Instant, per_minute: u32) -> Result<(), u64> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= self.capacity {
            // Full allowances are what a new entry would hold: forget them first, then the
            // entry refilled longest ago.
            table.retain(|_, bucket| {
                let mut refilled = *bucket;
                refilled.refill(now, per_minute);
                refilled.tokens < f64::from(per_minute)
            });
            if table.len() >= self.capacity {
                if let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, bucket)| bucket.refilled)
                    .map(|(key, _)| key.clone())
                {
                    table.remove(&oldest);
                }
            }
        }
        let bucket = table.entry(key).or_insert(Bucket {
            tokens: f64::from(per_minute),
            refilled: now,
        });
        bucket.refill(now, per_minute);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let rate = f64::from(per_minute) / 60.0;
        Err((((1.0 - bucket.tokens) / rate).ceil() as u64).max(1))
    }

    fn give_back(&self, key: &K, per_minute: u32) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = table.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(per_minute));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::Secret;
    use std::time::Duration;

    fn users() -> Users {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Users::from_htpasswd(&format!("alice:{hash}\n"), vec![Secret::new("tok")]).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_bucket_allows_a_burst_then_a_steady_rate() {
        let buckets = Buckets::new(10);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take("k", start, 3), Ok(()));
        }
        assert_eq!(buckets.take("k", start, 3), Err(20));
        buckets.give_back(&"k", 3);
        assert_eq!(buckets.take("k", start, 3), Ok(()));
        assert_eq!(
            buckets.take("k", start + Duration::from_secs(20), 3),
            Ok(())
        );
        assert!(buckets
            .take("k", start + Duration::from_secs(20), 3)
            .is_err());
    }

    #[test]
    fn the_tables_stay_bounded_under_a_flood_of_keys() {
        let buckets = Buckets::new(8);
        let now = Instant::now();
        for i in 0..1000u32 {
            let _ = buckets.take(i, now + Duration::from_millis(u64::from(i)), 5);
        }
        assert!(buckets.len() <= 8, "{}", buckets.len());
    }

    #[actix_rt::test]
    async fn failures_are_limited_per_client_and_per_name_and_success_costs_nothing() {
        let logins = Logins::new(users(), 3, 2);
        let attacker = ip("192.0.2.1");
        for name in ["a", "b", "c"] {
            assert_eq!(
                logins.check(attacker, name, "wrong").await,
                Err(Refusal::Wrong)
            );
        }
        assert!(matches!(
            logins.check(attacker, "alice", "s3cret").await,
            Err(Refusal::TooMany { by_name: false, .. })
        ));
        // Another client logs in as often as it likes: a success gives its try back.
        let friend = ip("198.51.100.7");
        for _ in 0..5 {
            assert_eq!(
                logins.check(friend, "alice", "s3cret").await,
                Ok(Subject::User("alice".into()))
            );
        }
        // Failures from many addresses against one name run into the name's limit.
        for i in 0..3 {
            assert_eq!(
                logins
                    .check(ip(&format!("203.0.113.{i}")), "alice", "wrong")
                    .await,
                Err(Refusal::Wrong)
            );
        }
        assert!(matches!(
            logins.check(ip("203.0.113.9"), "alice", "wrong").await,
            Err(Refusal::TooMany { by_name: true, .. })
        ));
        // Static tokens need no bcrypt.
        assert_eq!(
            logins.check(ip("198.51.100.1"), "any", "tok").await,
            Ok(Subject::Token(0))
        );
    }

    #[actix_rt::test]
    async fn the_queue_is_bounded() {
        let logins = Logins::new(users(), 0, 1);
        let held: Vec<_> = (0..logins.capacity)
            .map(|_| logins.admit().unwrap())
            .collect();
        assert_eq!(
            logins.check(ip("192.0.2.1"), "alice", "s3cret").await,
            Err(Refusal::Busy {
                retry_after: BUSY_RETRY_AFTER
            })
        );
        drop(held);
        assert!(logins
            .check(ip("192.0.2.1"), "alice", "s3cret")
            .await
            .is_ok());
    }

    #[test]
    fn long_names_are_counted_by_their_start() {
        let long = "é".repeat(200);
        let counted = counted_name(&long);
        assert!(counted.len() <= MAX_COUNTED_NAME && long.starts_with(&counted));
    }
}
