//! Faults survived, injected for real: a relay between hubferry and the
//! CDN resets or stalls connections mid-blob, upstreams that never accept or never answer,
//! clients that leave, and far more connections than allowed.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    access_log, fakes,
    hubferry::{Hubferry, RawDownload},
    operations::{get_text, sample},
    relay::{Fault, Relay},
    skopeo, world,
};

const MB: u64 = 1_000_000;

fn pull_token(w: &world::World, repo: &str) -> String {
    format!("Bearer {}", w.token(&[&format!("repository:{repo}:pull")]))
}

/// A relay in front of the plain world's CDN, and a registry whose blob redirects go to it.
fn faulty_cdn(w: &world::World, plan: &[Fault]) -> (Relay, String, world::ManagedChild) {
    let relay = Relay::start(w.cdn_host(), plan);
    let (registry_url, child) = w.registry_redirecting_to(&format!("http://{}", relay.addr));
    (relay, registry_url, child)
}

/// SHA-256 of the big layer from byte `from` on.
fn big_layer_digest_from(from: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    for chunk in world::big_layer_chunks() {
        let len = chunk.len() as u64;
        if offset + len > from {
            let skip = from.saturating_sub(offset) as usize;
            hasher.update(&chunk[skip..]);
        }
        offset += len;
    }
    format!("sha256:{:x}", hasher.finalize())
}

#[test]
fn downloads_cut_again_and_again_are_resumed_and_skopeo_gets_every_byte() {
    let w = world::plain();
    // Two resets and a stall during the 100 MiB layer.
    let plan = [
        Fault::CutAfter(20 * MB),
        Fault::CutAfter(25 * MB),
        Fault::StallAfter(30 * MB),
    ];
    let (relay, registry, _child) = faulty_cdn(w, &plan);
    let hf = Hubferry::for_registry(
        w,
        &registry,
        &[
            "--idle-timeout",
            "1s",
            "--resume-backoff",
            "50ms",
            FOLLOW_LOCAL_REDIRECTS[0],
            FOLLOW_LOCAL_REDIRECTS[1],
        ],
    );
    let big = w.image("library/big");
    let through = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };
    let dir = skopeo::pull(&through, &big.reference(), &[]);
    skopeo::assert_blobs_copied(&dir, &big.blobs);

    assert!(
        relay.connections() >= 4,
        "{} connections",
        relay.connections()
    );
    let log = hf.log_text();
    assert_eq!(log.matches("resuming ").count(), 3, "{log}");
    assert!(log.contains("was idle for 1s"), "{log}");
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap()));
    assert_eq!(
        sample(
            &metrics,
            r#"hubferry_download_resumes_total{outcome="resumed"}"#
        ),
        3.0,
        "{metrics}"
    );
    // Every resumed request asked the CDN for the rest, and only the rest.
    let ranges: Vec<_> = w
        .cdn_log()
        .into_iter()
        .filter_map(|e| e.range)
        .filter(|r| {
            r.starts_with("bytes=") && r.ends_with(&format!("-{}", big.largest_blob().size - 1))
        })
        .collect();
    assert!(ranges.len() >= 3, "{ranges:?}");
}

#[test]
fn a_resumed_download_keeps_the_range_the_client_asked_for() {
    let w = world::plain();
    let (_relay, registry, _child) =
        faulty_cdn(w, &[Fault::CutAfter(10 * MB), Fault::CutAfter(30 * MB)]);
    let hf = Hubferry::for_registry(
        w,
        &registry,
        &[&["--resume-backoff", "50ms"], &FOLLOW_LOCAL_REDIRECTS[..]].concat(),
    );
    let big = w.big_layer();
    let from = 12_345_678u64;
    let res = RawDownload::start(
        &hf.addr,
        &format!("/v2/library/big/blobs/{}", big.digest),
        &[
            ("Authorization", &pull_token(w, "library/big")),
            ("Range", &format!("bytes={from}-")),
        ],
    )
    .finish();
    assert_eq!(res.status, 206);
    assert_eq!(
        res.header("content-range"),
        Some(format!("bytes {from}-{}/{}", big.size - 1, big.size).as_str())
    );
    assert_eq!(res.body.len() as u64, big.size - from);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&res.body)),
        big_layer_digest_from(from)
    );
    assert_eq!(hf.log_text().matches("resuming ").count(), 2);
    // Its access line counts both resumes and says the client got it all.
    let lines = access_log::wait_for_lines(&hf, &big.digest, 1);
    assert!(
        lines[0].contains(" outcome=complete resumes=2 "),
        "{}",
        lines[0]
    );
}

/// What a strict client sees when a download cannot be completed: the promised length and
/// fewer bytes before the connection closes. Never a body that looks complete.
fn assert_aborted(hf: &Hubferry, path: &str, headers: &[(&str, &str)], length: u64) {
    let res = RawDownload::start(&hf.addr, path, headers).finish();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(
        res.header("content-length"),
        Some(length.to_string().as_str())
    );
    assert!(
        (res.body.len() as u64) < length,
        "a broken download was passed off as complete"
    );
}

