//! Access control and per-client limits, from real sockets: the test
//! is client 127.0.0.1, and a socket bound to 127.0.0.2 is a second client; a trusted proxy's
//! `X-Forwarded-For` stands in for clients elsewhere (IPv4 and IPv6).

use std::time::{Duration, Instant};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes,
    hubferry::{raw_get, raw_get_from, Hubferry, RawDownload, RawResponse},
    operations::{get_text, sample},
    skopeo, world,
};

fn pull_token(w: &world::World, repo: &str) -> String {
    format!("Bearer {}", w.token(&[&format!("repository:{repo}:pull")]))
}

/// The registry error code of a JSON error body.
fn error_code(res: &RawResponse) -> String {
    let body: serde_json::Value = serde_json::from_slice(&res.body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&res.body)));
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn refusals(hf: &Hubferry, reason: &str) -> f64 {
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap()));
    sample(
        &metrics,
        &format!(r#"hubferry_client_refusals_total{{reason="{reason}"}}"#),
    )
}

#[test]
fn allow_and_deny_lists_judge_the_peer() {
    let w = world::plain();
    // Deny wins over allow: 127.0.0.1 is in both.
    let hf = Hubferry::for_world(w, &["--allow", "127.0.0.0/8", "--deny", "127.0.0.1"]);
    let res = raw_get(&hf.addr, "/v2/", &[]);
    assert_eq!(res.status, 403);
    assert_eq!(error_code(&res), "DENIED");
    assert_eq!(res.header("content-type"), Some("application/json"));
    // Nothing reached the registry for it, and the refusal is logged and counted.
    let res = raw_get_from("127.0.0.2", &hf.addr, "/v2/", &[]);
    assert_eq!(res.status, 401, "127.0.0.2 is allowed");
    assert!(res.header("www-authenticate").unwrap().contains(&hf.addr));
    assert_eq!(refusals(&hf, "denied"), 1.0);
    let log = hf.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(r#"127.0.0.1 "GET /v2/ HTTP/1.1" 403"#)),
        "{log}"
    );
    assert!(
        log.contains("access from 127.0.0.1 is not allowed"),
        "{log}"
    );

    // An allow list that does not hold the client refuses it.
    let hf = Hubferry::for_world(w, &["--allow", "10.0.0.0/8,127.0.0.2"]);
    assert_eq!(raw_get(&hf.addr, "/v2/", &[]).status, 403);
    assert_eq!(raw_get_from("127.0.0.2", &hf.addr, "/v2/", &[]).status, 401);
}

#[test]
fn skopeo_pulls_when_allowed_and_is_told_denied_otherwise() {
    let w = world::plain();
    let nginx = w.image("library/nginx");
    let allowed = Hubferry::for_world(
        w,
        &[
            &["--allow", "127.0.0.1/32,::1"],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let registry = skopeo::Registry {
        host: &allowed.addr,
        ca_file: None,
    };
    let dir = skopeo::pull(&registry, &nginx.reference(), &[]);
    skopeo::assert_blobs_copied(&dir, &nginx.blobs);

    let denied = Hubferry::for_world(w, &["--deny", "127.0.0.0/8"]);
    let registry = skopeo::Registry {
        host: &denied.addr,
        ca_file: None,
    };
    let scratch = tempfile::tempdir().unwrap();
    let said = skopeo::try_pull(
        &registry,
        &nginx.reference(),
        &["--retry-times=0"],
        scratch.path(),
    )
    .unwrap_err();
    // skopeo's first request, the /v2/ version check, is refused.
    assert!(said.contains("403 (Forbidden)"), "{said}");
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &["--trusted-proxy", "127.0.0.1", "--allow", "203.0.113.0/24"],
    );
    let via = |source: &str, forwarded: &str| {
        raw_get_from(source, &hf.addr, "/v2/", &[("X-Forwarded-For", forwarded)]).status
    };
    // The trusted proxy (127.0.0.1) forwards for an allowed client.
    assert_eq!(via("127.0.0.1", "203.0.113.9"), 401);
    // A client-written left part is not believed: the right-most untrusted hop is the client.
    assert_eq!(via("127.0.0.1", "203.0.113.9, 198.51.100.1"), 403);
    assert_eq!(via("127.0.0.1", "198.51.100.1, 203.0.113.9"), 401);
    // An untrusted peer cannot claim to be someone else.
    assert_eq!(via("127.0.0.2", "203.0.113.9"), 403);
    // No header from the proxy: the proxy itself is the client, and it is not allowed.
    assert_eq!(raw_get(&hf.addr, "/v2/", &[]).status, 403);
    // The access log names the client the proxy forwarded for.
    let log = hf.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(r#"203.0.113.9 "GET /v2/ HTTP/1.1" 401"#)),
        "{log}"
    );
}

#[test]
fn deny_lists_refuse_ipv4_clients_in_every_ipv6_form() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &["--trusted-proxy", "127.0.0.1", "--deny", "203.0.113.0/24"],
    );
    let via = |forwarded: &str| raw_get(&hf.addr, "/v2/", &[("X-Forwarded-For", forwarded)]);
    // 203.0.113.9 as a translator, a 6to4 relay or an old stack would present it.
    let forms = [
        "203.0.113.9",
        "::ffff:203.0.113.9",
        "::203.0.113.9",
        "64:ff9b::203.0.113.9",
        "2002:cb00:7109::1",
    ];
    for client in forms {
        let res = via(client);
        assert_eq!(res.status, 403, "{client} got past the deny list");
        assert_eq!(error_code(&res), "DENIED");
    }
    // Other IPv4 addresses in the same forms are served.
    for client in ["198.51.100.1", "64:ff9b::198.51.100.1", "2002:c633:6401::1"] {
        assert_eq!(via(client).status, 401, "{client} was refused");
    }
    assert_eq!(refusals(&hf, "denied"), forms.len() as f64);
}

