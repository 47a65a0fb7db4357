//! Every phase has a deadline, attacked
//! over raw sockets so that no client library's own timeouts or eager reads hide a hang: request
//! bodies that stall or break, upstreams that take a body and never answer, a token issuer that
//! stops half-way through its answer, and clients that stop reading a download.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{fakes, hubferry::Hubferry, operations::get_text, relay::Relay, world};

/// `--idle-timeout` and `--response-timeout` of every hubferry here.
const LIMIT: &str = "2s";
const LIMIT_TIME: Duration = Duration::from_secs(2);
/// How late past its limit a cut may come on a loaded machine (tests run in parallel on two
/// cores); without the deadlines these tests wait far longer than this.
const SLACK: Duration = Duration::from_secs(6);

/// An upload session path the `/v2` grammar accepts.
const UPLOAD: &str = "/v2/library/pushed/blobs/uploads/0b6e4cbd-58b2-4a4b-a1a5-1d4e6c3f1c2a";

/// What a raw client saw: everything until the server closed, and when that was.
struct Answer {
    text: String,
    /// When the server closed (or reset) the connection, from the start of the exchange; `None`
    /// when it still had not within the wait.
    closed_after: Option<Duration>,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
    }

    /// Asserts a registry JSON error with `status`, and that the server closed the connection
    /// by `deadline`.
    fn assert_error(&self, status: u16, deadline: Duration, what: &str) {
        assert_eq!(self.status(), Some(status), "{what}: {:?}", self.text);
        assert!(
            self.text.contains(r#"{"errors":[{"code":"#),
            "{what}: {}",
            self.text
        );
        match self.closed_after {
            Some(after) => assert!(after <= deadline, "{what}: closed after {after:?}"),
            None => panic!("{what}: still open after {deadline:?}: {:?}", self.text),
        }
    }
}

/// Sends `request` (a head and as much of the body as the attack sends) and reads until the
/// server closes, for at most `wait`; `then` runs on the socket after the write (to half-close
/// it, say).
fn exchange(addr: &str, request: &[u8], wait: Duration, then: impl FnOnce(&TcpStream)) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect to hubferry");
    stream.write_all(request).unwrap();
    then(&stream);
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            break None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break Some(started.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None
            }
            Err(_) => break Some(started.elapsed()), // a reset closes too
        }
    };
    Answer {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed_after,
    }
}

fn metrics(hf: &Hubferry) -> String {
    get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap())).1
}

/// Every upstream error counted for `upstream` (a role), of any kind and registry.
fn upstream_errors(hf: &Hubferry, upstream: &str) -> f64 {
    let prefix = format!(r#"hubferry_upstream_errors_total{{upstream="{upstream}","#);
    metrics(hf)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.rsplit_once(' '))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// A form that announces 60000 bytes (or a chunk of 6) and sends 6.
fn stalled_form(addr: &str, chunked: bool) -> String {
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n\r\n6\r\n"
    } else {
        "Content-Length: 60000\r\n\r\n"
    };
    format!(
        "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         {framing}grant_"
    )
}

#[test]
fn a_token_form_that_stalls_is_cut_with_a_408() {
    let auth = fakes::upstream();
    let passthrough = Hubferry::start_with(&["--auth", &auth, "--idle-timeout", LIMIT]);
    for chunked in [false, true] {
        let answer = exchange(
            &passthrough.addr,
            stalled_form(&passthrough.addr, chunked).as_bytes(),
            LIMIT_TIME + SLACK,
            |_| {},
        );
        answer.assert_error(
            408,
            LIMIT_TIME + SLACK,
            &format!("/token, chunked {chunked}"),
        );
    }
    let log = passthrough.log_text();
    assert_eq!(
        log.matches("token form from the client did not arrive whole within 2s after 6 bytes")
            .count(),
        2,
        "{log}"
    );

    let managed = Hubferry::start_with(&[
        "--auth-mode",
        "managed",
        "--auth",
        &auth,
        "--idle-timeout",
        LIMIT,
    ]);
    let answer = exchange(
        &managed.addr,
        stalled_form(&managed.addr, false).as_bytes(),
        LIMIT_TIME + SLACK,
        |_| {},
    );
    answer.assert_error(408, LIMIT_TIME + SLACK, "managed /token");
}

