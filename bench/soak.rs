//! `make soak`: minutes of mixed load on a release hubferry in front of the integration tests'
//! world — skopeo pulls of every test image, manifest traffic, slow readers, clients that
//! leave mid-response — with every answer checked. It samples hubferry's memory, descriptors
//! and in-flight streams every 5 s and passes only if there was no error, memory stayed flat,
//! the streams drained and no descriptor leaked. Report on stdout and in target/soak/.
//!
//! Run by `cargo bench --bench soak` (built optimised); `SOAK_MINUTES` (default 10, fractions
//! allowed) sets how long the load runs.

#[path = "../tests/integration/world/mod.rs"]
mod world;

#[allow(dead_code)] // the benchmark's contenders; the soak runs hubferry only
mod contenders;
#[allow(dead_code)]
mod procstat;
mod progress;
#[path = "../tests/integration/skopeo.rs"]
#[allow(dead_code)]
mod skopeo;
#[allow(dead_code)] // the soak borrows its small-buffer sockets
mod slow_clients;
mod soak_load;

pub use progress::{elapsed, progress};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use soak_load::{Load, Tally};

const PULL_LOOPS: usize = 3;
const MANIFEST_CONNS: usize = 4;
const SLOW_READERS: usize = 50;
const DISCONNECTERS: usize = 4;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long in-flight streams get to reach 0 once the load stopped.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Longer than awc's pool keeps an idle upstream connection (15 s), see [`Load::settle`].
const POOL_IDLE: Duration = Duration::from_secs(20);
/// RSS in the last third of the load may exceed the first third's peak by this much.
const RSS_TOLERANCE: f64 = 0.10;
/// Descriptors after the load may exceed the count before it by this many.
const FD_TOLERANCE: usize = 5;

fn main() {
    // `cargo test --all-targets` builds and runs every bench target too; only `cargo bench`
    // passes --bench. The soak takes minutes: skip it there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: not run (it is the soak test: `make soak` or `cargo bench --bench soak`)");
        return;
    }
    elapsed();
    let code = match std::panic::catch_unwind(run) {
        Ok(Ok(true)) => 0,
        Ok(Ok(false)) => 1,
        Ok(Err(e)) => {
            eprintln!("soak harness failed: {e}");
            2
        }
        Err(_) => {
            eprintln!("soak harness failed (panic above)");
            2
        }
    };
    std::process::exit(code);
}

/// One look at hubferry.
struct Sample {
    /// Seconds since the load started.
    t: f64,
    rss_kib: u64,
    fds: usize,
    streams: Option<f64>,
    ops: u64,
    errors: u64,
}