#[test]
fn allow_lists_admit_an_ipv4_entry_as_the_address_or_its_mapped_form_only() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--allow",
            "203.0.113.0/24,2002:c633:6400::/40",
        ],
    );
    let via = |forwarded: &str| raw_get(&hf.addr, "/v2/", &[("X-Forwarded-For", forwarded)]).status;
    assert_eq!(via("203.0.113.9"), 401);
    assert_eq!(via("::ffff:203.0.113.9"), 401);
    // Addresses any IPv6 host can take that merely name 203.0.113.9 are not it.
    assert_eq!(via("::203.0.113.9"), 403);
    assert_eq!(via("64:ff9b::203.0.113.9"), 403);
    assert_eq!(via("2002:cb00:7109::1"), 403);
    // An IPv6 entry admits them.
    assert_eq!(via("2002:c633:6401::1"), 401);
}

#[test]
fn a_dual_stack_listener_judges_ipv4_peers_by_their_ipv4_address() {
    let w = world::plain();
    // Listening on [::], hubferry sees 127.0.0.1 as ::ffff:127.0.0.1.
    let listen = format!("[::]:{}", world::free_port());
    let hf = Hubferry::for_world(w, &["--listen", &listen, "--deny", "127.0.0.1"]);
    assert_eq!(raw_get(&hf.addr, "/v2/", &[]).status, 403);
    assert_eq!(raw_get_from("127.0.0.2", &hf.addr, "/v2/", &[]).status, 401);

    let listen = format!("[::]:{}", world::free_port());
    let hf = Hubferry::for_world(w, &["--listen", &listen, "--allow", "127.0.0.2"]);
    assert_eq!(raw_get_from("127.0.0.2", &hf.addr, "/v2/", &[]).status, 401);
    assert_eq!(raw_get(&hf.addr, "/v2/", &[]).status, 403);
}

#[test]
fn manifest_requests_are_limited_per_client_per_minute() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            "--manifests-per-minute",
            "3",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    );
    let alpine = w.image("library/alpine");
    let bearer = pull_token(w, "library/alpine");
    let path = format!("/v2/library/alpine/manifests/{}", alpine.tag);
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Accept", world::OCI_INDEX),
    ];
    for _ in 0..3 {
        assert_eq!(
            raw_get_from("127.0.0.2", &hf.addr, &path, &headers).status,
            200
        );
    }
    let res = raw_get_from("127.0.0.2", &hf.addr, &path, &headers);
    assert_eq!(res.status, 429);
    assert_eq!(error_code(&res), "TOOMANYREQUESTS");
    // 3 a minute: the next one is due in 20 s at most.
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After: {retry}");
    // HEAD counts too; other endpoints do not.
    let head = world_head(&hf.addr, "127.0.0.2", &path, &bearer);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert_eq!(raw_get_from("127.0.0.2", &hf.addr, "/v2/", &[]).status, 401);
    // Another client has its own budget.
    assert_eq!(raw_get(&hf.addr, &path, &headers).status, 200);
    assert_eq!(refusals(&hf, "manifest_rate"), 2.0);

    // Behind a trusted proxy, IPv6 clients are counted by their /64.
    let from = |client: &str| {
        let mut headers = headers.to_vec();
        headers.push(("X-Forwarded-For", client));
        raw_get(&hf.addr, &path, &headers).status
    };
    for host in ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"] {
        assert_eq!(from(host), 200, "{host}");
    }
    assert_eq!(from("2001:db8:0:1::4"), 429, "the same /64");
    assert_eq!(from("2001:db8:0:2::1"), 200, "another /64");
}

