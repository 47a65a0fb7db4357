//! How many blob downloads one process may stream at once (`limits.max_streams = "auto"`):
//! sized from the memory limit of its cgroup (a Kubernetes pod's `resources.limits.memory`, a
//! systemd `MemoryMax=`), so that a crowd of downloads is refused with 503s before it can make
//! the kernel kill the process and every download in it.
//!
//! What a download costs, measured on a release build with 2 workers against the test world
//! (RSS growth divided by the streams open at the peak): about 130 KiB for an HTTP/1.1 download
//! whatever the client's pace (300 reading at 64 KB/s, 300 not reading at all, 200 reading as
//! fast as they can), about 100 KiB for an HTTP/2 stream read at full speed and 45 KiB for one
//! that is not read; with only 16 fast HTTP/1.1 downloads, 250 KiB each, fixed costs included.
//! [`STREAM_COST`] budgets 256 KiB, the worst of these, about twice the usual. A download read
//! faster than 64 MB/s holds up to 384 KiB more (upstream reads grow for it: patches/actix-http,
//! change 4); a link carries few of those at once (about 20 on 10 Gbit/s), and [`RESERVE`]
//! covers them.

use std::path::Path;

/// Memory budgeted per blob download.
pub const STREAM_COST: u64 = 256 * 1024;
/// Memory kept for everything but downloads: the idle process (11 MB), client connections,
/// manifest and token traffic, the per-client table, the allocator's slack.
pub const RESERVE: u64 = 64 * 1024 * 1024;
/// The cap when no memory limit is found (a server of its own): 1024 downloads, 256 MiB at
/// [`STREAM_COST`], about 140 MB as measured.
pub const UNLIMITED_DEFAULT: usize = 1024;
/// Never fewer: a mirror must serve a few pulls even in a tiny cgroup.
pub const MIN_STREAMS: usize = 16;
/// A cgroup v1 "limit" at least this large means none (the kernel reports 2^63 rounded down to
/// a page).
const NO_LIMIT: u64 = 1 << 60;

/// The download cap for a memory limit (`None`: no limit found).
pub fn max_streams_for(memory_limit: Option<u64>) -> usize {
    match memory_limit {
        None => UNLIMITED_DEFAULT,
        Some(limit) => {
            let streams = limit.saturating_sub(RESERVE) / STREAM_COST;
            usize::try_from(streams)
                .unwrap_or(usize::MAX)
                .max(MIN_STREAMS)
        }
    }
}

/// The memory limit this process runs under: the lowest `memory.max` (cgroup v2) or
/// `memory.limit_in_bytes` (v1) from its own cgroup up to the root of the hierarchy it can see.
pub fn memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = Path::new("/sys/fs/cgroup");
    let mut lowest: Option<u64> = None;
    for (dir, file) in limit_files(&own) {
        let base = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(dir)
        };
        for ancestor in cgroup_ancestors(&base, root) {
            let limit = std::fs::read_to_string(ancestor.join(file))
                .ok()
                .and_then(|text| parse_limit(&text));
            if let Some(limit) = limit {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
        }
    }
    lowest
}

/// Where to look, from `/proc/self/cgroup`: (directory under `/sys/fs/cgroup`, file name) for
/// the v2 hierarchy (`0::<path>`) and the v1 memory controller (`N:...memory...:<path>`).
fn limit_files(proc_self_cgroup: &str) -> Vec<(String, &'static str)> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim().trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            files.push((path.to_owned(), "memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = if path.is_empty() {
                "memory".to_owned()
            } else {
                format!("memory/{path}")
            };
            files.push((dir, "memory.limit_in_bytes"));
        }
    }
    files
}

/// `dir` and its parents up to `root`, nearest first. Inside a container's cgroup namespace
/// `/proc/self/cgroup` says `/` and `dir` is `root` itself.
fn cgroup_ancestors(dir: &Path, root: &Path) -> Vec<std::path::PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

/// A limit file's content: bytes, or `None` for `max` (v2) and the v1 "no limit" value.
fn parse_limit(text: &str) -> Option<u64> {
    let limit = text.trim().parse::<u64>().ok()?;
    (limit < NO_LIMIT).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_cap_leaves_the_reserve_and_budgets_each_stream() {
        // The Kubernetes manifest's 512 MiB: (512 - 64) MiB at 256 KiB each.
        assert_eq!(max_streams_for(Some(512 * MIB)), 1792);
        assert_eq!(max_streams_for(Some(2048 * MIB)), 7936);
        assert_eq!(max_streams_for(None), UNLIMITED_DEFAULT);
        // A tiny cgroup still serves a few downloads.
        assert_eq!(max_streams_for(Some(64 * MIB)), MIN_STREAMS);
        assert_eq!(max_streams_for(Some(0)), MIN_STREAMS);
        // The budget holds: reserve plus every stream at its cost fits the limit.
        for limit in [128 * MIB, 512 * MIB, 3 * 1024 * MIB] {
            let streams = max_streams_for(Some(limit)) as u64;
            assert!(RESERVE + streams * STREAM_COST <= limit, "{limit}");
        }
    }

    #[test]
    fn limit_files_are_found_for_both_cgroup_versions() {
        // cgroup v2, a systemd service.
        assert_eq!(
            limit_files("0::/system.slice/hubferry.service\n"),
            [("system.slice/hubferry.service".to_owned(), "memory.max")]
        );
        // cgroup v2 inside a container's namespace.
        assert_eq!(limit_files("0::/\n"), [(String::new(), "memory.max")]);
        // cgroup v1 (and the hybrid layout's empty v2 line).
        let v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(
            limit_files(v1),
            [
                ("memory/docker/abc".to_owned(), "memory.limit_in_bytes"),
                (String::new(), "memory.max")
            ]
        );
        assert_eq!(
            limit_files("4:memory:/\n"),
            [("memory".to_owned(), "memory.limit_in_bytes")]
        );
        assert!(limit_files("garbage").is_empty());
    }

    #[test]
    fn limits_read_as_bytes_or_none() {
        assert_eq!(parse_limit("536870912\n"), Some(512 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn ancestors_stop_at_the_hierarchy_root() {
        let root = Path::new("/sys/fs/cgroup");
        let found = cgroup_ancestors(Path::new("/sys/fs/cgroup/memory/a/b"), root);
        let found: Vec<_> = found.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            found,
            [
                "/sys/fs/cgroup/memory/a/b",
                "/sys/fs/cgroup/memory/a",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup"
            ]
        );
    }
}
