//! `make bench`: hubferry against the nginx config hubferry replaces, against wharf (a peer
//! project, when `../shared/peers/wharf` is there) and against no proxy, on the test world of
//! the integration tests (real registry with token auth and 307s to an nginx CDN), plus a
//! proxy-bound manifest scenario against a static upstream. Prints a Markdown report and writes
//! it, with an SVG chart, to target/bench/.
//!
//! Run by `cargo bench --bench compare` (so it is built optimised). `BENCH_QUICK=1` runs one
//! repetition with short durations, for working on the bench itself. Exits non-zero only when
//! the harness itself breaks; a missed target is reported, not an error.

#[path = "../tests/integration/world/mod.rs"]
mod world;

mod chart;
mod contenders;
mod loadgen;
mod procstat;
mod progress;
mod report;
mod scenarios;
#[path = "../tests/integration/skopeo.rs"]
#[allow(dead_code)]
mod skopeo;
mod slow_clients;
mod static_upstream;

pub use progress::{elapsed, progress};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use scenarios::{Bench, Params};

/// Size of the blob the download scenarios fetch: above the 200 MB floor, and large
/// enough that a download at loopback speed lasts long enough to measure.
const BLOB_BYTES: usize = 256 << 20;
/// Repository the bench pushes its blob to (beside the world's images).
const BLOB_REPO: &str = "library/benchblob";

fn main() {
    // `cargo test --all-targets` builds and runs every bench target too; only
    // `cargo bench` passes --bench. The benchmark takes minutes: skip it there.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "compare: not run (it is the benchmark: `make bench` or `cargo bench --bench compare`)"
        );
        return;
    }
    elapsed();
    let code = match std::panic::catch_unwind(run) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("bench harness failed: {e}");
            1
        }
        Err(_) => {
            eprintln!("bench harness failed (panic above)");
            1
        }
    };
    // Exit here, after `run` dropped the proxies, so nothing is left listening.
    std::process::exit(code);
}

fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `BENCH_ONLY=blob1,latency` runs only those scenarios (working on the bench or on one
/// figure); the report then shows the others as not measured.
fn selected(scenario: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|s| s.trim() == scenario),
        _ => true,
    }
}

fn params() -> Params {
    if quick() {
        Params {
            reps: 1,
            blob1_reps: 1,
            parallel_clients: 8,
            manifest_secs: 2,
            latency_secs: 2,
            slow_clients: 500,
            slow_rate: 64_000,
            slow_secs: 8,
        }
    } else {
        // With wharf and the proxy-bound scenario added, the manifest and latency runs went from
        // 5 s to 3 s, and the slow clients' window from 30 s to 20 s, to keep the whole run
        // under 10 minutes (docs/benchmarks.md).
        Params {
            reps: 3,
            blob1_reps: 9,
            parallel_clients: 8,
            manifest_secs: 3,
            latency_secs: 3,
            slow_clients: 500,
            slow_rate: 64_000,
            slow_secs: 20,
        }
    }
}

