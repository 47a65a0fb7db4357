//! Memory and CPU of a proxy from /proc, summed over its process tree: nginx serves from
//! worker processes under a master, hubferry from threads of one process (which /proc already
//! sums per process).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `pid` and every descendant, found by scanning /proc for parent pids. Re-scanned on every
/// call so a respawned nginx worker is still counted.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(fields) = stat_fields(p) {
                if let Some(ppid) = fields.get(1).and_then(|f| f.parse().ok()) {
                    parents.push((p, ppid));
                }
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found
}

/// The first of this process's descendants whose command name is `comm` (e.g. the test
/// world's `docker-registry`, started by the bench itself).
pub fn descendant_named(comm: &str) -> Option<u32> {
    tree(std::process::id()).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == comm)
    })
}

/// The fields of /proc/PID/stat after the `(comm)` field, which may itself hold spaces:
/// index 0 is the state, 1 the parent pid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Resident memory of the whole tree in KiB (VmRSS summed, so pages shared between nginx's
/// master and workers count once per process, as `ps` would show them). None if `pid` is gone.
pub fn tree_rss_kib(pid: u32) -> Option<u64> {
    let mut total = 0;
    for (i, p) in tree(pid).into_iter().enumerate() {
        match rss_kib(p) {
            Some(kib) => total += kib,
            None if i == 0 => return None,
            None => {} // a worker that exited between the scan and the read
        }
    }
    Some(total)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn ticks_to_us(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / ticks_per_s
}

/// Sum of stat fields `idx` (post-comm numbering) over the tree of `pid`.
fn tree_ticks(pid: u32, idx: &[usize]) -> Option<u64> {
    let mut ticks = 0;
    for p in tree(pid) {
        let f = stat_fields(p)?;
        for &i in idx {
            ticks += f.get(i)?.parse::<u64>().ok()?;
        }
    }
    Some(ticks)
}

/// User + system CPU time of the whole tree, in microseconds.
pub fn tree_cpu_us(pid: u32) -> Option<u64> {
    tree_ticks(pid, &[11, 12]).map(ticks_to_us)
}

/// CPU time the whole machine spent busy, and the part spent outside this benchmark (its own
/// process, the world, the contenders and the load generators, counting exited children
/// through cutime/cstime): the second says how much other work shared the machine.
pub struct MachineCpu {
    busy_us: u64,
    ours_us: u64,
}

impl MachineCpu {
    pub fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
        let ours = tree_ticks(std::process::id(), &[11, 12, 13, 14])?;
        Some(MachineCpu {
            busy_us: ticks_to_us(busy),
            ours_us: ticks_to_us(ours),
        })
    }

    /// Seconds of CPU used by other processes since `earlier`.
    pub fn foreign_secs_since(&self, earlier: &MachineCpu) -> f64 {
        let busy = self.busy_us.saturating_sub(earlier.busy_us);
        let ours = self.ours_us.saturating_sub(earlier.ours_us);
        busy.saturating_sub(ours) as f64 / 1e6
    }
}

/// Samples a tree's RSS on a thread every `every` until stopped; `stop` returns the samples.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = tree_rss_kib(pid) {
                    samples.push(kib);
                }
                std::thread::sleep(every);
            }
            if let Some(kib) = tree_rss_kib(pid) {
                samples.push(kib);
            }
            samples
        });
        RssSampler { stop, handle }
    }

    /// Peak RSS in KiB over the sampling, or None if nothing could be read.
    pub fn stop_peak(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok()?.into_iter().max()
    }
}
