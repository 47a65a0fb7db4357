//! The scenarios, driven by the real tools a user would measure with: curl for downloads,
//! wrk (HTTP/1.1) and h2load (HTTP/2 over TLS) for manifest load (see loadgen.rs), and the
//! bench's own slow clients (slow_clients.rs). Each repetition runs every contender once,
//! direct first and then the proxies, rotated by one place each repetition (see [`order`]), so
//! drift over the run hits them all alike.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::contenders::{self, Contender, Kind, Upstream};
use crate::loadgen::{h2load, wrk, wrk_counted, Load};
use crate::procstat::{self, RssSampler};
use crate::report::Results;
use crate::world::{TlsFiles, World, DOCKER_MANIFEST};
use crate::{progress, slow_clients, static_upstream};

/// Durations and counts; smaller under BENCH_QUICK.
pub struct Params {
    pub reps: usize,
    /// Scenario 1 is over in a second per repetition, and a short transfer is noisy: more runs.
    pub blob1_reps: usize,
    pub parallel_clients: usize,
    pub manifest_secs: u32,
    pub latency_secs: u32,
    pub slow_clients: usize,
    /// Bytes per second each slow client reads.
    pub slow_rate: u64,
    pub slow_secs: u64,
}

pub struct Bench<'a> {
    pub world: &'a World,
    pub contenders: Vec<Contender>,
    /// The test CA that signed the proxies' TLS certificate.
    pub ca_file: PathBuf,
    /// The bench's temp dir and the proxies' certificate: the proxy-bound scenario starts a
    /// second set of proxies.
    pub dir: PathBuf,
    pub tls: TlsFiles,
    /// hubferry's `--workers`.
    pub workers: usize,
    /// wharf's binary, or why wharf is not measured.
    pub wharf: Result<PathBuf, String>,
    pub blob_repo: String,
    pub blob_digest: String,
    pub blob_size: u64,
    pub params: Params,
    pub results: Results,
}

/// The manifest every manifest scenario asks for: small, by tag, as `docker pull` starts.
pub const MANIFEST_REPO: &str = "library/nginx";
const MANIFEST_TAG: &str = "latest";