/// `HEAD path` from `source`, the status line and headers as text.
fn world_head(addr: &str, source: &str, path: &str, bearer: &str) -> String {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    socket.connect(&target.into()).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    stream.read_to_string(&mut head).unwrap();
    head
}

#[test]
fn skopeo_waits_out_retry_after_and_its_pull_completes() {
    let w = world::plain();
    // 30 a minute: one every 2 s once the burst is spent.
    let hf = Hubferry::for_world(
        w,
        &[
            &["--manifests-per-minute", "30"],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let alpine = w.image("library/alpine");
    let bearer = pull_token(w, "library/alpine");
    let path = format!("/v2/library/alpine/manifests/{}", alpine.tag);
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Accept", world::OCI_INDEX),
    ];
    while raw_get(&hf.addr, &path, &headers).status != 429 {}
    // containers/image honours Retry-After on a 429 and tries again.
    let started = Instant::now();
    let registry = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };
    let dir = skopeo::pull(&registry, &alpine.reference(), &[]);
    assert!(dir.join("manifest.json").is_file());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(refusals(&hf, "manifest_rate") >= 2.0);
    let log = hf.log_text();
    assert!(
        log.lines()
            .filter(|l| l.contains("/manifests/") && l.contains("\" 429 "))
            .count()
            >= 2,
        "{log}"
    );
}

#[test]
fn concurrent_blob_downloads_are_limited_per_client() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            &["--blob-streams-per-client", "2"],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let big = w.big_layer();
    let big_path = format!("/v2/library/big/blobs/{}", big.digest);
    let big_bearer = pull_token(w, "library/big");
    let big_headers = [("Authorization", big_bearer.as_str())];
    let alpine = w.image("library/alpine");
    let small = alpine.layers().next().unwrap();
    let small_path = format!("/v2/library/alpine/blobs/{}", small.digest);
    let small_bearer = pull_token(w, "library/alpine");
    let small_headers = [("Authorization", small_bearer.as_str())];

    // Two slow downloads of the 100 MiB layer, each read a little and then left waiting.
    let mut downloads: Vec<RawDownload> = (0..2)
        .map(|_| {
            let mut d = RawDownload::start(&hf.addr, &big_path, &big_headers);
            d.read_some(1 << 20);
            d
        })
        .collect();
    let res = raw_get(&hf.addr, &small_path, &small_headers);
    assert_eq!(res.status, 429);
    assert_eq!(error_code(&res), "TOOMANYREQUESTS");
    assert_eq!(res.header("retry-after"), Some("10"));
    // HEAD streams nothing and is not counted; another client has its own slots.
    let head = world_head(&hf.addr, "127.0.0.1", &small_path, &small_bearer);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let res = raw_get_from("127.0.0.2", &hf.addr, &small_path, &small_headers);
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len() as u64, small.size);
    assert_eq!(refusals(&hf, "blob_streams"), 1.0);

    // One download finishes: its slot is given back.
    let finished = downloads.remove(0).finish();
    assert_eq!(finished.body.len() as u64, big.size);
    let res = poll_status(&hf.addr, &small_path, &small_headers, 200);
    assert_eq!(res.body.len() as u64, small.size);
    // The other client leaves mid-download: its slot is given back too, so two fit again.
    drop(downloads);
    assert!(
        world::wait_until(Duration::from_secs(10), || {
            let mut both = (0..2).map(|_| {
                let mut d = RawDownload::start(&hf.addr, &big_path, &big_headers);
                d.read_some(12);
                d
            });
            let first = both.next().unwrap();
            let second = both.next().unwrap();
            [&first, &second]
                .iter()
                .all(|d| d.received_starts_with(b"HTTP/1.1 200"))
        }),
        "an abandoned download kept its slot"
    );
}