fn run() -> Result<bool, String> {
    let minutes: f64 = match std::env::var("SOAK_MINUTES") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .ok()
            .filter(|m| *m > 0.0)
            .ok_or(format!("SOAK_MINUTES={v:?} is not a positive number"))?,
        _ => 10.0,
    };
    let duration = Duration::from_secs_f64(minutes * 60.0);
    // Buffers, pools and allocator arenas grow to the load's size first: RSS is judged after.
    let warm_up = (duration / 10).clamp(Duration::from_secs(10), Duration::from_secs(60));

    progress("setting up the test world");
    let world = world::plain();
    let out = target_dir().join("soak");
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("hubferry-soak-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    world::remove_at_exit(scratch.clone());
    let tls = world::tls_files(&scratch);
    // Its log goes to target/soak/hubferry.log, kept for reading after a failure.
    let hf = contenders::hubferry(world, &out, &tls, 2)?;
    let pid = hf.pid().ok_or("hubferry has no pid")?;
    let admin = hf.admin.clone().ok_or("hubferry has no admin listener")?;
    progress(&format!(
        "hubferry (pid {pid}, 2 workers) on {}, admin {admin}",
        hf.plain
    ));

    let load = Load {
        world,
        addr: hf
            .plain_addr()
            .parse()
            .map_err(|e| format!("address: {e}"))?,
        scratch,
        stop: Default::default(),
        pulls: Tally::new("pulls"),
        manifests: Tally::new("manifests"),
        slow: Tally::new("slow readers"),
        slow_complete: Default::default(),
        disconnects: Tally::new("disconnects"),
        settles: Tally::new("settle requests"),
    };

    // Before: every image once, then the same settling as after the load, then the baseline.
    progress("warm-up: one pull of every image, then the upstream pools' idle connections expire");
    for i in 0..6 {
        load.pulls
            .record(load.pull(i, &load.scratch.join("warm-up")));
    }
    std::thread::sleep(POOL_IDLE);
    load.settle();
    std::thread::sleep(Duration::from_secs(1));
    let fds_before = fd_count(pid).ok_or("hubferry is gone")?;
    let rss_before = procstat::tree_rss_kib(pid).ok_or("hubferry is gone")?;
    progress(&format!(
        "before the load: RSS {:.1} MB, {fds_before} descriptors",
        mb(rss_before)
    ));

    progress(&format!(
        "load for {:.1} min: {PULL_LOOPS} pull loops, {MANIFEST_CONNS} manifest connections, \
         {SLOW_READERS} slow readers, {DISCONNECTERS} disconnecting clients",
        duration.as_secs_f64() / 60.0
    ));
    let mut samples = Vec::new();
    let started = Instant::now();
    let cpu_before = procstat::MachineCpu::now();
    let stopped = std::thread::scope(|s| {
        let load = &load;
        type Loop = fn(&Load, usize);
        let kinds: [(&str, usize, Loop); 4] = [
            ("pull", PULL_LOOPS, Load::pull_loop),
            ("manifest", MANIFEST_CONNS, Load::manifest_loop),
            ("slow", SLOW_READERS, Load::slow_loop),
            ("leave", DISCONNECTERS, Load::disconnect_loop),
        ];
        for (name, count, f) in kinds {
            for n in 0..count {
                std::thread::Builder::new()
                    .name(format!("{name}-{n}"))
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || f(load, n))
                    .expect("start a load thread");
            }
        }
        let mut next = started;
        while started.elapsed() < duration {
            if let Some(s) = sample(pid, &admin, load, started) {
                progress(&line(&s));
                samples.push(s);
            } else {
                progress("hubferry is gone");
                break;
            }
            next += SAMPLE_EVERY;
            std::thread::sleep(
                (next.min(started + duration)).saturating_duration_since(Instant::now()),
            );
        }
        progress("stopping the load (pulls under way finish)");
        load.stop.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let joined = Instant::now();
    let load_secs = (stopped - started).as_secs_f64();
    // The machine may be shared: say how much other work ran beside the soak.
    let foreign = cpu_before
        .zip(procstat::MachineCpu::now())
        .map(|(before, after)| {
            after.foreign_secs_since(&before) / (joined - started).as_secs_f64() * 100.0
        });

    // After: streams drain, pools settle as before, then the last sample.
    let drained = loop {
        let streams = metrics(&admin)
            .ok()
            .and_then(|m| metric(&m, "hubferry_streams_in_flight"));
        if streams == Some(0.0) {
            break Some(joined.elapsed().as_secs_f64());
        }
        if joined.elapsed() > DRAIN_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let finishing = (joined - stopped).as_secs_f64();
    progress(&match drained {
        Some(s) => format!("streams in flight back to 0 {s:.1} s after the last client left"),
        None => format!("streams in flight not 0 after {DRAIN_LIMIT:?}"),
    });
    std::thread::sleep(POOL_IDLE);
    load.settle();
    std::thread::sleep(Duration::from_secs(1));
    let log = out.join("hubferry.log");
    let last = sample(pid, &admin, &load, started).ok_or_else(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "hubferry is gone; the end of {}:\n{}",
            log.display(),
            tail.join("\n")
        )
    })?;
    progress(&format!("after the load: {}", line(&last)));
    let final_metrics = metrics(&admin).unwrap_or_default();
    drop(hf);

    let report = Report {
        minutes,
        load_secs,
        warm_up,
        load: &load,
        samples: &samples,
        fds_before,
        rss_before,
        drained,
        finishing,
        foreign,
        last: &last,
        final_metrics: &final_metrics,
        log: &log,
    };
    let (markdown, pass) = report.render();
    println!("\n{markdown}");
    let path = out.join("report.md");
    std::fs::write(&path, &markdown).map_err(|e| format!("write {}: {e}", path.display()))?;
    progress(&format!(
        "wrote {}; soak {}",
        path.display(),
        if pass { "PASSED" } else { "FAILED" }
    ));
    Ok(pass)
}

