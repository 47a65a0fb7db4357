//! Collected measurements, the Markdown report and the SVG chart. Every figure comes from
//! `Results`, filled by this run; a measurement that failed is shown as failed, never filled in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::contenders::Kind;

/// Every run of every metric, per contender, in the order measured.
#[derive(Default)]
pub struct Results {
    series: BTreeMap<(String, Kind), Vec<Result<f64, String>>>,
    /// Contenders not measured at all in this run, and why (wharf without its source).
    pub absent: BTreeMap<Kind, String>,
}

/// The median of a metric's successful runs, with how many failed.
pub struct Measured {
    pub value: Option<f64>,
    pub runs: usize,
    pub failed: usize,
    pub error: Option<String>,
}

impl Results {
    pub fn add(&mut self, key: &str, kind: Kind, r: Result<f64, String>) {
        self.series
            .entry((key.to_string(), kind))
            .or_default()
            .push(r);
    }

    pub fn get(&self, key: &str, kind: Kind) -> Option<Measured> {
        let runs = self.series.get(&(key.to_string(), kind))?;
        let mut ok: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        ok.sort_by(f64::total_cmp);
        let error = runs.iter().find_map(|r| r.as_ref().err().cloned());
        Some(Measured {
            value: median(&ok),
            runs: runs.len(),
            failed: runs.len() - ok.len(),
            error,
        })
    }

