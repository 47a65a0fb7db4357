//! Request filter for the mirror's routes (not the admin listener): who may use the mirror
//! (`access.allow`/`access.deny`, by the client address `client_ip` works out), how much
//! each client may ask for at once (`limits.manifests_per_minute`,
//! `limits.blob_streams_per_client`), and how many blob downloads the whole process streams at
//! once (`limits.max_streams`, sized so memory holds: see `capacity`). Refusals go through
//! `ProxyError`, so their status and registry JSON body are decided where every other error's
//! are.
//!
//! The per-client counts live in one table shared by every worker. Its size is bounded, so a
//! flood from many addresses (an IPv6 attacker has many /64s) costs a fixed amount of memory:
//! idle clients are forgotten first, then the longest-unseen client without a running
//! download; only when every entry holds a download is a new client refused (`table_full`).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Instant,
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, Method},
    middleware::Next,
    web, Error, HttpMessage,
};

use crate::{
    config::{AccessPolicy, Config},
    error::ProxyError,
    held_body::HeldBody,
    metrics::Metrics,
    net::client_addr,
    proxy::target::{self, Endpoint},
};

/// Shards of the client table, so workers seldom wait on each other's lock.
const SHARDS: usize = 16;
/// Clients one shard remembers: 16 × 4096 entries of a few dozen bytes, a few MiB at most.
const SHARD_CAPACITY: usize = 4096;
/// When a download slot frees up cannot be known; clients are told to come back after this.
const STREAM_RETRY_AFTER: u64 = 10;

/// The client address a request was judged by, for the upstream's `X-Real-IP` (only set when
/// it is not the peer, i.e. a trusted proxy forwarded the request; the access log is told too).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Shared by every worker (one per process).
pub struct Guard {
    access: AccessPolicy,
    manifests_per_minute: u32,
    blob_streams_per_client: u32,
    table: ClientTable,
    /// `limits.max_streams` (0: no cap), and the blob downloads streaming now.
    max_streams: usize,
    streams: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Guard {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Guard {
        Guard {
            access: config.access.clone(),
            manifests_per_minute: config.limits.manifests_per_minute,
            blob_streams_per_client: config.limits.blob_streams_per_client,
            table: ClientTable::new(SHARD_CAPACITY),
            max_streams: config.limits.max_streams.max(),
            streams: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Whether `client` may use the mirror at all (see [`client_addr::admitted`]).
    fn allows(&self, client: IpAddr) -> bool {
        client_addr::admitted(&self.access.allow, &self.access.deny, client)
    }

    fn limits_on(&self) -> bool {
        self.manifests_per_minute > 0 || self.blob_streams_per_client > 0 || self.max_streams > 0
    }

    /// Takes one of the process's blob download slots, or refuses: the mirror is full, not the
    /// client over its limit, so 503 (RFC 9110 §15.6.4, "temporary overload"; a load balancer
    /// may try another replica) rather than the 429 of a client limit.
    fn admit_download(self: &Arc<Self>) -> Result<Option<GlobalSlot>, (ProxyError, &'static str)> {
        let max = self.max_streams;
        if max == 0 {
            return Ok(None);
        }
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| {
                Some(GlobalSlot {
                    guard: self.clone(),
                })
            })
            .map_err(|_| {
                (
                    ProxyError::Overloaded {
                        what: "blob downloads".into(),
                        retry_after: STREAM_RETRY_AFTER,
                    },
                    "max_streams",
                )
            })
    }

    /// Counts the request against its client's limits: `Ok` with the download slot to hold
    /// while the body streams (blob downloads), or the refusal and the metric reason.
    fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        endpoint: Endpoint,
        method: &Method,
    ) -> Result<Option<StreamSlot>, (ProxyError, &'static str)> {
        let key = client_addr::limit_key(client);
        let now = Instant::now();
        let per_minute = self.manifests_per_minute;
        let too_many = |limit: String, retry_after: u64| ProxyError::TooManyRequests {
            client,
            limit,
            retry_after,
        };
        let table_full = || {
            (
                too_many("the mirror tracks too many clients".into(), 10),
                "table_full",
            )
        };
        match endpoint {
            Endpoint::Manifest if per_minute > 0 => {
                let taken = self
                    .table
                    .with_client(key, now, per_minute, |c| c.take_token(now, per_minute))
                    .ok_or_else(table_full)?;
                taken.map(|()| None).map_err(|retry_after| {
                    (
                        too_many(
                            format!("more than {per_minute} manifest requests per minute"),
                            retry_after,
                        ),
                        "manifest_rate",
                    )
                })
            }
            Endpoint::Blob if self.blob_streams_per_client > 0 && method == Method::GET => {
                let max = self.blob_streams_per_client;
                let opened = self
                    .table
                    .with_client(key, now, per_minute, |c| {
                        let open = c.streams < max;
                        if open {
                            c.streams += 1;
                        }
                        open
                    })
                    .ok_or_else(table_full)?;
                if opened {
                    Ok(Some(StreamSlot {
                        guard: self.clone(),
                        key,
                    }))
                } else {
                    Err((
                        too_many(
                            format!("more than {max} blob downloads at once"),
                            STREAM_RETRY_AFTER,
                        ),
                        "blob_streams",
                    ))
                }
            }
            _ => Ok(None),
        }
    }
}

/// What the table remembers about one client key.
#[derive(Debug, Clone, Copy)]
struct ClientState {
    /// Manifest requests left in the bucket (refilled at `per_minute / 60` a second, up to
    /// `per_minute`), as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// Blob downloads streaming right now.
    streams: u32,
    seen: Instant,
}

impl ClientState {
    fn new(now: Instant, per_minute: u32) -> ClientState {
        ClientState {
            tokens: f64::from(per_minute),
            refilled: now,
            streams: 0,
            seen: now,
        }
    }