impl Bench<'_> {
    fn blob_path(&self) -> String {
        format!("/v2/{}/blobs/{}", self.blob_repo, self.blob_digest)
    }

    pub fn manifest_path(&self) -> String {
        format!("/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}")
    }

    /// Minted per run: tokens live 300 s, the whole benchmark longer.
    pub fn bearer(&self, repo: &str) -> String {
        format!(
            "Bearer {}",
            self.world.token(&[&format!("repository:{repo}:pull")])
        )
    }

    /// A curl download of the big blob through `c` (TLS + HTTP/2 when `tls`).
    fn curl(&self, c: &Contender, tls: bool) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "--max-time", "300"]);
        cmd.args([
            "-w",
            "%{http_code} %{size_download} %{speed_download} %{http_version}",
        ]);
        cmd.args([
            "-H",
            &format!("Authorization: {}", self.bearer(&self.blob_repo)),
        ]);
        if c.client_follows_redirects() {
            cmd.arg("-L");
        }
        let base = if tls {
            cmd.arg("--http2").arg("--cacert").arg(&self.ca_file);
            c.tls.as_deref().expect("TLS runs only for proxies")
        } else {
            &c.plain
        };
        cmd.arg(format!("{base}{}", self.blob_path()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Checks a finished curl: status 200, every byte, the protocol asked for. Returns the
    /// bytes received and curl's average speed in bytes/s.
    fn check_curl(&self, out: std::io::Result<Output>, tls: bool) -> Result<(u64, f64), String> {
        let out = out.map_err(|e| format!("run curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || f.len() != 4 {
            return Err(format!(
                "curl {}: {} {}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let (code, size, speed, version) = (f[0], f[1], f[2], f[3]);
        let size: u64 = size.parse().map_err(|_| format!("curl size {size:?}"))?;
        if code != "200" || size != self.blob_size {
            return Err(format!("HTTP {code}, {size} of {} bytes", self.blob_size));
        }
        let want = if tls { "2" } else { "1.1" };
        if version != want {
            return Err(format!("spoke HTTP/{version}, not HTTP/{want}"));
        }
        let speed = speed.parse().map_err(|_| format!("curl speed {speed:?}"))?;
        Ok((size, speed))
    }
}

fn mb(bytes_per_s: f64) -> f64 {
    bytes_per_s / 1e6
}

/// Memory in MB (10^6 bytes) like throughput, so "≤ 15 MB" is read strictly.
fn rss_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn show(r: &Result<f64, String>, unit: &str) -> String {
    match r {
        Ok(v) => format!("{v:.1} {unit}"),
        Err(e) => format!("FAILED: {e}"),
    }
}

/// The order contenders run in within repetition `rep` (from 1; 0, a warm-up, runs as 1):
/// direct first, as the baseline, then the proxies, rotated by one place each repetition so that
/// none always runs right after the same other one (with two proxies: swapped every other
/// repetition).
pub fn order(contenders: &[Contender], rep: usize) -> Vec<usize> {
    let (mut direct, mut proxies): (Vec<usize>, Vec<usize>) =
        (0..contenders.len()).partition(|&i| contenders[i].kind == Kind::Direct);
    if !proxies.is_empty() {
        let n = proxies.len();
        proxies.rotate_left(rep.saturating_sub(1) % n);
    }
    direct.append(&mut proxies);
    direct
}

/// Which protocols a contender is measured over: plain HTTP/1.1 always, TLS + HTTP/2 when it
/// has a TLS listener (not direct).
fn protocols(c: &Contender) -> &'static [bool] {
    if c.tls.is_some() {
        &[false, true]
    } else {
        &[false]
    }
}

fn proto_key(tls: bool) -> &'static str {
    if tls {
        "h2"
    } else {
        "plain"
    }
}

/// Warm-up (first connections, lazy allocations), then each proxy's idle RSS.
pub fn idle(b: &mut Bench) {
    progress("warm-up and idle RSS");
    for c in &b.contenders {
        for &tls in protocols(c) {
            let _ = manifest_once(b, c, tls);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for c in &b.contenders {
        if let Some(pid) = c.pid() {
            let r = procstat::tree_rss_kib(pid)
                .map(rss_mb)
                .ok_or_else(|| "process gone".to_string());
            progress(&format!("  {}: idle RSS {}", c.kind.name(), show(&r, "MB")));
            b.results.add("idle.rss", c.kind, r);
        }
    }
}

/// One manifest GET through `c` with curl; what `-w write_out` printed, and curl's stderr.
fn manifest_curl(
    b: &Bench,
    c: &Contender,
    tls: bool,
    write_out: &str,
) -> Result<(String, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        write_out,
        "--max-time",
        "10",
    ]);
    cmd.args(["-H", &format!("Authorization: {}", b.bearer(MANIFEST_REPO))]);
    cmd.args(["-H", &format!("Accept: {DOCKER_MANIFEST}")]);
    let base = match (tls, &c.tls) {
        (true, Some(t)) => {
            cmd.arg("--http2").arg("--cacert").arg(&b.ca_file);
            t
        }
        _ => &c.plain,
    };
    cmd.arg(format!("{base}{}", b.manifest_path()));
    let out = cmd.output().map_err(|e| format!("run curl: {e}"))?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// One manifest GET with curl (warm-up only).
fn manifest_once(b: &Bench, c: &Contender, tls: bool) -> Result<(), String> {
    match manifest_curl(b, c, tls, "%{http_code}")?.0.as_str() {
        "200" => Ok(()),
        other => Err(format!("manifest GET answered {other}")),
    }
}

/// Scenario 1: one client downloads the big blob. One download per contender and protocol is
/// made first and not counted, so that one-time costs (connections opened and buffers grown
/// for the first time) are not in the first repetition's figure.
pub fn blob_single(b: &mut Bench) {
    let reps = b.params.blob1_reps;
    // Repetition 0 is the warm-up.
    for rep in 0..=reps {
        for i in order(&b.contenders, rep) {
            let c = &b.contenders[i];
            for &tls in protocols(c) {
                let out = b.curl(c, tls).output();
                let r = b.check_curl(out, tls).map(|(_, speed)| mb(speed));
                let which = match rep {
                    0 => "warm-up (not counted)".to_string(),
                    _ => format!("rep {rep}/{reps}"),
                };
                progress(&format!(
                    "1 client, {which}: {} {}: {}",
                    c.kind.name(),
                    proto_key(tls),
                    show(&r, "MB/s")
                ));
                if rep > 0 {
                    let kind = c.kind;
                    b.results.add(&format!("blob1.{}", proto_key(tls)), kind, r);
                }
            }
        }
    }
}

/// Scenario 2: several clients download the big blob at once; aggregate throughput is all
/// bytes over the wall time from the first start to the last finish.
pub fn blob_parallel(b: &mut Bench) {
    let n = b.params.parallel_clients;
    for rep in 1..=b.params.reps {
        for i in order(&b.contenders, rep) {
            let c = &b.contenders[i];
            for &tls in protocols(c) {
                let sampler = c
                    .pid()
                    .map(|p| RssSampler::start(p, Duration::from_millis(50)));
                let cpu_before = c.pid().and_then(procstat::tree_cpu_us);
                let started = Instant::now();
                let children: Vec<_> = (0..n).map(|_| b.curl(c, tls).spawn()).collect();
                let outputs: Vec<_> = children
                    .into_iter()
                    .map(|child| child.and_then(|ch| ch.wait_with_output()))
                    .collect();
                let wall = started.elapsed().as_secs_f64();
                let cpu_after = c.pid().and_then(procstat::tree_cpu_us);
                let peak = sampler.map(|s| s.stop_peak());
                let mut total = 0;
                let mut failure = None;
                for out in outputs {
                    match b.check_curl(out, tls) {
                        Ok((bytes, _)) => total += bytes,
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                let r = match failure {
                    Some(e) => Err(e),
                    None => Ok(mb(total as f64 / wall)),
                };
                let key = proto_key(tls);
                let mut line = format!(
                    "{n} clients, rep {rep}/{}: {} {key}: {}",
                    b.params.reps,
                    c.kind.name(),
                    show(&r, "MB/s")
                );
                let kind = c.kind;
                if let Some(peak) = peak {
                    let rss = peak.map(rss_mb).ok_or_else(|| "no RSS sample".to_string());
                    line.push_str(&format!(", peak RSS {}", show(&rss, "MB")));
                    b.results.add(&format!("blob8.{key}.rss"), kind, rss);
                    // CPU per byte: user + system time of the proxy's tree over the bytes moved.
                    let cpu = match (&r, cpu_before, cpu_after) {
                        (Ok(_), Some(a), Some(z)) if total > 0 => {
                            Ok(z.saturating_sub(a) as f64 / (total as f64 / 1e6))
                        }
                        (Err(e), ..) => Err(e.clone()),
                        _ => Err("could not read /proc stat".to_string()),
                    };
                    line.push_str(&format!(", {} CPU per MB", show(&cpu, "µs")));
                    b.results.add(&format!("blob8.{key}.cpu"), kind, cpu);
                }
                progress(&line);
                b.results.add(&format!("blob8.{key}.mbps"), kind, r);
            }
        }
    }
}

/// CPU µs per request of a load, from a process's CPU time before and after it (`None`: its
/// `source` could not be read).
fn per_request(
    load: &Result<Load, String>,
    before: Option<u64>,
    after: Option<u64>,
    source: &str,
) -> Result<f64, String> {
    match (load, before, after) {
        (Ok(l), Some(a), Some(z)) if l.requests > 0 => {
            Ok(z.saturating_sub(a) as f64 / l.requests as f64)
        }
        (Err(e), ..) => Err(e.clone()),
        _ => Err(format!("could not read {source}")),
    }
}

/// Scenario 3: manifest GETs on 64 connections (wrk over HTTP/1.1, h2load over TLS with
/// HTTP/2); requests/s and the proxy's CPU per request.
///
/// The registry (Go) uses most of the machine here, and a run leaves work behind (garbage to
/// collect) that lands on the next one: in the order direct, nginx-config plain and HTTP/2,
/// hubferry plain and HTTP/2, the run right after 640 concurrent HTTP/2 streams cost the
/// registry 10-15 % more CPU per request, and so had fewer requests/s. So each protocol's runs
/// go together, the proxies rotate places each repetition, and each run has one unmeasured
/// second of the same load first.
pub fn manifests(b: &mut Bench) {
    let set = std::mem::take(&mut b.contenders);
    manifest_loads(b, &set, "man", Registry::Measured);
    b.contenders = set;
}

/// Whether a manifest load also measures the test world's registry (the registry-bound
/// scenario), or counts every answer as a 200 (the proxy-bound one, where a proxy answering an
/// error fast must not look fast; wrk's own check lets 3xx through).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registry {
    Measured,
    Static,
}

/// The manifest loads of scenarios 3 and 3b over `set`, recorded under `prefix`.
fn manifest_loads(b: &mut Bench, set: &[Contender], prefix: &str, registry: Registry) {
    let secs = b.params.manifest_secs;
    for rep in 1..=b.params.reps {
        for tls in [false, true] {
            for i in order(set, rep) {
                let c = &set[i];
                if !protocols(c).contains(&tls) {
                    continue;
                }
                let run = |secs| match (tls, registry) {
                    (true, _) => h2load(b, c, 64, secs),
                    (false, Registry::Measured) => wrk(b, c, 2, 64, secs, false),
                    (false, Registry::Static) => wrk_counted(b, c, 2, 64, secs),
                };
                let _ = run(1);
                let world_registry = match registry {
                    Registry::Measured => procstat::descendant_named("docker-registry"),
                    Registry::Static => None,
                };
                let cpu_before = c.pid().and_then(procstat::tree_cpu_us);
                let registry_before = world_registry.and_then(procstat::tree_cpu_us);
                let load = run(secs);
                let cpu_after = c.pid().and_then(procstat::tree_cpu_us);
                let registry_after = world_registry.and_then(procstat::tree_cpu_us);
                let key = proto_key(tls);
                let kind = c.kind;
                let rps = load.as_ref().map(|l| l.per_second).map_err(Clone::clone);
                let mut line = format!(
                    "{prefix} x64, rep {rep}/{}: {} {key}: {}",
                    b.params.reps,
                    kind.name(),
                    show(&rps, "req/s")
                );
                if let Ok(Load { ok: Some(ok), .. }) = &load {
                    let class = if tls { "2xx" } else { "200" };
                    line.push_str(&format!(" ({ok} answers counted as {class})"));
                }
                if c.pid().is_some() {
                    let cpu = per_request(&load, cpu_before, cpu_after, "/proc stat");
                    line.push_str(&format!(", {} CPU per request", show(&cpu, "µs")));
                    b.results.add(&format!("{prefix}.{key}.cpu"), kind, cpu);
                }
                if registry == Registry::Measured {
                    let registry_cpu = per_request(
                        &load,
                        registry_before,
                        registry_after,
                        "the registry's /proc stat",
                    );
                    line.push_str(&format!(
                        ", registry {} CPU per request",
                        show(&registry_cpu, "µs")
                    ));
                    b.results
                        .add(&format!("{prefix}.{key}.registry"), kind, registry_cpu);
                }
                progress(&line);
                b.results.add(&format!("{prefix}.{key}.rps"), kind, rps);
            }
        }
    }
}

/// Scenario 3b: the same manifest GETs against an upstream that costs next to nothing (a static
/// nginx answering the manifest with the registry's headers), so the proxy, not the registry, is
/// what limits them. A second set of contenders is started for it, pointed at that upstream,
/// and stopped after. Before measuring, each must answer one GET per protocol with a 200 and the
/// manifest's bytes; during the runs every answer is counted (wrk's script, h2load's 2xx).
pub fn manifests_static(b: &mut Bench) {
    let image = b.world.image(MANIFEST_REPO);
    let upstream = match static_upstream::start(
        &b.dir,
        &b.manifest_path(),
        &image.manifest,
        &image.media_type,
        &image.digest,
    ) {
        Ok(u) => u,
        Err(e) => {
            progress(&format!("static upstream: FAILED: {e}"));
            for kind in [Kind::Direct, Kind::NginxConfig, Kind::Hubferry, Kind::Wharf] {
                b.results.add(
                    "static.plain.rps",
                    kind,
                    Err(format!("static upstream: {e}")),
                );
            }
            return;
        }
    };
    progress(&format!("static upstream at {}", upstream.url));
    let up = Upstream {
        registry_url: &upstream.url,
        label: "-static",
    };
    let mut started: Vec<(Kind, Result<Contender, String>)> = vec![
        (Kind::Direct, Ok(contenders::direct_to(&up))),
        (
            Kind::NginxConfig,
            contenders::nginx_config_to(b.world, &b.dir, &b.tls, &up),
        ),
        (
            Kind::Hubferry,
            contenders::hubferry_to(b.world, &b.dir, &b.tls, b.workers, &up),
        ),
    ];
    if let Ok(bin) = &b.wharf {
        started.push((
            Kind::Wharf,
            contenders::wharf(b.world, &b.dir, &b.tls, bin, &up),
        ));
    }
    let mut set = Vec::new();
    for (kind, c) in started {
        let checked = c.and_then(|c| {
            for &tls in protocols(&c) {
                manifest_check(b, &c, tls, image.manifest.len())
                    .map_err(|e| format!("{} answered wrong: {e}", proto_key(tls)))?;
            }
            Ok(c)
        });
        match checked {
            Ok(c) => {
                progress(&format!(
                    "  {}: {} answers 200 with the manifest",
                    kind.name(),
                    c.plain
                ));
                set.push(c);
            }
            Err(e) => {
                progress(&format!("  {}: FAILED: {e}", kind.name()));
                b.results.add("static.plain.rps", kind, Err(e));
            }
        }
    }
    manifest_loads(b, &set, "static", Registry::Static);
}

/// One manifest GET through `c`: it must answer 200 with `len` bytes.
fn manifest_check(b: &Bench, c: &Contender, tls: bool, len: usize) -> Result<(), String> {
    let (text, stderr) = manifest_curl(b, c, tls, "%{http_code} %{size_download}")?;
    if text != format!("200 {len}") {
        return Err(format!(
            "status and size {text:?}, want \"200 {len}\" {stderr}"
        ));
    }
    Ok(())
}

/// Scenario 4: one connection, one request at a time; p50/p99 per contender and, per
/// repetition, each proxy's figure minus direct's from the same repetition.
pub fn latency(b: &mut Bench) {
    let secs = b.params.latency_secs;
    for rep in 1..=b.params.reps {
        let mut direct = None;
        for i in order(&b.contenders, rep) {
            let c = &b.contenders[i];
            let kind = c.kind;
            // One unmeasured second first: right after the 64-connection runs the registry
            // (Go) is still collecting their garbage, which would land on whoever goes first.
            let _ = wrk(b, c, 1, 1, 1, false);
            let r = wrk(b, c, 1, 1, secs, true).and_then(|l| {
                l.p50_p99
                    .ok_or_else(|| "wrk printed no latency distribution".into())
            });
            match &r {
                Ok((p50, p99)) => progress(&format!(
                    "latency, rep {rep}/{}: {}: p50 {p50:.3} ms, p99 {p99:.3} ms",
                    b.params.reps,
                    kind.name()
                )),
                Err(e) => progress(&format!("latency: {}: FAILED: {e}", kind.name())),
            }
            b.results.add("lat.p50", kind, r.clone().map(|l| l.0));
            b.results.add("lat.p99", kind, r.clone().map(|l| l.1));
            if kind == Kind::Direct {
                direct = r.ok();
            } else {
                let added = match (&r, direct) {
                    (Ok(p), Some(d)) => Ok((p.0 - d.0, p.1 - d.1)),
                    (Err(e), _) => Err(e.clone()),
                    (_, None) => Err("direct failed in this repetition".into()),
                };
                b.results
                    .add("lat.p50.added", kind, added.clone().map(|a| a.0));
                b.results.add("lat.p99.added", kind, added.map(|a| a.1));
            }
        }
    }
}

/// Scenario 5: many slow readers of the big blob, proxies only. Both proxies get their crowd
/// at the same time: this measures memory, not speed (each client's read rate is reported to
/// show every proxy kept up), and it halves the longest scenario.
pub fn slow(b: &mut Bench) {
    let p = &b.params;
    let (clients, rate, secs) = (p.slow_clients, p.slow_rate, p.slow_secs);
    for rep in 1..=b.params.reps {
        let proxies: Vec<(Kind, u32, String)> = b
            .contenders
            .iter()
            .filter_map(|c| Some((c.kind, c.pid()?, c.plain_addr().to_string())))
            .collect();
        progress(&format!(
            "{clients} slow clients each on every proxy at once, rep {rep}/{} ({secs} s)…",
            b.params.reps
        ));
        let plans: Vec<slow_clients::Plan> = proxies
            .iter()
            .map(|(_, pid, addr)| slow_clients::Plan {
                addr: addr.clone(),
                path: b.blob_path(),
                authorization: b.bearer(&b.blob_repo),
                clients,
                rate,
                pid: *pid,
            })
            .collect();
        let runs = slow_clients::run(&plans, Duration::from_secs(secs));
        for ((kind, _, _), run) in proxies.iter().zip(runs) {
            let kind = *kind;
            progress(&format!("  {}: {}", kind.name(), run.summary()));
            let rss = run.rss_check(clients);
            b.results
                .add("slow.rss.max", kind, rss.clone().map(|r| rss_mb(r.max)));
            b.results
                .add("slow.rss.first", kind, rss.clone().map(|r| rss_mb(r.first)));
            b.results
                .add("slow.rss.last", kind, rss.clone().map(|r| rss_mb(r.last)));
            // The memory each stream adds: the peak over the proxy's idle RSS of this run, per
            // client. Idle, not the RSS just before the crowd: after a first crowd an allocator
            // keeps what it grew to, and the second would look free.
            let per_stream = match (&rss, b.results.value("idle.rss", kind)) {
                (Ok(r), Some(idle)) => Ok((rss_mb(r.max) - idle) * 1e3 / clients as f64),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), None) => Err("no idle RSS in this run (scenario idle not run)".into()),
            };
            b.results.add("slow.kb_per_stream", kind, per_stream);
            b.results
                .add("slow.rate", kind, rss.map(|_| run.mean_rate() / 1e3));
        }
        // Let the proxies close their upstream connections before the next repetition.
        std::thread::sleep(Duration::from_secs(1));
    }
}
