//! Hostile input, sent over raw sockets because awc and curl refuse to send most of it: heads
//! that trickle, overflow or do not parse; paths and queries that read two ways; forged `Host`
//! headers aimed at the token realm.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    fakes,
    hubferry::{Hubferry, RawResponse},
    world,
};

/// Sends `request` as it is, then reads until the server closes. `None` when it never closed.
pub fn exchange(addr: &str, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect to hubferry");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(answer),
        // A reset after the answer still closed the connection.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(answer),
        Err(_) => None,
    }
}

pub fn parse(raw: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// `method target` with `Connection: close` and the given headers (`Host` among them or not).
fn request(hf: &Hubferry, method: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut text = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {}\r\n", hf.addr));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let raw = exchange(&hf.addr, text.as_bytes()).expect("hubferry closed the connection");
    parse(&raw)
}

fn assert_still_serving(hf: &Hubferry) {
    let res = request(hf, "GET", "/v2/library/alpine/manifests/latest", &[]);
    assert_eq!(res.status, 200, "hubferry stopped serving");
    let log = hf.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

fn echo_upstream() -> (String, Hubferry) {
    let upstream = fakes::upstream();
    let hf = Hubferry::start_with(&[
        "--registry",
        &upstream,
        "--auth",
        &upstream,
        "--index",
        &upstream,
        "--request-head-timeout",
        "1s",
    ]);
    (upstream, hf)
}

// Request heads. The request head is parsed by actix-http before hubferry's App sees the request, so
// these answers are actix-http's own: a status and no JSON body, which is what a protocol-level
// error can have (the client did not speak HTTP well enough to be a registry client).

#[test]
fn a_slowloris_trickling_bytes_is_cut_by_the_head_timeout() {
    let (_, hf) = echo_upstream();
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // One byte every 100 ms: a head that is always arriving must still be cut at 1 s (the timer
    // runs from the first byte, it is not reset by each one).
    let closed = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        if stream.write_all(b"a").is_err() {
            break true;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    assert!(closed, "the trickled head was never cut");
    // actix-http's own default is 5 s: this proves the configured 1 s is the one in force.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut only after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_still_serving(&hf);
}

/// actix-http refuses a head over 128 KiB (`MAX_BUFFER_SIZE`, fixed, not configurable) or with
/// more than 96 header fields, with 431, and closes the connection.
#[test]
fn an_oversized_request_head_gets_431_and_the_connection_closes() {
    let (_, hf) = echo_upstream();
    // Exactly the limit and unfinished, so the server reads every byte we sent before it
    // answers (unread bytes would make its close a reset that could swallow the 431).
    let mut big = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(128 * 1024, b'a');
    let mut many = String::from("GET /v2/ HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    for (what, head) in [("128 KiB", big), ("100 fields", many.into_bytes())] {
        let started = Instant::now();
        let raw = exchange(&hf.addr, &head)
            .unwrap_or_else(|| panic!("{what}: the connection was left open"));
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        assert_eq!(parse(&raw).status, 431, "{what}");
    }
    assert_still_serving(&hf);
}

#[test]
fn malformed_request_heads_get_400_and_the_connection_closes() {
    let (_, hf) = echo_upstream();
    let cases: [(&str, &[u8]); 9] = [
        ("junk after the version", b"GET /v2/ HTTP/1.1 x\r\nHost: x\r\n\r\n"),
        ("not HTTP", b"NOT A REQUEST\r\n\r\n"),
        ("unknown version", b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("NUL in the path", b"GET /v2/\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bare CR in the path", b"GET /v2/a\rb HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("non-ASCII path", b"GET /v2/\xff HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("HTTP/1.1 without Host", b"GET /v2/ HTTP/1.1\r\n\r\n"),
        (
            "TLS on the plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ),
        (
            "length and chunked (request smuggling)",
            b"POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, head) in cases {
        let raw = exchange(&hf.addr, head)
            .unwrap_or_else(|| panic!("{what}: the connection was left open"));
        assert_eq!(parse(&raw).status, 400, "{what}");
    }
    assert_still_serving(&hf);
}

// Paths and queries that read two ways.

/// The registry JSON error a refused request got; the echo upstream would have answered 200
/// with a report of the request instead.
fn refused(hf: &Hubferry, target: &str, status: u16) -> String {
    let res = request(hf, "GET", target, &[]);
    let body = String::from_utf8_lossy(&res.body);
    assert_eq!(res.status, status, "{target}: {body}");
    assert_eq!(
        res.header("content-type"),
        Some("application/json"),
        "{target}"
    );
    let body: Value = serde_json::from_slice(&res.body).unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{target}: {body}"
    );
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn hostile_registry_paths_and_queries_get_registry_errors_and_go_nowhere() {
    let (_, hf) = echo_upstream();
    let long_name = format!("/v2/library/{}/manifests/latest", "a".repeat(250));
    let long_tag = format!("/v2/library/alpine/manifests/{}", "t".repeat(129));
    let cases: &[(&str, u16, &str)] = &[
        ("/v2/library/%zz/manifests/latest", 400, "UNSUPPORTED"),
        ("/v2/library/alpine/manifests/latest%4", 400, "UNSUPPORTED"),
        (
            "/v2/library/../private/secret/manifests/latest",
            400,
            "UNSUPPORTED",
        ),
        (
            "/v2/library/%2e%2E/private/secret/manifests/latest",
            400,
            "UNSUPPORTED",
        ),
        ("/v2/./library/alpine/tags/list", 400, "UNSUPPORTED"),
        ("/v2/library%2Falpine/manifests/latest", 400, "UNSUPPORTED"),
        ("/v2/library%2falpine/tags/list", 400, "UNSUPPORTED"),
        ("/v2/library/alpine/manifests/latest%00", 400, "UNSUPPORTED"),
        ("/v2/library\\..\\..\\token", 400, "UNSUPPORTED"),
        (
            "/v2/library/alpine/manifests/latest?ns=docker.io%0d%0aX-Injected:%201",
            400,
            "UNSUPPORTED",
        ),
        ("/v2/library/alpine/tags/list?last=%00", 400, "UNSUPPORTED"),
        ("/v2/library/alpine/tags/list?n=%zz", 400, "UNSUPPORTED"),
        (&long_name, 400, "NAME_INVALID"),
        ("/v2/Library/Alpine/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/library//alpine/manifests/latest", 400, "NAME_INVALID"),
        (
            "/v2/library/alpine/manifests/-latest",
            400,
            "MANIFEST_INVALID",
        ),
        (&long_tag, 400, "MANIFEST_INVALID"),
        ("/v2/library/alpine/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        (
            "/v2/library/alpine/manifests/sha256:XYZ",
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/library/alpine/blobs/uploads/a:b",
            400,
            "BLOB_UPLOAD_INVALID",
        ),
        // Well formed, but no registry endpoint: answered here, not left to the upstream.
        ("/v2/library/alpine", 404, "UNSUPPORTED"),
        ("/v2/library/alpine/admin/config", 404, "UNSUPPORTED"),
    ];
    for (target, status, code) in cases {
        assert_eq!(refused(&hf, target, *status), *code, "{target}");
    }
    let log = hf.log_text();
    assert!(log.contains("encoded slash"), "refusals are logged: {log}");
    assert_still_serving(&hf);
}

#[test]
fn hostile_targets_outside_v2_are_refused_too() {
    let (_, hf) = echo_upstream();
    for target in [
        // The url crate would resolve these into a /v2 path the registry checks never saw.
        "/x/../v2/library/alpine/manifests/latest",
        "/x/%2e%2e/v2/_catalog",
        "/v2%2F..%2Ftoken",
        "/a\\..\\v2/_catalog",
        "/%zz",
        "/token?scope=%0d%0aX-Injected:%201",
        "/token?service=%00",
        "/v1/search?q=%zz",
        "/other?a='1'",
    ] {
        refused(&hf, target, 400);
    }
    assert_still_serving(&hf);
}

#[test]
fn legitimate_registry_traffic_goes_up_exactly_as_checked() {
    let (_, hf) = echo_upstream();
    let session = "/v2/library/pushed-1/blobs/uploads/0b6e4cbd-58b2-4a4b-a1a5-1d4e6c3f1c2a";
    for (method, target, path, query) in [
        (
            "HEAD",
            "/v2/library/nginx/manifests/latest?ns=docker.io",
            "/v2/library/nginx/manifests/latest",
            "ns=docker.io",
        ),
        ("GET", "/v2/", "/v2/", ""),
        (
            "GET",
            "/v2/bitnami/redis/tags/list?n=&last=",
            "/v2/bitnami/redis/tags/list",
            "n=&last=",
        ),
        (
            "POST",
            "/v2/library/pushed-1/blobs/uploads/?mount=sha256:00&from=library%2Fnginx",
            "/v2/library/pushed-1/blobs/uploads/",
            "mount=sha256:00&from=library%2Fnginx",
        ),
        (
            "PATCH",
            &format!("{session}?_state=eyJuYW1lIjoi%3D%3D"),
            session,
            "_state=eyJuYW1lIjoi%3D%3D",
        ),
        (
            "GET",
            &format!("/v2/a/referrers/{DIGEST}"),
            &format!("/v2/a/referrers/{DIGEST}"),
            "",
        ),
        // A percent-encoded colon is decoded: the upstream gets the form that was checked.
        (
            "GET",
            &format!("/v2/library/nginx/blobs/{}", DIGEST.replace(':', "%3A")),
            &format!("/v2/library/nginx/blobs/{DIGEST}"),
            "",
        ),
    ] {
        let headers: &[(&str, &str)] = match method {
            "POST" | "PATCH" => &[("Content-Length", "0")],
            _ => &[("Range", "bytes=0-")],
        };
        let res = request(&hf, method, target, headers);
        assert_eq!(res.status, 200, "{method} {target}");
        assert_eq!(res.header("x-method"), Some(method), "{target}");
        if method == "HEAD" {
            continue; // no body to read the echo from; the method and status say enough
        }
        let echo: Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(echo["path"], path, "{target}");
        assert_eq!(echo["query"], query, "{target}");
    }
}

// Forged `Host`: the realm (and every `Location` pointed back at us) against a forged `Host`, from the
// real registry's challenges and upload answers.

fn realm_for_host(hf: &Hubferry, host: &str) -> String {
    let res = request(hf, "GET", "/v2/", &[("Host", host)]);
    assert_eq!(res.status, 401);
    let challenge = res.header("www-authenticate").expect("a challenge");
    let realm = challenge
        .strip_prefix("Bearer realm=\"")
        .and_then(|rest| rest.split_once('"'))
        .unwrap_or_else(|| panic!("{challenge}"))
        .0;
    realm.to_owned()
}

#[test]
fn with_public_url_a_forged_host_never_reaches_the_realm() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            "--public-url",
            "https://mirror.example.com",
            "--server-name",
            "mirror.test",
        ],
    );
    for host in ["evil.example", "mirror.test", "evil.example:5000/x"] {
        assert_eq!(
            realm_for_host(&hf, host),
            "https://mirror.example.com/token",
            "{host}"
        );
    }
    assert!(!hf
        .log_text()
        .contains("neither public_url nor server_names"));
}

#[test]
fn with_server_names_only_listed_hosts_reach_the_realm() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &["--server-name", "mirror.test,other.test:5000"]);
    for (host, realm) in [
        ("evil.example", "http://mirror.test/token"),
        ("mirror.test.evil.example", "http://mirror.test/token"),
        ("mirror.test@evil.example", "http://mirror.test/token"),
        ("other.test:5001", "http://mirror.test/token"),
        ("MIRROR.test:8080", "http://mirror.test:8080/token"),
        ("other.test:5000", "http://other.test:5000/token"),
    ] {
        assert_eq!(realm_for_host(&hf, host), realm, "{host}");
    }

    // An upload's Location comes back through us, on a configured name too.
    let repo = format!("library/hostile-{}", std::process::id());
    let token = w.token(&[&format!("repository:{repo}:pull,push")]);
    let res = request(
        &hf,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[
            ("Host", "evil.example"),
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Length", "0"),
        ],
    );
    assert_eq!(res.status, 202, "{}", String::from_utf8_lossy(&res.body));
    let location = res.header("location").unwrap();
    assert!(
        location.starts_with(&format!("http://mirror.test/v2/{repo}/blobs/uploads/")),
        "{location}"
    );
}

#[test]
fn with_neither_the_host_is_used_and_start_up_warns() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &[]);
    assert_eq!(
        realm_for_host(&hf, "anything.example:81"),
        "http://anything.example:81/token"
    );
    assert!(
        hf.log_text()
            .contains("neither public_url nor server_names is set"),
        "{}",
        hf.log_text()
    );
}