    fn refill(&mut self, now: Instant, per_minute: u32) {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.refilled = now;
    }

    /// Takes one manifest request from the bucket, or says in how many whole seconds (at least
    /// one) the next one will be there.
    fn take_token(&mut self, now: Instant, per_minute: u32) -> Result<(), u64> {
        self.refill(now, per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let rate = f64::from(per_minute) / 60.0;
        Err((((1.0 - self.tokens) / rate).ceil() as u64).max(1))
    }

    /// Nothing to remember: no download running and a full bucket, exactly what a new entry
    /// would hold.
    fn is_idle(&self, now: Instant, per_minute: u32) -> bool {
        let mut refilled = *self;
        refilled.refill(now, per_minute);
        self.streams == 0 && refilled.tokens >= f64::from(per_minute)
    }
}

/// Client key → state, in shards, each bounded to `capacity` entries.
struct ClientTable {
    shards: Vec<Mutex<HashMap<IpAddr, ClientState>>>,
    /// Seeded per process, so which clients share a shard cannot be chosen from outside.
    hasher: RandomState,
    capacity: usize,
}

impl ClientTable {
    fn new(capacity: usize) -> ClientTable {
        ClientTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            capacity,
        }
    }

    fn shard(&self, key: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, ClientState>> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        // A panic while holding the lock leaves counts, not broken invariants: keep going.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on `key`'s state, making room for a new client when the shard is full; `None`
    /// when no room can be made (every entry holds a running download).
    fn with_client<R>(
        &self,
        key: IpAddr,
        now: Instant,
        per_minute: u32,
        f: impl FnOnce(&mut ClientState) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= self.capacity {
            shard.retain(|_, state| !state.is_idle(now, per_minute));
            if shard.len() >= self.capacity {
                // Forgets that client's spent manifest budget: leniency, never a wrong refusal.
                let oldest = shard
                    .iter()
                    .filter(|(_, state)| state.streams == 0)
                    .min_by_key(|(_, state)| state.seen)
                    .map(|(key, _)| *key)?;
                shard.remove(&oldest);
            }
        }
        let state = shard
            .entry(key)
            .or_insert_with(|| ClientState::new(now, per_minute));
        state.seen = now;
        Some(f(state))
    }

    fn stream_done(&self, key: IpAddr) {
        if let Some(state) = self.shard(key).get_mut(&key) {
            state.streams = state.streams.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum::<usize>()
    }
}

/// One running blob download of a client, given back when dropped (the body finished, broke,
/// or the client left).
pub struct StreamSlot {
    guard: Arc<Guard>,
    key: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.guard.table.stream_done(self.key);
    }
}

/// One of the process's blob download slots (`limits.max_streams`), given back when dropped.
pub struct GlobalSlot {
    guard: Arc<Guard>,
}

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.guard.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: works out the client, refuses it when it is not allowed or over a limit, and
/// holds a blob download's slot for as long as its body streams.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<HeldBody<impl MessageBody, Slots>>>, Error> {
    let guard = req
        .app_data::<web::Data<Guard>>()
        .expect("Guard state is registered on every App")
        .clone()
        .into_inner();
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return pass(req, next, (None, None)).await; // no socket (in-process tests): nothing to judge
    };
    let forwarded = req.headers().get_all(header::X_FORWARDED_FOR);
    let client = client_addr::client_ip(
        peer,
        forwarded.filter_map(|v| v.to_str().ok()),
        &guard.access.trusted_proxies,
    );
    if client != peer.to_canonical() {
        req.extensions_mut().insert(ClientIp(client));
        crate::middleware::access_log::Notes::client(&req, client);
    }
    if !guard.allows(client) {
        return Ok(refuse(req, &guard, ProxyError::Denied { client }, "denied"));
    }
    let mut slots = (None, None);
    if guard.limits_on() && matches!(*req.method(), Method::GET | Method::HEAD) {
        // An invalid path is refused by its route; it has nothing to count.
        if let Ok(checked) = target::registry_path(req.path()) {
            let endpoint = checked.endpoint;
            // Kept for the route, which would check the same path again.
            req.extensions_mut().insert(checked);
            match guard.admit(client, endpoint, req.method()) {
                Ok(held) => slots.0 = held,
                Err((error, reason)) => return Ok(refuse(req, &guard, error, reason)),
            }
            if endpoint == Endpoint::Blob && req.method() == Method::GET {
                // After the client's own limit: a client over it is told so (429), and holds
                // no slot of the process's meanwhile.
                match guard.admit_download() {
                    Ok(held) => slots.1 = held,
                    Err((error, reason)) => return Ok(refuse(req, &guard, error, reason)),
                }
            }
        }
    }
    pass(req, next, slots).await
}

