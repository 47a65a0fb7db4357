//! The load generators for manifest GETs: wrk (HTTP/1.1, with latency percentiles at one
//! connection) and h2load (HTTP/2 over TLS), run as child processes and their summaries
//! parsed. Any error count in a summary makes the run a failure, not a figure.

use std::process::{Command, Stdio};

use crate::contenders::Contender;
use crate::scenarios::{Bench, MANIFEST_REPO};
use crate::world::DOCKER_MANIFEST;

/// What a load generator reported.
pub struct Load {
    pub requests: u64,
    pub per_second: f64,
    /// Latency percentiles (50, 99) in ms, when asked for.
    pub p50_p99: Option<(f64, f64)>,
    /// Answers counted as successful, when counted: 200s by [`wrk_counted`]'s script, 2xx by
    /// h2load (which counts by class only).
    pub ok: Option<u64>,
}

/// `wrk` against the manifest; with `latency`, also its p50/p99.
pub fn wrk(
    b: &Bench,
    c: &Contender,
    threads: u32,
    conns: u32,
    secs: u32,
    latency: bool,
) -> Result<Load, String> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
    ]);
    if latency {
        cmd.arg("--latency");
    }
    cmd.args(["-H", &format!("Authorization: {}", b.bearer(MANIFEST_REPO))]);
    cmd.args(["-H", &format!("Accept: {DOCKER_MANIFEST}")]);
    cmd.arg(format!("{}{}", c.plain, b.manifest_path()));
    let text = run_tool(cmd)?;
    parse_wrk(&text)
}

/// A wrk script that counts answers by status in every thread and prints the sums at the end.
/// Defining `response` makes wrk hand each answer to Lua, which costs the load generator some
/// CPU, alike for every contender.
const COUNT_STATUSES: &str = r#"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  ok = 0
  other = 0
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local o, n = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    n = n + t:get("other")
  end
  io.write(string.format("status 200: %d\nstatus other: %d\n", o, n))
end
"#;

/// As [`wrk`] without latency, every answer counted: any status but 200 fails the run, and the
/// 200s must account for every request wrk completed.
pub fn wrk_counted(
    b: &Bench,
    c: &Contender,
    threads: u32,
    conns: u32,
    secs: u32,
) -> Result<Load, String> {
    let script = b.dir.join("count-statuses.lua");
    if !script.exists() {
        std::fs::write(&script, COUNT_STATUSES)
            .map_err(|e| format!("write {}: {e}", script.display()))?;
    }
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
    ]);
    cmd.arg("-s").arg(&script);
    cmd.args(["-H", &format!("Authorization: {}", b.bearer(MANIFEST_REPO))]);
    cmd.args(["-H", &format!("Accept: {DOCKER_MANIFEST}")]);
    cmd.arg(format!("{}{}", c.plain, b.manifest_path()));
    let text = run_tool(cmd)?;
    let mut load = parse_wrk(&text)?;
    let count = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (count("status 200:"), count("status other:")) {
        (Some(ok), Some(0)) if ok >= load.requests => {
            load.ok = Some(ok);
            Ok(load)
        }
        (Some(ok), Some(other)) => Err(format!(
            "wrk: {ok} answers 200 and {other} others for {} requests",
            load.requests
        )),
        _ => Err(format!("wrk script printed no counts: {}", text.trim())),
    }
}

fn parse_wrk(text: &str) -> Result<Load, String> {
    let mut requests = None;
    let mut per_second = None;
    let (mut p50, mut p99) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(n) = line
            .split(" requests in ")
            .next()
            .filter(|_| line.contains(" requests in "))
        {
            requests = n.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            per_second = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_duration_ms(v.trim());
        } else if line.starts_with("Non-2xx or 3xx responses:") {
            return Err(format!("wrk: {line}"));
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            return Err(format!("wrk socket errors:{errors}"));
        }
    }
    match (requests, per_second) {
        (Some(requests), Some(per_second)) if requests > 0 => Ok(Load {
            requests,
            per_second,
            p50_p99: p50.zip(p99),
            ok: None,
        }),
        _ => Err(format!("unreadable wrk output: {}", text.trim())),
    }
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn parse_duration_ms(v: &str) -> Option<f64> {
    for (suffix, ms) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)] {
        if let Some(n) = v.strip_suffix(suffix) {
            if let Ok(n) = n.parse::<f64>() {
                return Some(n * ms);
            }
        }
    }
    None
}

/// `h2load` over TLS (HTTP/2 by ALPN) against the manifest.
pub fn h2load(b: &Bench, c: &Contender, conns: u32, secs: u32) -> Result<Load, String> {
    let base = c.tls.as_deref().ok_or("no TLS listener")?;
    let mut cmd = Command::new("h2load");
    // -t2 as wrk's -t2: both load generators get the two cores alike.
    cmd.args(["-t2", &format!("-c{conns}"), "-m10", &format!("-D{secs}")]);
    cmd.arg(format!(
        "--header=authorization: {}",
        b.bearer(MANIFEST_REPO)
    ));
    cmd.arg(format!("--header=accept: {DOCKER_MANIFEST}"));
    cmd.arg(format!("{base}{}", b.manifest_path()));
    let text = run_tool(cmd)?;
    parse_h2load(&text)
}

fn parse_h2load(text: &str) -> Result<Load, String> {
    let mut done = None;
    let mut ok = None;
    let mut per_second = None;
    let mut protocol = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // finished in 5.00s, 12345.60 req/s, 15.20MB/s
            per_second = rest
                .split(", ")
                .find_map(|f| f.strip_suffix(" req/s"))
                .and_then(|v| v.parse::<f64>().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            let count = |what: &str| {
                rest.split(", ")
                    .find_map(|f| f.strip_suffix(what))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            done = count(" done");
            let bad = count(" failed").unwrap_or(0) + count(" errored").unwrap_or(0);
            if bad > 0 {
                return Err(format!("h2load: {line}"));
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            let only_2xx = rest
                .split(", ")
                .filter(|f| !f.ends_with(" 2xx"))
                .all(|f| f.starts_with("0 "));
            if !only_2xx {
                return Err(format!("h2load: {line}"));
            }
            ok = rest
                .split(", ")
                .find_map(|f| f.strip_suffix(" 2xx"))
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else if let Some(p) = line.strip_prefix("Application protocol: ") {
            protocol = Some(p.to_string());
        }
    }
    if protocol.as_deref() != Some("h2") {
        return Err(format!("h2load did not negotiate h2 ({protocol:?})"));
    }
    match (done, per_second) {
        (Some(requests), Some(per_second))
            if requests > 0 && ok.is_some_and(|ok| ok >= requests) =>
        {
            Ok(Load {
                requests,
                per_second,
                p50_p99: None,
                ok,
            })
        }
        _ => Err(format!("unreadable h2load output: {}", text.trim())),
    }
}

fn run_tool(mut cmd: Command) -> Result<String, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {program}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {} {}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}
