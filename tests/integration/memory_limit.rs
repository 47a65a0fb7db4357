//! The process-wide download cap in a memory-limited cgroup, as in a Kubernetes pod: by default
//! (`limits.max_streams = auto`) hubferry sizes the cap from the limit, so a crowd of downloads
//! is answered 503 beyond it instead of growing the process until the kernel's OOM killer cuts
//! every download at once.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::{Hubferry, RawDownload},
    world,
};

/// A memory cgroup of its own with a hard limit, removed on drop (its process must be gone).
struct Cgroup {
    dir: PathBuf,
    /// The `cgroup.procs` file a process joins by.
    procs: PathBuf,
}

impl Cgroup {
    /// `None` when this machine gives the tests no cgroup to make (not root, or no writable
    /// memory controller): say so and skip rather than fail.
    fn with_memory_limit(bytes: u64) -> Option<Cgroup> {
        let name = format!("hubferry-test-{}", std::process::id());
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (dir, limit_file) = if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            (v2.join(&name), "memory.max")
        } else if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else {
            return None;
        };
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Cgroup {
            procs: dir.join("cgroup.procs"),
            dir,
        };
        std::fs::write(cgroup.dir.join(limit_file), bytes.to_string()).ok()?;
        // No swap to spill to, where the kernel offers the knob: as in a pod.
        let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        Some(cgroup)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn alive(hf: &Hubferry) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(hf.child.id() as libc::pid_t, 0) } == 0;
    let status = std::fs::read_to_string(format!("/proc/{}/status", hf.child.id()));
    // A killed child is a zombie until reaped.
    exists && status.is_ok_and(|s| !s.contains("State:\tZ"))
}

/// 96 MiB: the cap is (96 - 64) MiB / 256 KiB = 128 downloads. 800 downloads whose clients do
/// not read hold about 130 KiB each in hubferry (see `capacity`): 100 MiB, past the limit, had
/// every one of them been served.
#[test]
fn a_crowd_of_downloads_in_a_small_cgroup_is_refused_not_oom_killed() {
    const LIMIT: u64 = 96 * 1024 * 1024;
    const CAP: usize = 128;
    const CROWD: usize = 800;
    let Some(cgroup) = Cgroup::with_memory_limit(LIMIT) else {
        eprintln!("skipped: no memory cgroup can be made here (run `make test` as root)");
        return;
    };
    let w = world::plain();
    let mut args = Hubferry::world_args(w, &w.registry_url);
    args.extend(FOLLOW_LOCAL_REDIRECTS.map(String::from));
    let hf = Hubferry::start_in_cgroup(&args, &cgroup.procs);
    let log = hf.log_text();
    assert!(
        log.contains(&format!(
            "at most {CAP} blob downloads at once: the memory limit of 96 MiB"
        )),
        "{log}"
    );

    let big = w.big_layer();
    let path = format!("/v2/library/big/blobs/{}", big.digest);
    let bearer = format!("Bearer {}", w.token(&["repository:library/big:pull"]));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n",
        hf.addr
    );
    // Every client asks, then none reads its body.
    let mut crowd: Vec<TcpStream> = (0..CROWD)
        .map(|_| {
            let mut stream = TcpStream::connect(&hf.addr).expect("hubferry accepts");
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for stream in &mut crowd {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut status = [0u8; 12];
        match stream.read_exact(&mut status) {
            Ok(()) if &status == b"HTTP/1.1 200" => served += 1,
            Ok(()) if &status == b"HTTP/1.1 503" => refused += 1,
            other => panic!(
                "neither served nor refused ({other:?}, {:?}); hubferry alive: {}",
                String::from_utf8_lossy(&status),
                alive(&hf)
            ),
        }
    }
    assert!(alive(&hf), "hubferry was killed");
    assert_eq!(served, CAP, "{refused} refused");
    assert_eq!(served + refused, CROWD);
    let rss = hf.rss_kib() * 1024;
    assert!(rss < LIMIT, "RSS {rss} is at the limit");

    // The crowd leaves: downloads are served again.
    drop(crowd);
    let headers = [("Authorization", bearer.as_str())];
    assert!(
        world::wait_until(Duration::from_secs(20), || {
            let mut download = RawDownload::start(&hf.addr, &path, &headers);
            download.read_some(12);
            download.received_starts_with(b"HTTP/1.1 200")
        }),
        "the crowd's slots were not given back"
    );
    assert!(alive(&hf));
}