fn sample(pid: u32, admin: &str, load: &Load, started: Instant) -> Option<Sample> {
    let rss_kib = procstat::tree_rss_kib(pid)?;
    let fds = fd_count(pid)?;
    let streams = metrics(admin)
        .ok()
        .and_then(|m| metric(&m, "hubferry_streams_in_flight"));
    let tallies = load.tallies();
    Some(Sample {
        t: started.elapsed().as_secs_f64(),
        rss_kib,
        fds,
        streams,
        ops: tallies.iter().map(|t| t.ops.load(Ordering::Relaxed)).sum(),
        errors: tallies
            .iter()
            .map(|t| t.errors.load(Ordering::Relaxed))
            .sum(),
    })
}

fn line(s: &Sample) -> String {
    format!(
        "t={:.0}s RSS {:.1} MB, {} fds, {} streams in flight, {} operations, {} errors",
        s.t,
        mb(s.rss_kib),
        s.fds,
        s.streams.map_or("?".into(), |v| format!("{v:.0}")),
        s.ops,
        s.errors
    )
}

/// Open file descriptors of `pid` (sockets, listeners, epoll, log file, ...).
fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// hubferry's `/metrics` text, over a plain socket.
fn metrics(admin: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(admin).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("bad /metrics answer: {:.200}", text)),
    }
}

/// Sum of every series of metric `name` (all label sets).
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