    pub fn value(&self, key: &str, kind: Kind) -> Option<f64> {
        self.get(key, kind).and_then(|m| m.value)
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One table row: a metric key and how to print it.
struct Row {
    label: &'static str,
    key: &'static str,
    decimals: usize,
}

const fn row(label: &'static str, key: &'static str, decimals: usize) -> Row {
    Row {
        label,
        key,
        decimals,
    }
}

fn cell(results: &Results, key: &str, kind: Kind, decimals: usize) -> String {
    let Some(m) = results.get(key, kind) else {
        return if results.absent.contains_key(&kind) {
            "missing".into()
        } else {
            "—".into()
        };
    };
    let error = m.error.as_deref().map(short).unwrap_or_default();
    match m.value {
        Some(v) if m.failed == 0 => format!("{v:.decimals$}"),
        Some(v) => format!(
            "{v:.decimals$} ({}/{} runs failed: {error})",
            m.failed, m.runs
        ),
        None => format!("FAILED: {error}"),
    }
}

/// A failure reason short enough for a table cell, without characters that break it.
fn short(e: &str) -> String {
    let one_line: String = e
        .chars()
        .map(|c| if c == '|' || c == '\n' { ' ' } else { c })
        .collect();
    if one_line.chars().count() > 90 {
        format!("{}…", one_line.chars().take(90).collect::<String>())
    } else {
        one_line
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a >= 0.0 => Some(a / b),
        _ => None,
    }
}

fn show_ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

fn table(out: &mut String, results: &Results, title: &str, note: &str, rows: &[Row]) {
    let _ = writeln!(out, "### {title}\n");
    if !note.is_empty() {
        let _ = writeln!(out, "{note}\n");
    }
    let _ = writeln!(
        out,
        "| | direct | nginx-config | hubferry | wharf | hubferry / nginx-config | hubferry / wharf | hubferry / direct |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let v = |k| results.value(r.key, k);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            cell(results, r.key, Kind::Direct, r.decimals),
            cell(results, r.key, Kind::NginxConfig, r.decimals),
            cell(results, r.key, Kind::Hubferry, r.decimals),
            cell(results, r.key, Kind::Wharf, r.decimals),
            show_ratio(ratio(v(Kind::Hubferry), v(Kind::NginxConfig))),
            show_ratio(ratio(v(Kind::Hubferry), v(Kind::Wharf))),
            show_ratio(ratio(v(Kind::Hubferry), v(Kind::Direct))),
        );
    }
    let _ = writeln!(out);
}

/// The scenario tables, medians of every repetition.
pub fn tables(results: &Results, p: &crate::scenarios::Params, blob_mb: f64) -> String {
    let mut out = String::new();
    let reps = p.reps;
    table(
        &mut out,
        results,
        "1. Blob download, one client (MB/s)",
        &format!(
            "curl, {blob_mb:.0} MB blob through the registry's 307 to the CDN; median of {}.",
            p.blob1_reps
        ),
        &[
            row("HTTP/1.1, plain", "blob1.plain", 0),
            row("HTTP/2, TLS", "blob1.h2", 0),
        ],
    );
    table(
        &mut out,
        results,
        &format!("2. Blob download, {} clients at once", p.parallel_clients),
        &format!(
            "Aggregate = all bytes / wall time; peak RSS of the proxy (nginx: master + workers) \
             sampled every 50 ms; CPU per MB = user + system time of the proxy's process tree \
             from /proc over the run, over the MB delivered; median of {reps}."
        ),
        &[
            row("HTTP/1.1, plain: aggregate MB/s", "blob8.plain.mbps", 0),
            row("HTTP/1.1, plain: peak RSS MB", "blob8.plain.rss", 1),
            row("HTTP/1.1, plain: proxy CPU µs / MB", "blob8.plain.cpu", 0),
            row("HTTP/2, TLS: aggregate MB/s", "blob8.h2.mbps", 0),
            row("HTTP/2, TLS: peak RSS MB", "blob8.h2.rss", 1),
            row("HTTP/2, TLS: proxy CPU µs / MB", "blob8.h2.cpu", 0),
        ],
    );
    table(
        &mut out,
        results,
        "3. Manifest GETs, 64 connections",
        &format!(
            "`wrk -t2 -c64 -d{s}s` (HTTP/1.1) and `h2load -t2 -c64 -m10 -D{s}` (HTTP/2 over TLS); \
             CPU = user + system time of the proxy's process tree from /proc over the run, per \
             request; the registry's CPU per request is shown too, because the registry uses \
             most of the machine here and its own cost per request drifts from one run to the \
             next; median of {reps}.",
            s = p.manifest_secs
        ),
        &[
            row("HTTP/1.1: requests/s", "man.plain.rps", 0),
            row("HTTP/1.1: proxy CPU µs / request", "man.plain.cpu", 1),
            row(
                "HTTP/1.1: registry CPU µs / request",
                "man.plain.registry",
                0,
            ),
            row("HTTP/2, TLS: requests/s", "man.h2.rps", 0),
            row("HTTP/2, TLS: proxy CPU µs / request", "man.h2.cpu", 1),
            row(
                "HTTP/2, TLS: registry CPU µs / request",
                "man.h2.registry",
                0,
            ),
        ],
    );
    table(
        &mut out,
        results,
        "3b. Manifest GETs, 64 connections, proxy-bound (static upstream)",
        &format!(
            "As 3, but every contender (a second set, started for this scenario) is pointed at a \
             static nginx answering the manifest with the registry's headers (Content-Type, \
             Docker-Content-Digest, Docker-Distribution-Api-Version, ETag, Content-Length), so \
             the proxy, not the registry, is the bottleneck; direct = wrk/h2load against that \
             nginx. Every answer is counted: one GET per contender and protocol must return 200 \
             and the manifest's bytes before the runs, and a run with any answer but 200 (wrk, \
             by a Lua script) or 2xx (h2load) is a failure; {s} s after 1 s of warm-up; median \
             of {reps}.",
            s = p.manifest_secs
        ),
        &[
            row("HTTP/1.1: requests/s", "static.plain.rps", 0),
            row("HTTP/1.1: proxy CPU µs / request", "static.plain.cpu", 1),
            row("HTTP/2, TLS: requests/s", "static.h2.rps", 0),
            row("HTTP/2, TLS: proxy CPU µs / request", "static.h2.cpu", 1),
        ],
    );
    table(
        &mut out,
        results,
        "4. Manifest latency at one connection (ms)",
        &format!(
            "`wrk -t1 -c1 -d{}s --latency`, HTTP/1.1; \"added\" is the proxy's figure minus \
             direct's in the same repetition; median of {reps}.",
            p.latency_secs
        ),
        &[
            row("p50", "lat.p50", 3),
            row("p99", "lat.p99", 3),
            row("p50 added over direct", "lat.p50.added", 3),
            row("p99 added over direct", "lat.p99.added", 3),
        ],
    );
    table(
        &mut out,
        results,
        &format!(
            "5. Memory: idle, and {} clients reading slowly for {} s",
            p.slow_clients, p.slow_secs
        ),
        &format!(
            "RSS in MB (10^6 bytes) of the proxy's process tree; idle = after start and one \
             request per protocol. Slow clients: HTTP/1.1, each reading the big blob at {:.0} KB/s \
             with an 8 KiB socket receive buffer; RSS sampled each second from the moment all \
             had their response head. Every proxy gets its {n} clients at the same time \
             (memory, not speed, is measured here; the read rate shows each kept up); KB per \
             stream = (RSS max − idle RSS) / {n}, the memory each stream adds (KB = 10^3 \
             bytes); median of {reps}.",
            p.slow_rate as f64 / 1e3,
            n = p.slow_clients,
        ),
        &[
            row("idle RSS", "idle.rss", 1),
            row("slow clients: RSS at 1 s", "slow.rss.first", 1),
            row("slow clients: RSS at the end", "slow.rss.last", 1),
            row("slow clients: RSS max", "slow.rss.max", 1),
            row("slow clients: KB per stream", "slow.kb_per_stream", 0),
            row("slow clients: read rate per client, KB/s", "slow.rate", 1),
        ],
    );
    out
}

/// How a target compares a measured figure with its limit.
enum Check {
    /// hubferry / contender ≥ x (throughput).
    AtLeast(&'static str, Kind, f64),
    /// hubferry / contender ≤ x (cost: CPU, memory).
    AtMost(&'static str, Kind, f64),
    /// hubferry's own figure ≤ x (absolute limit).
    Below(&'static str, f64, &'static str),
}

struct Target {
    what: &'static str,
    check: Check,
}

const TARGETS: &[Target] = &[
    Target {
        what: "blob, 1 client, plain HTTP: ≥ 2.5× nginx-config",
        check: Check::AtLeast("blob1.plain", Kind::NginxConfig, 2.5),
    },
    Target {
        what: "blob, 1 client, plain HTTP: ≥ 0.5× direct",
        check: Check::AtLeast("blob1.plain", Kind::Direct, 0.5),
    },
    Target {
        what: "blob, 8 clients, plain HTTP: ≥ 2.5× nginx-config",
        check: Check::AtLeast("blob8.plain.mbps", Kind::NginxConfig, 2.5),
    },
    Target {
        what: "blob over TLS + HTTP/2, 1 client: ≥ 2× nginx-config",
        check: Check::AtLeast("blob1.h2", Kind::NginxConfig, 2.0),
    },
    Target {
        what: "blob over TLS + HTTP/2, 8 clients: ≥ 2× nginx-config",
        check: Check::AtLeast("blob8.h2.mbps", Kind::NginxConfig, 2.0),
    },
    Target {
        what: "blob, 1 client, plain HTTP: ≥ 1.15× wharf",
        check: Check::AtLeast("blob1.plain", Kind::Wharf, 1.15),
    },
    Target {
        what: "blob, 8 clients, plain HTTP: ≥ 1.15× wharf",
        check: Check::AtLeast("blob8.plain.mbps", Kind::Wharf, 1.15),
    },
    Target {
        what: "blob over TLS + HTTP/2, 1 client: ≥ 1.2× wharf",
        check: Check::AtLeast("blob1.h2", Kind::Wharf, 1.2),
    },
    Target {
        what: "blob over TLS + HTTP/2, 8 clients: ≥ 1.2× wharf",
        check: Check::AtLeast("blob8.h2.mbps", Kind::Wharf, 1.2),
    },
    Target {
        what: "blob, 8 clients, plain HTTP: proxy CPU per byte ≤ 0.85× wharf",
        check: Check::AtMost("blob8.plain.cpu", Kind::Wharf, 0.85),
    },
    Target {
        what: "manifests, HTTP/1.1: CPU per request ≤ 0.5× nginx-config",
        check: Check::AtMost("man.plain.cpu", Kind::NginxConfig, 0.5),
    },
    Target {
        what: "manifests, HTTP/2: CPU per request ≤ 0.5× nginx-config",
        check: Check::AtMost("man.h2.cpu", Kind::NginxConfig, 0.5),
    },
    Target {
        what: "manifests, HTTP/1.1: requests/s ≥ nginx-config",
        check: Check::AtLeast("man.plain.rps", Kind::NginxConfig, 1.0),
    },
    Target {
        what: "manifests, HTTP/2: requests/s ≥ nginx-config",
        check: Check::AtLeast("man.h2.rps", Kind::NginxConfig, 1.0),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/1.1: CPU per request ≤ 0.8× wharf",
        check: Check::AtMost("static.plain.cpu", Kind::Wharf, 0.8),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/1.1: CPU per request ≤ nginx-config",
        check: Check::AtMost("static.plain.cpu", Kind::NginxConfig, 1.0),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/1.1: requests/s ≥ 1.2× wharf",
        check: Check::AtLeast("static.plain.rps", Kind::Wharf, 1.2),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/2: CPU per request ≤ 0.8× wharf",
        check: Check::AtMost("static.h2.cpu", Kind::Wharf, 0.8),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/2: CPU per request ≤ nginx-config",
        check: Check::AtMost("static.h2.cpu", Kind::NginxConfig, 1.0),
    },
    Target {
        what: "manifests, proxy-bound, HTTP/2: requests/s ≥ 1.2× wharf",
        check: Check::AtLeast("static.h2.rps", Kind::Wharf, 1.2),
    },
    Target {
        what: "latency added at one connection: p99 ≤ 1 ms over direct",
        check: Check::Below("lat.p99.added", 1.0, "ms"),
    },
    Target {
        what: "RSS idle ≤ 15 MB",
        check: Check::Below("idle.rss", 15.0, "MB"),
    },
    Target {
        what: "RSS, 8 streams, plain HTTP: ≤ 40 MB",
        check: Check::Below("blob8.plain.rss", 40.0, "MB"),
    },
    Target {
        what: "RSS, 8 streams, TLS + HTTP/2: ≤ 40 MB",
        check: Check::Below("blob8.h2.rss", 40.0, "MB"),
    },
    Target {
        what: "RSS, 8 streams, plain HTTP: ≤ 0.6× wharf",
        check: Check::AtMost("blob8.plain.rss", Kind::Wharf, 0.6),
    },
    Target {
        what: "RSS, 8 streams, TLS + HTTP/2: ≤ 0.6× wharf",
        check: Check::AtMost("blob8.h2.rss", Kind::Wharf, 0.6),
    },
    Target {
        what: "RSS, 500 slow clients: ≤ 150 MB",
        check: Check::Below("slow.rss.max", 150.0, "MB"),
    },
    Target {
        what: "RSS, 500 slow clients: ≤ 300 KB per stream (max − idle, over 500)",
        check: Check::Below("slow.kb_per_stream", 300.0, "KB"),
    },
];

/// One evaluated target: the figure and whether it passed (None: not measured).
pub struct Verdict {
    pub what: &'static str,
    pub measured: String,
    pub pass: Option<bool>,
    /// What the chart draws: (figure, target), both as "higher is better" ratios.
    pub advantage: Option<(f64, f64)>,
}

fn not_measured(results: &Results, key: &str, kind: Kind) -> String {
    if let Some(why) = results.absent.get(&kind) {
        return format!("not measured ({} missing: {})", kind.name(), short(why));
    }
    match results.get(key, kind) {
        Some(m) => format!(
            "not measured ({} {key}: {})",
            kind.name(),
            m.error.as_deref().map(short).unwrap_or_default()
        ),
        None => format!("not measured ({} {key} did not run)", kind.name()),
    }
}

pub fn verdicts(results: &Results) -> Vec<Verdict> {
    TARGETS
        .iter()
        .map(|t| {
            let hf = |key| results.value(key, Kind::Hubferry);
            let (measured, pass, advantage) = match t.check {
                Check::AtLeast(key, other, min) => {
                    match ratio(hf(key), results.value(key, other)) {
                        Some(r) => (
                            format!(
                                "{r:.2}× ({:.0} vs {:.0})",
                                hf(key).unwrap(),
                                results.value(key, other).unwrap()
                            ),
                            Some(r >= min),
                            Some((r, min)),
                        ),
                        None => (missing(results, key, other), None, None),
                    }
                }
                Check::AtMost(key, other, max) => match ratio(hf(key), results.value(key, other)) {
                    Some(r) => (
                        format!(
                            "{r:.2}× ({:.1} vs {:.1})",
                            hf(key).unwrap(),
                            results.value(key, other).unwrap()
                        ),
                        Some(r <= max),
                        // Drawn as "times cheaper": the other / hubferry against 1 / max.
                        (r > 0.0).then(|| (1.0 / r, 1.0 / max)),
                    ),
                    None => (missing(results, key, other), None, None),
                },
                Check::Below(key, max, unit) => match hf(key) {
                    // Drawn as headroom, limit / measured, against 1.
                    Some(v) => (
                        format!("{v:.2} {unit}"),
                        Some(v <= max),
                        (v > 0.0).then(|| (max / v, 1.0)),
                    ),
                    None => (not_measured(results, key, Kind::Hubferry), None, None),
                },
            };
            Verdict {
                what: t.what,
                measured,
                pass,
                advantage,
            }
        })
        .collect()
}

fn missing(results: &Results, key: &str, other: Kind) -> String {
    if results.value(key, Kind::Hubferry).is_none() {
        not_measured(results, key, Kind::Hubferry)
    } else {
        not_measured(results, key, other)
    }
}

pub fn targets_table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("### Targets\n\n| target | measured | result |\n|---|---|---|\n");
    for v in verdicts {
        let result = match v.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "MISS (not measured)",
        };
        let _ = writeln!(out, "| {} | {} | {result} |", v.what, v.measured);
    }
    out
}