#[test]
fn resume_gives_up_after_its_tries_and_aborts_the_client() {
    let w = world::plain();
    // One break with progress, then every try is cut before a byte comes.
    let mut plan = vec![Fault::CutAfter(5 * MB)];
    plan.extend([Fault::CutAfter(0); 10]);
    let (_relay, registry, _child) = faulty_cdn(w, &plan);
    let hf = Hubferry::for_registry(
        w,
        &registry,
        &[
            "--resume-attempts",
            "2",
            "--resume-backoff",
            "20ms",
            FOLLOW_LOCAL_REDIRECTS[0],
            FOLLOW_LOCAL_REDIRECTS[1],
        ],
    );
    let big = w.big_layer();
    assert_aborted(
        &hf,
        &format!("/v2/library/big/blobs/{}", big.digest),
        &[("Authorization", &pull_token(w, "library/big"))],
        big.size,
    );
    let log = hf.log_text();
    assert!(log.contains("gave up after 2 tries in a row"), "{log}");
    let lines = access_log::wait_for_lines(&hf, &big.digest, 1);
    assert!(lines[0].contains(" outcome=failed "), "{}", lines[0]);
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap()));
    assert_eq!(
        sample(
            &metrics,
            r#"hubferry_download_resumes_total{outcome="gave_up"}"#
        ),
        1.0
    );
}

#[test]
fn an_upstream_that_ignores_ranges_or_changes_the_blob_aborts_the_client() {
    let upstream = fakes::flaky_blobs();
    let hf = Hubferry::start_with(&[
        "--registry",
        &upstream,
        "--resume-backoff",
        "20ms",
        "--idle-timeout",
        "2s",
    ]);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let path = |mode: &str| format!("/v2/{mode}/blobs/{digest}");
    // The first answer breaks after 100 kB; the second is a 200 of the whole blob.
    assert_aborted(&hf, &path("ignores-ranges"), &[], fakes::FLAKY_BLOB_LEN);
    // The first answer breaks; the second is the asked range of a blob with another ETag.
    assert_aborted(&hf, &path("changes"), &[], fakes::FLAKY_BLOB_LEN);
    let log = hf.log_text();
    assert!(log.contains("200 OK instead of 206"), "{log}");
    assert!(log.contains("etag changed"), "{log}");
}

#[test]
fn a_client_that_leaves_mid_blob_closes_the_upstream_within_a_second() {
    let w = world::plain();
    let (relay, registry, _child) = faulty_cdn(w, &[]);
    let hf = Hubferry::for_registry(w, &registry, &FOLLOW_LOCAL_REDIRECTS);
    let big = w.big_layer();
    let mut download = RawDownload::start(
        &hf.addr,
        &format!("/v2/library/big/blobs/{}", big.digest),
        &[("Authorization", &pull_token(w, "library/big"))],
    );
    download.read_some(4 << 20);
    assert_eq!(relay.connections(), 1);
    assert!(relay.wait_closed(0, Duration::ZERO).is_none());
    let left = Instant::now();
    drop(download);
    let closed = relay
        .wait_closed(0, Duration::from_secs(5))
        .expect("hubferry kept reading from the CDN for a client that left");
    assert!(
        closed.duration_since(left) < Duration::from_secs(1),
        "the CDN connection closed {:?} after the client left",
        closed.duration_since(left)
    );
    assert!(
        relay.passed(0) < big.size,
        "the whole blob was fetched anyway"
    );
}

/// An upstream whose accept queue is full: connection attempts hang (SYNs dropped).
fn never_accepting() -> (String, Vec<TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; it becomes a TcpListener below.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::bind(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        std::net::TcpListener::from_raw_fd(fd)
    };
    let addr = listener.local_addr().unwrap();
    // Fill the queue: nothing is ever accepted.
    let mut fillers = Vec::new();
    while fillers.len() < 8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    std::mem::forget(listener);
    (format!("http://{addr}"), fillers)
}

#[test]
fn connect_and_header_timeouts_answer_504_in_time_and_others_are_served() {
    let (blackhole, _fillers) = never_accepting();
    let hf = Hubferry::start_with(&["--registry", &blackhole, "--connect-timeout", "1s"]);
    let started = Instant::now();
    let (status, body) = get_text(&format!("{}/v2/library/alpine/manifests/latest", hf.url));
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("\"errors\""), "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        hf.log_text()
            .contains("did not accept the connection within 1s"),
        "{}",
        hf.log_text()
    );

    // While one request waits on a silent upstream, others are answered.
    let (silent, asked) = fakes::silent_reporting();
    let hf = Hubferry::start_with(&["--registry", &silent, "--response-timeout", "2s"]);
    let url = format!("{}/v2/x/manifests/latest", hf.url);
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        (get_text(&url).0, started.elapsed())
    });
    asked
        .recv_timeout(Duration::from_secs(10))
        .expect("hubferry never asked the upstream");
    assert_eq!(get_text(&format!("{}/v2/_catalog", hf.url)).0, 404);
    let (status, took) = waiting.join().unwrap();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "took {took:?}"
    );
}

#[test]
fn far_more_connections_than_allowed_wait_their_turn_in_bounded_memory() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start_with(&[
        "--registry",
        &upstream,
        "--workers",
        "1",
        "--max-connections",
        "8",
    ]);
    let baseline = hf.rss_kib();
    let clients: Vec<_> = (0..400)
        .map(|i| {
            let addr = hf.addr.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                write!(
                    stream,
                    "GET /v2/client/{i}/manifests/latest HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok::<_, std::io::Error>(answer)
            })
        })
        .collect();
    // Sampled at each look until every client is done.
    let mut peak = baseline;
    let done = world::wait_until(Duration::from_secs(90), || {
        peak = peak.max(hf.rss_kib());
        clients.iter().all(|c| c.is_finished())
    });
    assert!(done, "the clients never finished");
    let mut served = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let answer = client.join().unwrap().expect("client failed");
        assert!(answer.starts_with("HTTP/1.1 200"), "client {i}: {answer}");
        assert!(answer.contains(&format!("/v2/client/{i}/manifests/latest")));
        served += 1;
    }
    assert_eq!(served, 400);
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 30,
        "hubferry grew by {grown_mib} MiB under 400 connections"
    );
}