struct Report<'a> {
    minutes: f64,
    load_secs: f64,
    warm_up: Duration,
    load: &'a Load,
    samples: &'a [Sample],
    fds_before: usize,
    rss_before: u64,
    drained: Option<f64>,
    /// Seconds the load threads took to finish once told to stop.
    finishing: f64,
    /// CPU other processes used during the load, in % of one core.
    foreign: Option<f64>,
    last: &'a Sample,
    final_metrics: &'a str,
    log: &'a std::path::Path,
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Report<'_> {
    /// The Markdown report and whether every criterion passed.
    fn render(&self) -> (String, bool) {
        let mut criteria: Vec<(String, String, bool)> = Vec::new();
        let mut md = format!(
            "## hubferry soak\n\n\
             Run {date} by `make soak` (SOAK_MINUTES={minutes}): {secs:.0} s of mixed load on \
             the release build of hubferry at commit `{commit}` (`--workers 2`), in front of \
             the integration tests' world (docker-registry with token auth, 307s to an nginx \
             CDN) on 127.0.0.1. Machine: {cores} cores; other processes used {foreign} of \
             one core's CPU during the load.\n\n",
            date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            minutes = self.minutes,
            secs = self.load_secs,
            commit = commit(),
            cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
            foreign = self.foreign.map_or("?".into(), |p| format!("{p:.0} %")),
        );

        // Operations and errors.
        let what = [
            format!(
                "{PULL_LOOPS} loops of `skopeo copy` of every test image in turn (alpine \
                 `--all`, private/secret with `--src-creds`), plus one pull of each in the \
                 warm-up before the load; manifest and every blob's SHA-256 checked"
            ),
            format!(
                "{MANIFEST_CONNS} keep-alive connections, GET and HEAD of every image's \
                 manifest by tag and by digest, ~20/s each; status 200, \
                 Docker-Content-Digest, Content-Type, length and body checked"
            ),
            format!(
                "{SLOW_READERS} clients each reading random 4–16 MiB ranges of library/big's \
                 100 MiB layer at {} KB/s (8 KiB receive buffer), one after the other; 206, \
                 Content-Range, length and SHA-256 checked; {} read to the end, the others \
                 cut short by the end of the soak (the SHA-256 of the bytes they read checked)",
                soak_load::SLOW_RATE / 1000,
                self.load.slow_complete.load(Ordering::Relaxed)
            ),
            format!(
                "{DISCONNECTERS} clients starting a blob (60 %) or manifest GET and leaving \
                 before the answer (20 %) or after a random part of the body, half of them \
                 with a reset; every head read checked (200, length)"
            ),
            "token, manifest and blob requests on fresh connections before and after the \
             load (they also make the workers drop expired pooled upstream connections)"
                .to_string(),
        ];
        md.push_str("| load | what | operations | errors |\n|---|---|---:|---:|\n");
        let (mut ops, mut errors) = (0, 0);
        let mut first = String::new();
        let mut idle_kind = Vec::new();
        for (t, what) in self.load.tallies().iter().zip(&what) {
            let (o, e) = (
                t.ops.load(Ordering::Relaxed),
                t.errors.load(Ordering::Relaxed),
            );
            md.push_str(&format!("| {} | {what} | {o} | {e} |\n", t.name));
            (ops, errors) = (ops + o, errors + e);
            if o == 0 {
                idle_kind.push(t.name);
            }
            for m in t.first.lock().unwrap().iter() {
                first.push_str(&format!("- {}: `{m}`\n", t.name));
            }
        }
        if !first.is_empty() {
            md.push_str(&format!("\nFirst errors of each kind:\n\n{first}"));
        }
        criteria.push((
            "every kind of load ran".into(),
            if idle_kind.is_empty() {
                "all did operations".into()
            } else {
                format!("none done by: {}", idle_kind.join(", "))
            },
            idle_kind.is_empty(),
        ));
        criteria.push((
            "no errors".into(),
            format!("{errors} errors in {ops} operations"),
            errors == 0,
        ));

        // RSS: flat after the warm-up.
        let steady: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.t >= self.warm_up.as_secs_f64())
            .collect();
        let third = steady.len() / 3;
        if third >= 1 {
            let peak = |s: &[&Sample]| s.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            let (early, late) = (
                peak(&steady[..third]),
                peak(&steady[steady.len() - third..]),
            );
            let limit = early as f64 * (1.0 + RSS_TOLERANCE);
            let all = steady.iter().map(|s| s.rss_kib);
            criteria.push((
                "RSS flat".into(),
                format!(
                    "after the {:.0} s warm-up: first sample {:.1} MB, last {:.1} MB, min \
                     {:.1}, max {:.1}; peak of the first third {:.1} MB, of the last third \
                     {:.1} MB (limit {:.1} MB = first third's peak + {:.0} %); before the load \
                     {:.1} MB",
                    self.warm_up.as_secs_f64(),
                    mb(steady[0].rss_kib),
                    mb(steady[steady.len() - 1].rss_kib),
                    mb(all.clone().min().unwrap_or(0)),
                    mb(all.max().unwrap_or(0)),
                    mb(early),
                    mb(late),
                    mb(limit as u64),
                    RSS_TOLERANCE * 100.0,
                    mb(self.rss_before)
                ),
                late as f64 <= limit,
            ));
        } else {
            criteria.push((
                "RSS flat".into(),
                "too few samples after the warm-up to judge (run longer)".into(),
                false,
            ));
        }

        criteria.push((
            "streams drain".into(),
            match self.drained {
                Some(s) => format!(
                    "hubferry_streams_in_flight 0 {s:.1} s after the last client left \
                     (limit {} s; the load took {:.1} s to stop, pulls under way finishing)",
                    DRAIN_LIMIT.as_secs(),
                    self.finishing
                ),
                None => format!("not 0 within {} s", DRAIN_LIMIT.as_secs()),
            },
            self.drained.is_some(),
        ));

        let fds = self.samples.iter().map(|s| s.fds);
        criteria.push((
            "no descriptor leak".into(),
            format!(
                "{} before the load, {} after it (both after the pools' idle connections \
                 expired and one settle round; limit {} + {FD_TOLERANCE}); during the load \
                 {}–{}",
                self.fds_before,
                self.last.fds,
                self.fds_before,
                fds.clone().min().unwrap_or(0),
                fds.max().unwrap_or(0)
            ),
            self.last.fds <= self.fds_before + FD_TOLERANCE,
        ));

        let pass = criteria.iter().all(|c| c.2);
        md.push_str("\n| criterion | measured | result |\n|---|---|---|\n");
        for (name, measured, ok) in &criteria {
            md.push_str(&format!("| {name} | {measured} | {} |\n", verdict(*ok)));
        }
        md.push_str(&format!(
            "\n**{}**\n\nWhy these limits: the load is the same mix from start to end, so a \
             process that does not leak holds the same memory in the last third of the run as \
             in the first; a leak, even a slow one, shows as a higher peak after minutes. \
             The {:.0} % covers allocator noise (arenas, fragmentation) under a load whose \
             concurrency varies with which image each pull loop is on. Descriptors are \
             counted in the same quiet state before and after the load, so anything the load \
             left open shows up; {FD_TOLERANCE} covers an upstream connection or two still \
             pooled or closing.\n",
            if pass {
                "PASS: every criterion met"
            } else {
                "FAIL"
            },
            RSS_TOLERANCE * 100.0
        ));

        // What hubferry itself saw.
        let log = std::fs::read_to_string(self.log).unwrap_or_default();
        // skopeo, told not to verify TLS, first tries HTTPS: its ClientHello on the plain
        // port is logged by actix as a parse error, once per pull.
        const HELLO: &str = "request parse error: invalid Header provided";
        let (hellos, warnings): (Vec<&str>, Vec<&str>) = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .partition(|l| l.contains(HELLO));
        md.push_str(&format!(
            "\nhubferry's own counters at the end: upstream errors {}, download resumes {}, \
             requests {}. Its log (`{}`, {} lines) has {} `{HELLO}` errors from actix, one per \
             skopeo pull ({} pulls): skopeo, with TLS verification off, first tries HTTPS, \
             and a TLS ClientHello on the plain port is logged so; and {} other \
             warnings/errors{}\n",
            metric(self.final_metrics, "hubferry_upstream_errors_total").unwrap_or(0.0),
            metric(self.final_metrics, "hubferry_download_resumes_total").unwrap_or(0.0),
            metric(self.final_metrics, "hubferry_requests_total").unwrap_or(0.0),
            self.log.display(),
            log.lines().count(),
            hellos.len(),
            self.load.pulls.ops.load(Ordering::Relaxed),
            warnings.len(),
            if warnings.is_empty() {
                ""
            } else {
                ", the first:"
            }
        ));
        for w in warnings.iter().take(5) {
            md.push_str(&format!("    {w}\n"));
        }

        md.push_str(&format!(
            "\nSamples every {} s (t from the start of the load; the last row is after the \
             drain and the settle round):\n\n\
             | t (s) | RSS (MB) | fds | streams in flight | operations | errors |\n\
             |---:|---:|---:|---:|---:|---:|\n",
            SAMPLE_EVERY.as_secs()
        ));
        for s in self.samples.iter().chain(std::iter::once(self.last)) {
            md.push_str(&format!(
                "| {:.0} | {:.1} | {} | {} | {} | {} |\n",
                s.t,
                mb(s.rss_kib),
                s.fds,
                s.streams.map_or("?".into(), |v| format!("{v:.0}")),
                s.ops,
                s.errors
            ));
        }
        (md, pass)
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}