fn run() -> Result<(), String> {
    for tool in ["curl", "wrk", "h2load", "nginx", "docker-registry"] {
        world::require_tool(tool);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "setting up the test world{}",
        if quick() {
            " (BENCH_QUICK: 1 repetition, short runs)"
        } else {
            ""
        }
    ));
    let world = world::plain();
    progress(&format!("world ready in {:.1?}", world.setup_time));

    progress(&format!("pushing a {} MiB random blob", BLOB_BYTES >> 20));
    let blob_digest = world.push_blob(BLOB_REPO, random_bytes(BLOB_BYTES));

    let dir = tempfile::Builder::new()
        .prefix("hubferry-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    world::remove_at_exit(dir.clone());
    let tls = world::tls_files(&dir);

    progress("starting nginx-config, hubferry and wharf");
    let mut contenders = vec![
        contenders::direct(world),
        contenders::nginx_config(world, &dir, &tls)?,
        contenders::hubferry(world, &dir, &tls, cores)?,
    ];
    let mut results = report::Results::default();
    // wharf is measured only once a real client has pulled an image through it: a contender
    // that answers errors fast would look fast.
    let wharf = wharf_bin().and_then(|bin| {
        let c = contenders::wharf(world, &dir, &tls, &bin, &contenders::Upstream::world(world))?;
        pull_check(world, &c, &tls.ca_cert)
            .map_err(|e| format!("a pull through it failed: {e}"))?;
        contenders.push(c);
        Ok(bin)
    });
    match &wharf {
        Ok(bin) => progress(&format!(
            "  wharf ({}): a skopeo pull through it works",
            bin.display()
        )),
        Err(e) => {
            progress(&format!("  wharf: MISSING: {e}"));
            results.absent.insert(contenders::Kind::Wharf, e.clone());
        }
    }
    for c in &contenders {
        progress(&format!(
            "  {}: {}{}",
            c.kind.name(),
            c.plain,
            c.tls
                .as_deref()
                .map(|t| format!(" and {t}"))
                .unwrap_or_default()
        ));
    }

    let mut bench = Bench {
        world,
        contenders,
        ca_file: tls.ca_cert.clone(),
        dir: dir.clone(),
        tls,
        workers: cores,
        wharf,
        blob_repo: BLOB_REPO.into(),
        blob_digest,
        blob_size: BLOB_BYTES as u64,
        params: params(),
        results,
    };
    type Scenario = fn(&mut Bench);
    let all: [(&str, Scenario); 7] = [
        ("idle", scenarios::idle),
        ("blob1", scenarios::blob_single),
        ("blob8", scenarios::blob_parallel),
        ("manifests", scenarios::manifests),
        ("static", scenarios::manifests_static),
        ("latency", scenarios::latency),
        ("slow", scenarios::slow),
    ];
    // Other work on the machine skews every figure: say how much there was, per scenario.
    let mut foreign = Vec::new();
    for (name, scenario) in all {
        if selected(name) {
            let (before, started) = (procstat::MachineCpu::now(), Instant::now());
            scenario(&mut bench);
            if let (Some(before), Some(after)) = (before, procstat::MachineCpu::now()) {
                let secs = after.foreign_secs_since(&before);
                let wall = started.elapsed().as_secs_f64();
                progress(&format!(
                    "{name}: other processes used {secs:.1} CPU-s in {wall:.0} s"
                ));
                foreign.push(format!("{name} {:.0} %", 100.0 * secs / wall.max(1e-3)));
            }
        }
    }
    let took = elapsed();
    drop(bench.contenders);

    let verdicts = report::verdicts(&bench.results);
    let tables = report::tables(&bench.results, &bench.params, BLOB_BYTES as f64 / 1e6);
    let targets = report::targets_table(&verdicts);
    let header = header(cores, took, &foreign.join(", "), &bench.wharf);
    let markdown = format!("{header}\n{tables}{targets}");
    println!("\n{markdown}");

    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let subtitle = format!("{} · {cores} cores · {}", cpu_model(), today());
    for (name, text) in [
        ("report.md", markdown),
        ("report.svg", chart::svg(&verdicts, &subtitle)),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        progress(&format!("wrote {}", path.display()));
    }
    let missed = verdicts.iter().filter(|v| v.pass != Some(true)).count();
    progress(&format!(
        "{} of {} targets met",
        verdicts.len() - missed,
        verdicts.len()
    ));
    Ok(())
}

/// wharf's source directory: `WHARF_DIR` (set by `make bench`), else `../shared/peers/wharf`
/// beside this checkout.
fn wharf_dir() -> PathBuf {
    std::env::var_os("WHARF_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/wharf"))
}

/// wharf's release binary as `make bench` builds it (`target/peers/wharf`), or why wharf is
/// missing. Without its source wharf is missing even if an old build is left in target/.
fn wharf_bin() -> Result<PathBuf, String> {
    let src = wharf_dir();
    if !src.join("Cargo.toml").is_file() {
        return Err(format!("no wharf source at {}", src.display()));
    }
    let bin = target_dir().join("peers/wharf/release/wharf");
    if !bin.is_file() {
        return Err(format!(
            "{} not built (`make bench` builds it from {})",
            bin.display(),
            src.display()
        ));
    }
    Ok(bin)
}