/// The process-wide cap (`limits.max_streams`): beyond it every client gets 503 `UNAVAILABLE`
/// with `Retry-After` at once, before anything goes upstream, instead of another stream that
/// could take the process past its memory limit. Manifests and HEADs are not counted.
#[test]
fn concurrent_blob_downloads_are_capped_for_the_whole_process() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[&["--max-streams", "3"], &FOLLOW_LOCAL_REDIRECTS[..]].concat(),
    );
    let big = w.big_layer();
    let big_path = format!("/v2/library/big/blobs/{}", big.digest);
    let big_bearer = pull_token(w, "library/big");
    let big_headers = [("Authorization", big_bearer.as_str())];
    let alpine = w.image("library/alpine");
    let small = alpine.layers().next().unwrap();
    let small_path = format!("/v2/library/alpine/blobs/{}", small.digest);
    let small_bearer = pull_token(w, "library/alpine");
    let small_headers = [("Authorization", small_bearer.as_str())];

    // Three slow downloads of the 100 MiB layer from two clients fill the process.
    let mut downloads: Vec<RawDownload> = ["127.0.0.1", "127.0.0.2", "127.0.0.2"]
        .iter()
        .map(|source| {
            let mut d = RawDownload::start_from(source, &hf.addr, &big_path, &big_headers);
            d.read_some(1 << 20);
            d
        })
        .collect();
    for source in ["127.0.0.1", "127.0.0.3"] {
        let res = raw_get_from(source, &hf.addr, &small_path, &small_headers);
        assert_eq!(res.status, 503, "{source}");
        assert_eq!(error_code(&res), "UNAVAILABLE");
        assert_eq!(res.header("retry-after"), Some("10"));
    }
    assert_eq!(refusals(&hf, "max_streams"), 2.0);
    // Refused before anything went upstream.
    let refused_lines: Vec<String> = hf
        .log_text()
        .lines()
        .filter(|l| l.contains(&format!("\"GET {small_path} HTTP/1.1\" 503 ")))
        .map(str::to_owned)
        .collect();
    assert_eq!(refused_lines.len(), 2, "{refused_lines:?}");
    assert!(refused_lines
        .iter()
        .all(|l| l.ends_with("upstream=- redirects=0")));
    // Manifests and HEADs stream no blob: served meanwhile.
    let head = world_head(&hf.addr, "127.0.0.1", &small_path, &small_bearer);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let manifest = raw_get(
        &hf.addr,
        "/v2/library/alpine/manifests/latest",
        &[
            ("Authorization", small_bearer.as_str()),
            ("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"),
        ],
    );
    assert_eq!(manifest.status, 200);

    // A client leaves mid-download: its slot is given back.
    drop(downloads.remove(0));
    let res = poll_status(&hf.addr, &small_path, &small_headers, 200);
    assert_eq!(res.body.len() as u64, small.size);
}

/// Repeats `GET path` until it answers `status` (a slot is given back just after the body's
/// last byte went out, so the first try may be early).
fn poll_status(addr: &str, path: &str, headers: &[(&str, &str)], status: u16) -> RawResponse {
    let mut last = None;
    let answered = world::wait_for(Duration::from_secs(10), || {
        let res = raw_get(addr, path, headers);
        if res.status == status {
            return Some(res);
        }
        last = Some(res.status);
        None
    });
    answered.unwrap_or_else(|| panic!("GET {path} still answers {last:?}, not {status}"))
}

/// Behind a trusted proxy the upstream is told the real client in `X-Real-IP`, while
/// `X-Forwarded-For` keeps every hop (the proxy included), as nginx's realip setup does.
#[test]
fn upstreams_are_told_the_client_behind_a_trusted_proxy() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start_with(&["--registry", &upstream, "--trusted-proxy", "127.0.0.1"]);
    let res = raw_get(
        &hf.addr,
        "/v2/a/manifests/latest",
        &[("X-Forwarded-For", "203.0.113.9")],
    );
    assert_eq!(res.status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(fakes::echoed_header(&echo, "x-real-ip"), ["203.0.113.9"]);
    assert_eq!(
        fakes::echoed_header(&echo, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    // From an untrusted peer the header is not believed: the peer is the client.
    let res = raw_get_from(
        "127.0.0.2",
        &hf.addr,
        "/v2/a/manifests/latest",
        &[("X-Forwarded-For", "203.0.113.9")],
    );
    let echo: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(fakes::echoed_header(&echo, "x-real-ip"), ["127.0.0.2"]);
}
