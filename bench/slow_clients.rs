//! Scenario 5: hundreds of clients reading the big blob slowly, as a crowd of pulls over slow
//! links does. One std thread per client keeps the client simple (500 threads with small
//! stacks cost the bench a few MiB); each socket has a small receive buffer so the kernel
//! cannot absorb the blob on the client side, and the proxy has to hold its streams back.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::procstat;

pub struct Plan {
    /// `127.0.0.1:PORT` of the proxy's plain listener.
    pub addr: String,
    pub path: String,
    pub authorization: String,
    pub clients: usize,
    /// Bytes per second per client.
    pub rate: u64,
    /// The proxy whose RSS is sampled.
    pub pid: u32,
}

pub struct SlowRun {
    /// Clients that got a 200 and were still reading when the window closed.
    pub streaming: usize,
    pub failures: Vec<String>,
    /// Body bytes all clients read during the measured window.
    pub bytes: u64,
    pub secs: f64,
    /// The proxy tree's RSS in KiB, once a second through the window.
    pub rss: Vec<u64>,
}

#[derive(Clone)]
pub struct RssStats {
    pub first: u64,
    pub last: u64,
    pub max: u64,
}

/// Kernel receive buffer per client socket (Linux doubles it): a few KiB, so the bytes wait
/// in the proxy, not in the client's kernel.
const RCVBUF: libc::c_int = 8 * 1024;
const READ_CHUNK: usize = 16 * 1024;

impl SlowRun {
    pub fn summary(&self) -> String {
        let rss: Vec<String> = self
            .rss
            .iter()
            .map(|k| format!("{:.0}", *k as f64 * 1024.0 / 1e6))
            .collect();
        let mut s = format!(
            "{} streaming, {:.1} KB/s per client, RSS MB each second: {}",
            self.streaming,
            self.mean_rate() / 1e3,
            rss.join(" ")
        );
        if let Some(first) = self.failures.first() {
            s.push_str(&format!("; {} failed, first: {first}", self.failures.len()));
        }
        s
    }

    /// Mean bytes/s per streaming client over the window.
    pub fn mean_rate(&self) -> f64 {
        if self.streaming == 0 || self.secs <= 0.0 {
            return 0.0;
        }
        self.bytes as f64 / self.secs / self.streaming as f64
    }

    /// The RSS figures, or why they do not describe `clients` streams.
    pub fn rss_check(&self, clients: usize) -> Result<RssStats, String> {
        let (Some(&first), Some(&last), Some(&max)) =
            (self.rss.first(), self.rss.last(), self.rss.iter().max())
        else {
            return Err("no RSS sample".into());
        };
        if self.streaming < clients {
            return Err(format!(
                "only {} of {clients} clients streamed (first error: {}); RSS max {:.0} MB",
                self.streaming,
                self.failures.first().map_or("none", String::as_str),
                max as f64 * 1024.0 / 1e6
            ));
        }
        Ok(RssStats { first, last, max })
    }
}