/// A blob download's slots, its client's and the process's, held while its body streams.
type Slots = (Option<StreamSlot>, Option<GlobalSlot>);

async fn pass<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    slots: Slots,
) -> Result<ServiceResponse<EitherBody<HeldBody<B, Slots>>>, Error> {
    let res = next.call(req).await?;
    Ok(res
        .map_body(move |_, body| HeldBody::new(body, slots))
        .map_into_left_body())
}

fn refuse<B>(
    req: ServiceRequest,
    guard: &Guard,
    error: ProxyError,
    reason: &'static str,
) -> ServiceResponse<EitherBody<B>> {
    guard.metrics.refused(reason);
    // Not `into_response`: that keeps the response but drops the error the access log reads.
    req.error_response(error).map_into_right_body()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut state = ClientState::new(start, 3);
        for _ in 0..3 {
            assert_eq!(state.take_token(start, 3), Ok(()));
        }
        // 3 a minute: one every 20 s.
        assert_eq!(state.take_token(start, 3), Err(20));
        let later = start + Duration::from_secs(15);
        assert_eq!(state.take_token(later, 3), Err(5));
        let later = start + Duration::from_secs(20);
        assert_eq!(state.take_token(later, 3), Ok(()));
        assert_eq!(state.take_token(later, 3), Err(20));
        // Never less than a second, even at high rates.
        let mut fast = ClientState::new(start, 6000);
        fast.tokens = 0.5;
        assert_eq!(fast.take_token(start, 6000), Err(1));
        // A long pause refills to the burst, no further.
        let much_later = start + Duration::from_secs(3600);
        assert!(state.is_idle(much_later, 3));
        for _ in 0..3 {
            assert_eq!(state.take_token(much_later, 3), Ok(()));
        }
        assert!(state.take_token(much_later, 3).is_err());
    }

    #[test]
    fn a_client_with_a_download_is_never_idle() {
        let start = Instant::now();
        let mut state = ClientState::new(start, 0);
        assert!(state.is_idle(start, 0));
        state.streams = 1;
        assert!(!state.is_idle(start + Duration::from_secs(3600), 0));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood() {
        let table = ClientTable::new(4);
        let now = Instant::now();
        // Spend some budget so no entry is idle: the oldest is evicted instead.
        for i in 0..1000u32 {
            let key = IpAddr::V4(i.into());
            assert!(table
                .with_client(key, now + Duration::from_millis(u64::from(i)), 10, |c| c
                    .take_token(now, 10))
                .is_some());
        }
        assert!(table.len() <= SHARDS * 4, "{}", table.len());
    }

    #[test]
    fn clients_holding_downloads_are_kept_and_new_ones_refused_when_full() {
        let table = ClientTable::new(1);
        let now = Instant::now();
        // Fill every shard with a client that holds a download.
        let mut held = Vec::new();
        for i in 0..10_000u32 {
            let key = IpAddr::V4(i.into());
            if table.with_client(key, now, 0, |c| c.streams += 1).is_none() {
                continue; // its shard is already taken
            }
            held.push(key);
            if held.len() == SHARDS {
                break;
            }
        }
        assert_eq!(held.len(), SHARDS, "every shard holds one client");
        let newcomer = ip("198.51.100.1");
        assert!(table.with_client(newcomer, now, 0, |_| ()).is_none());
        // A download ends: its client can be forgotten, and the newcomer gets in.
        for key in &held {
            table.stream_done(*key);
        }
        assert!(table.with_client(newcomer, now, 0, |_| ()).is_some());
    }
}