#[test]
fn a_token_post_to_an_issuer_that_never_answers_is_a_504_in_time() {
    let silent = fakes::silent();
    let hf = Hubferry::start_with(&["--auth", &silent, "--response-timeout", LIMIT]);
    let form = "grant_type=password&username=u&password=p&service=s&scope=repository%3Alibrary%2Falpine%3Apull";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        hf.addr,
        form.len()
    );
    let answer = exchange(&hf.addr, request.as_bytes(), LIMIT_TIME + SLACK, |_| {});
    answer.assert_error(504, LIMIT_TIME + SLACK, "POST /token");
    assert!(
        hf.log_text()
            .contains("did not send response headers within 2s"),
        "{}",
        hf.log_text()
    );
}

/// Managed mode fetches its own upstream token before it can forward a pull: from an issuer
/// that never answers, and from one that sends its headers and 10 of 1000 bytes, the client
/// gets a 504 in bounded time.
#[test]
fn managed_modes_upstream_token_fetch_has_deadlines_for_headers_and_body() {
    let registry = fakes::upstream();
    for (issuer, phase) in [
        (fakes::silent(), "send response headers"),
        (fakes::stalled_body(), "send its token answer"),
    ] {
        let hf = Hubferry::start_with(&[
            "--auth-mode",
            "managed",
            "--registry",
            &registry,
            "--auth",
            &issuer,
            "--response-timeout",
            LIMIT,
            "--idle-timeout",
            LIMIT,
        ]);
        // hubferry's own token, for an anonymous client.
        let (status, body) = get_text(&format!(
            "{}/token?service=hubferry&scope=repository:library/alpine:pull",
            hf.url
        ));
        assert_eq!(status, 200, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let request = format!(
            "GET /v2/library/alpine/manifests/latest HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            hf.addr,
            token["token"].as_str().unwrap()
        );
        let answer = exchange(&hf.addr, request.as_bytes(), LIMIT_TIME + SLACK, |_| {});
        answer.assert_error(504, LIMIT_TIME + SLACK, phase);
        assert!(
            hf.log_text()
                .contains(&format!("did not {phase} within 2s")),
            "{}",
            hf.log_text()
        );
    }
}

/// Uploads that stall part-way, sized or chunked: a 408 with a registry error after the idle
/// limit, the connection closed, logged once, and not counted against the registry.
#[test]
fn an_upload_that_stalls_is_a_408_not_an_upstream_error() {
    let registry = fakes::upstream();
    let hf = Hubferry::start_with(&["--registry", &registry, "--idle-timeout", LIMIT]);
    for (framing, rest) in [
        ("sized", "Content-Length: 60000\r\n\r\nabcdef"),
        (
            "chunked",
            "Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n",
        ),
    ] {
        let request = format!(
            "PATCH {UPLOAD} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n{rest}",
            hf.addr
        );
        let answer = exchange(&hf.addr, request.as_bytes(), LIMIT_TIME + SLACK, |_| {});
        answer.assert_error(408, LIMIT_TIME + SLACK, framing);
    }
    let log = hf.log_text();
    assert_eq!(
        log.matches("upload from the client stalled for 2s after 6 bytes")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(upstream_errors(&hf, "registry"), 0.0, "{}", metrics(&hf));
}

/// Bad chunked framing part-way through an upload, and a client that leaves part-way: client
/// errors (or nothing, to a client that is gone), never a 502, not counted against the registry.
#[test]
fn a_malformed_or_abandoned_upload_is_the_clients_error() {
    let (registry, heads) = fakes::silent_reporting();
    let hf = Hubferry::start_with(&["--registry", &registry, "--idle-timeout", "30s"]);
    let head = |rest: &str| {
        format!(
            "PATCH {UPLOAD} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n{rest}",
            hf.addr
        )
    };
    // Enough for the upstream client to flush the head and a first part of the body: it holds
    // smaller writes back until the body ends or its buffer fills.
    let first = "x".repeat(1 << 16);
    // A chunk size that is not hex, once the upload is on its way to the registry (a request
    // broken before it reaches a route is actix-http's to answer).
    let answer = exchange(
        &hf.addr,
        head(&format!(
            "Transfer-Encoding: chunked\r\n\r\n10000\r\n{first}\r\n"
        ))
        .as_bytes(),
        SLACK,
        |mut s| {
            heads
                .recv_timeout(SLACK)
                .expect("the upload never reached the registry");
            s.write_all(b"zz\r\nmore\r\n").unwrap();
        },
    );
    assert!(
        matches!(answer.status(), None | Some(400)),
        "{:?}",
        answer.text
    );
    assert!(answer.closed_after.is_some(), "{:?}", answer.text);
    // The client sends 65536 of 200000 bytes and closes its side.
    let answer = exchange(
        &hf.addr,
        head(&format!("Content-Length: 200000\r\n\r\n{first}")).as_bytes(),
        SLACK,
        |s| {
            heads
                .recv_timeout(SLACK)
                .expect("the upload never reached the registry");
            s.shutdown(Shutdown::Write).unwrap()
        },
    );
    assert!(
        matches!(answer.status(), None | Some(400)),
        "{:?}",
        answer.text
    );
    assert!(answer.closed_after.is_some(), "{:?}", answer.text);
    // Both show in the log as the client's, once each and each for what it was; neither as
    // the registry's.
    let client_errors = |log: &str| {
        let malformed = log
            .lines()
            .filter(|l| {
                l.contains("upload from the client was malformed (")
                    && l.contains("after 65536 bytes")
            })
            .count();
        let cut = log
            .matches("upload from the client ended early (the connection closed)")
            .count();
        (malformed, cut)
    };
    let log = world::wait_for(SLACK, || {
        let log = hf.log_text();
        let (malformed, cut) = client_errors(&log);
        (malformed + cut >= 2).then_some(log)
    })
    .unwrap_or_else(|| hf.log_text());
    assert_eq!(client_errors(&log), (1, 1), "{log}");
    assert!(!log.contains("cannot reach upstream"), "{log}");
    assert_eq!(upstream_errors(&hf, "registry"), 0.0, "{}", metrics(&hf));
}

/// A registry that reads the request head and never answers: an upload's whole body sent, the
/// response headers are due within `timeouts.response_headers`.
#[test]
fn an_upload_the_registry_never_answers_is_a_504_in_time() {
    let silent = fakes::silent();
    let hf = Hubferry::start_with(&["--registry", &silent, "--response-timeout", LIMIT]);
    let body = "x".repeat(1000);
    for (framing, request) in [
        (
            "sized",
            format!(
                "PUT {UPLOAD}?digest=sha256:{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\
                 Connection: close\r\n\r\n{body}",
                "0".repeat(64),
                hf.addr
            ),
        ),
        (
            "chunked",
            format!(
                "PATCH {UPLOAD} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n3e8\r\n{body}\r\n0\r\n\r\n",
                hf.addr
            ),
        ),
    ] {
        let answer = exchange(&hf.addr, request.as_bytes(), LIMIT_TIME + SLACK, |_| {});
        answer.assert_error(504, LIMIT_TIME + SLACK, framing);
    }
    assert_eq!(
        hf.log_text()
            .matches("did not send response headers within 2s")
            .count(),
        2,
        "{}",
        hf.log_text()
    );
}

/// A registry that takes the head and then stops reading: the upload stalls on the upstream's
/// side, and is cut after the idle limit as the upstream's fault (504), while the client is still
/// trying to send.
#[test]
fn an_upload_the_registry_stops_taking_is_a_504_in_time() {
    let silent = fakes::silent();
    let hf = Hubferry::start_with(&["--registry", &silent, "--idle-timeout", LIMIT]);
    // Far more than the socket buffers between here and the registry hold.
    let length = 256 << 20;
    let head = format!(
        "PATCH {UPLOAD} HTTP/1.1\r\nHost: {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        hf.addr
    );
    let started = Instant::now();
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Sends until hubferry stops reading, then until it closes.
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        while writer.write_all(&chunk).is_ok() {}
    });
    stream
        .set_read_timeout(Some(LIMIT_TIME + SLACK + Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received); // a reset after the answer ends it too
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 504"), "{text:?}");
    // The deadline counts from the last chunk the registry took, which comes once the buffers
    // between are full: allow for filling them.
    assert!(
        started.elapsed() <= LIMIT_TIME + SLACK + Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        hf.log_text()
            .contains("did not take the request body within 2s"),
        "{}",
        hf.log_text()
    );
}

/// A client that sends its GET and never reads: once the buffers between are full, the kernel
/// cuts the connection `timeouts.body_idle` later (TCP_USER_TIMEOUT), hubferry drops the
/// response, and the CDN connection it held is closed. Over plain HTTP and over TLS.
#[test]
fn a_client_that_stops_reading_a_download_is_cut_and_the_upstream_released() {
    let w = world::plain();
    let relay = Relay::start(w.cdn_host(), &[]);
    let (registry, _registry_child) = w.registry_redirecting_to(&format!("http://{}", relay.addr));
    let tls = world::tls_files(&scratch());
    let tls_addr = format!("127.0.0.1:{}", world::free_port());
    let hf = Hubferry::for_registry(
        w,
        &registry,
        &[
            "--idle-timeout",
            LIMIT,
            "--tls-listen",
            &tls_addr,
            "--tls-cert",
            tls.cert.to_str().unwrap(),
            "--tls-key",
            tls.key.to_str().unwrap(),
            FOLLOW_LOCAL_REDIRECTS[0],
            FOLLOW_LOCAL_REDIRECTS[1],
        ],
    );
    assert!(world::wait_for_port(&tls_addr, Duration::from_secs(10)));
    let big = w.big_layer();
    let path = format!("/v2/library/big/blobs/{}", big.digest);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        hf.addr,
        w.token(&["repository:library/big:pull"])
    );

    for (number, over_tls) in [(0, false), (1, true)] {
        let what = if over_tls { "TLS" } else { "plain" };
        let socket = small_receive_buffer(if over_tls { &tls_addr } else { &hf.addr });
        // Held, never read, until the end of this round.
        let mut client: Box<dyn Write> = if over_tls {
            let config = std::sync::Arc::new(world::rustls_config(&tls.ca_cert));
            let name = "localhost".try_into().unwrap();
            let connection = rustls::ClientConnection::new(config, name).unwrap();
            Box::new(rustls::StreamOwned::new(connection, socket))
        } else {
            Box::new(socket)
        };
        client.write_all(request.as_bytes()).unwrap();
        client.flush().unwrap();
        // The CDN is asked, and then (the client reading nothing) the connection to it is
        // closed: buffers fill, the window stays shut for the idle limit, the kernel cuts.
        let asked =
            world::wait_for(SLACK, || (relay.connections() > number).then_some(())).is_some();
        assert!(asked, "{what}: the CDN was never asked");
        let started = Instant::now();
        let closed = relay.wait_closed(number, LIMIT_TIME + SLACK + Duration::from_secs(4));
        assert!(
            closed.is_some(),
            "{what}: hubferry still holds the CDN connection {:?} after its client stopped reading; {} of {} bytes passed",
            started.elapsed(),
            relay.passed(number),
            big.size
        );
        assert!(
            relay.passed(number) < big.size,
            "{what}: the whole blob was fetched"
        );
        // The response was dropped: its access line is written, a 200 cut short.
        let logged = world::wait_for(SLACK, || {
            let lines = hf.log_text();
            let cut = lines
                .lines()
                .filter(|l| l.contains(&format!("\"GET {path} ")) && l.contains("\" 200 "));
            (cut.count() > number).then_some(())
        })
        .is_some();
        assert!(logged, "{what}: no access line: {}", hf.log_text());
        drop(client);
    }
}

/// A TCP connection to `addr` whose receive buffer is small, so a client that reads nothing
/// shuts its window soon.
fn small_receive_buffer(addr: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 << 10).unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    socket.connect(&target.into()).expect("connect to hubferry");
    socket.into()
}

fn scratch() -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    dir
}