struct Shared {
    /// Clients that got their response head (200 or not) or failed before it.
    settled: AtomicUsize,
    stop: AtomicBool,
    bytes: AtomicU64,
    streaming: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Runs every plan at once over one shared window of `duration`: the proxies' crowds start
/// together, are sampled together and stop together.
pub fn run(plans: &[Plan], duration: Duration) -> Vec<SlowRun> {
    let crowds: Vec<(Arc<Shared>, Vec<JoinHandle<()>>)> = plans.iter().map(start_crowd).collect();

    // The window opens once every client has its response head (or gave up).
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_settled = || {
        crowds
            .iter()
            .zip(plans)
            .all(|((shared, _), plan)| shared.settled.load(Ordering::SeqCst) >= plan.clients)
    };
    while !all_settled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let bytes_at_start: Vec<u64> = crowds
        .iter()
        .map(|(shared, _)| shared.bytes.load(Ordering::SeqCst))
        .collect();
    let mut rss = vec![Vec::new(); plans.len()];
    for i in 1..=duration.as_secs().max(1) {
        let next = start + Duration::from_secs(i);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for (samples, plan) in rss.iter_mut().zip(plans) {
            if let Some(kib) = procstat::tree_rss_kib(plan.pid) {
                samples.push(kib);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Counted before stopping: a client that died during the window is no longer streaming.
    let ends: Vec<(u64, usize)> = crowds
        .iter()
        .map(|(shared, _)| {
            (
                shared.bytes.load(Ordering::SeqCst),
                shared.streaming.load(Ordering::SeqCst),
            )
        })
        .collect();
    for (shared, _) in &crowds {
        shared.stop.store(true, Ordering::SeqCst);
    }
    crowds
        .into_iter()
        .zip(ends)
        .zip(bytes_at_start)
        .zip(rss)
        .map(
            |((((shared, threads), (bytes, streaming)), at_start), rss)| {
                for t in threads {
                    let _ = t.join();
                }
                SlowRun {
                    streaming,
                    failures: std::mem::take(&mut *shared.failures.lock().unwrap()),
                    bytes: bytes - at_start,
                    secs: elapsed,
                    rss,
                }
            },
        )
        .collect()
}

/// Starts one thread per client of `plan`; they read until `stop` is set.
fn start_crowd(plan: &Plan) -> (Arc<Shared>, Vec<JoinHandle<()>>) {
    let shared = Arc::new(Shared {
        settled: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        bytes: AtomicU64::new(0),
        streaming: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let addr: SocketAddrV4 = plan.addr.parse().expect("proxy address is IPv4");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        plan.path, plan.addr, plan.authorization
    );
    let mut threads = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        let mine = shared.clone();
        let request = request.clone();
        let rate = plan.rate;
        let spawned = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                if let Err(e) = client(addr, &request, rate, &mine) {
                    mine.failures.lock().unwrap().push(e);
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.failures.lock().unwrap().push(format!("spawn: {e}"));
                shared.settled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    (shared, threads)
}

/// One slow client: request, check the head, then read at `rate` until told to stop.
fn client(addr: SocketAddrV4, request: &str, rate: u64, shared: &Shared) -> Result<(), String> {
    let settled = Settle(shared, false);
    let mut stream = connect_small_rcvbuf(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;

    let mut buf = vec![0u8; READ_CHUNK];
    let mut head = Vec::new();
    let body_start = loop {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let status = String::from_utf8_lossy(&head[..head.len().min(12)]).into_owned();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {status:?}"));
    }
    settled.streaming();
    let mut got = (head.len() - body_start) as u64;
    shared.bytes.fetch_add(got, Ordering::Relaxed);
    let started = Instant::now();

    let result = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        // Token bucket: what the rate allows so far, at most one second's worth in a burst.
        let allowed = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        let budget = allowed.saturating_sub(got).min(rate);
        if budget < 4096 {
            std::thread::sleep(Duration::from_millis(25));
            continue;
        }
        let want = (budget as usize).min(READ_CHUNK);
        match stream.read(&mut buf[..want]) {
            Ok(0) => break Err("closed mid-body".to_string()),
            Ok(n) => {
                got += n as u64;
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => break Err(format!("read body: {e}")),
        }
    };
    if result.is_err() && !shared.stop.load(Ordering::Relaxed) {
        shared.streaming.fetch_sub(1, Ordering::SeqCst);
    }
    result
}

/// Marks a client settled exactly once, whether it fails early or starts streaming.
struct Settle<'a>(&'a Shared, bool);

impl Settle<'_> {
    /// Counts the client as streaming and settled; the drop that follows adds nothing.
    fn streaming(mut self) {
        self.0.streaming.fetch_add(1, Ordering::SeqCst);
        self.0.settled.fetch_add(1, Ordering::SeqCst);
        self.1 = true;
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.settled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A TCP connection whose receive buffer is set *before* connecting, so the window it
/// advertises (and its scale) starts small; std has no way to do this.
pub fn connect_small_rcvbuf(addr: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket syscalls on a descriptor this function owns (TcpStream closes it).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let size = RCVBUF;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
