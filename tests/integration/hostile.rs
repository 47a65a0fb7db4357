//! Hostile input, sent over raw sockets because awc and curl refuse to send most of it (items 5, 6
//! and 8 of the faults issue): heads that trickle, overflow or do not parse; paths and queries
//! that read two ways; forged `Host` headers aimed at the token realm.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::{
    fakes,
    hubferry::{Hubferry, RawResponse},
};

/// Sends `request` as it is, then reads until the server closes. `None` when it never closed.
fn exchange(addr: &str, request: &[u8]) -> Option<Vec<u8>> {
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

fn parse(raw: &[u8]) -> RawResponse {
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

// Item 5. The request head is parsed by actix-http before hubferry's App sees the request, so
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