/// skopeo copies `library/nginx` (its manifest, then its blobs through the registry's 307) from
/// `c`'s TLS listener, so its token comes through wharf's realm
/// (`<public_base_url>/auth/dockerhub/token`); the manifest and every blob must hash to their
/// digests.
fn pull_check(world: &world::World, c: &contenders::Contender, ca: &Path) -> Result<(), String> {
    let image = world.image(scenarios::MANIFEST_REPO);
    let tls = c.tls.as_deref().ok_or("no TLS listener")?;
    let registry = skopeo::Registry {
        host: tls.trim_start_matches("https://"),
        ca_file: Some(ca),
    };
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let out = skopeo::try_pull(&registry, &image.reference(), &[], dir.path())?;
    let manifest =
        std::fs::read(out.join("manifest.json")).map_err(|e| format!("read manifest.json: {e}"))?;
    let digest = world::sha256_digest(&manifest);
    if digest != image.digest {
        return Err(format!("manifest.json is {digest}, not {}", image.digest));
    }
    skopeo::check_blobs_copied(&out, &image.blobs)
}

/// Incompressible bytes (xorshift64), so nothing on the path can make the blob cheaper.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ std::process::id() as u64;
    let mut data = vec![0u8; len];
    for word in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    data
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

fn today() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The first line a tool prints about its version (stdout or stderr), trimmed.
fn version(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines().next().unwrap_or("?").trim().to_string()
        }
        Err(e) => format!("{program}: {e}"),
    }
}

fn header(cores: usize, took: f64, foreign: &str, wharf: &Result<PathBuf, String>) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    // Every hop is a TCP connection on loopback: a congestion control that paces (BBR) halves
    // what direct and every proxy move here, so runs under different ones do not compare.
    let congestion = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map_or("?".into(), |c| c.trim().to_string());
    let curl = version("curl", &["--version"]);
    // curl's first line lists every library; keep curl's own, the TLS and HTTP/2 ones.
    let curl: Vec<&str> = curl
        .split_whitespace()
        .enumerate()
        .filter(|(i, w)| *i < 2 || w.starts_with("OpenSSL/") || w.starts_with("nghttp2/"))
        .map(|(_, w)| w)
        .collect();
    let wrk = version("wrk", &["-v"]);
    let wrk = wrk.split(" Copyright").next().unwrap_or(&wrk);
    let nginx = world::require_tool("nginx");
    let nginx = version(&nginx.to_string_lossy(), &["-v"]);
    let hubferry = contenders::hubferry_bin();
    let hubferry = version(&hubferry.to_string_lossy(), &["--version"]);
    // Which code was measured: the commit, and whether the tree had changes on top.
    let commit = Command::new("git")
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
        });
    let wharf = match wharf {
        Ok(bin) => format!(
            "{} built from {} (`cargo build --release --locked`; plain and TLS listeners in one \
             process, one actix worker per core each)",
            version(&bin.to_string_lossy(), &["--version"]),
            wharf_dir().display()
        ),
        Err(e) => format!("wharf MISSING ({e}): its columns say so"),
    };
    let p = params();
    format!(
        "## hubferry vs nginx-config vs wharf vs direct\n\n\
         Run {date} by `{command}`; the benchmark program took {took:.0} s (set-up included, \
         build not). Every figure below was measured in this run.\n\n\
         - Machine: {cpu}, {cores} cores, {memory}, Linux {kernel}, TCP congestion control \
         {congestion}\n\
         - Versions: {hubferry} at commit `{commit}` (release build, `--workers {cores}`); {nginx} (the nginx config, \
         `worker_processes auto`); {wharf}; {registry}; {curl}; {wrk}; {h2load}\n\
         - Set-up: the integration tests' world — `docker-registry` with token auth answering \
         blob GETs with 307 to an nginx CDN — on 127.0.0.1; every contender uses it (scenario \
         3b: a static nginx instead). direct = client → registry → CDN, no proxy. Contenders \
         run interleaved (direct, then the proxies, rotated one place each repetition), {reps} \
         repetitions of each scenario ({blob1} of scenario 1), medians shown. MB = 10^6 \
         bytes.\n\
         - Other processes on the machine during each scenario (CPU, % of one core; 0 = the \
         machine was the benchmark's alone): {foreign}\n",
        date = today(),
        command = if quick() {
            "BENCH_QUICK=1 make bench"
        } else {
            "make bench"
        },
        cpu = cpu_model(),
        kernel = kernel.trim(),
        registry = version("docker-registry", &["--version"]),
        curl = curl.join(" "),
        h2load = version("h2load", &["--version"]),
        reps = p.reps,
        blob1 = p.blob1_reps,
    )
}
