//! Requests that end in a protocol error or ask for what hubferry never does, sent over raw
//! sockets: each gets an answer (or a clean close) of its own, never a 502 blamed on an upstream,
//! and exactly one access line.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::Value;

use crate::{
    access_log, fakes,
    hubferry::{Hubferry, RawResponse},
    operations::get_text,
    world,
};

/// Sends `request` as it is and reads until the server closes. Panics when it does not close
/// within 10 s: a request must not hang.
fn exchange(hf: &Hubferry, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A reset after the answer still closed the connection.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "no answer and no close within 10 s ({e}); got {:?}",
            String::from_utf8_lossy(&raw)
        ),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer, only a close: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    RawResponse {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn error_code(res: &RawResponse) -> String {
    let body: Value = serde_json::from_slice(&res.body).unwrap_or_else(|e| {
        panic!(
            "not a registry error ({e}): {:?}",
            String::from_utf8_lossy(&res.body)
        )
    });
    body["errors"][0]["code"].as_str().unwrap().to_owned()
}

fn error_message(res: &RawResponse) -> String {
    let body: Value = serde_json::from_slice(&res.body).unwrap();
    body["errors"][0]["message"].as_str().unwrap().to_owned()
}

fn upstream_errors(hf: &Hubferry) -> String {
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap()));
    metrics
        .lines()
        .filter(|l| l.starts_with("hubferry_upstream_errors_total"))
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One worker, so that `access_log::settled_lines` can tell every line is in.
fn start_with_echo() -> Hubferry {
    let echo = fakes::upstream();
    Hubferry::start_with(&[
        "--registry",
        &echo,
        "--auth",
        &echo,
        "--index",
        &echo,
        "--workers",
        "1",
    ])
}

/// Chunked bodies that break the framing in the ways a chunked decoder can tell.
const MALFORMED_CHUNKS: [&str; 4] = [
    // a size that is not hexadecimal
    "zz\r\nscope=x\r\n0\r\n\r\n",
    // more data than the size said
    "3\r\nscope=repository:a:pull\r\n0\r\n\r\n",
    // a size line that ends without LF
    "7\rscope=x\r\n0\r\n\r\n",
    // a size too big for 64 bits
    "fffffffffffffffffff\r\nx\r\n0\r\n\r\n",
];

/// actix-http took a malformed chunked body for a lost connection: the handler was told the
/// client had gone (and, unless it answered within the same poll, no answer went out at all). It
/// is a client's malformed request: the handler is told so, its answer (the token form cannot
/// be read: 400) goes out, then the connection closes.
#[test]
fn a_malformed_chunked_body_is_answered_400_and_logged_once() {
    let hf = start_with_echo();
    let errors_before = upstream_errors(&hf);
    for (case, body) in MALFORMED_CHUNKS.iter().enumerate() {
        let request = format!(
            "POST /token?case={case} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Transfer-Encoding: chunked\r\n\r\n{body}",
            hf.addr
        );
        let res = exchange(&hf, request.as_bytes());
        assert_eq!(res.status, 400, "{body:?}");
        assert_eq!(error_code(&res), "SIZE_INVALID", "{body:?}");
        // The blame is the body's framing, not a client that went away.
        let message = error_message(&res);
        assert!(message.contains("chunk"), "{body:?}: {message}");
        let lines = access_log::settled_lines(&hf, &format!("/token?case={case} "));
        assert_eq!(lines.len(), 1, "{body:?}: {lines:?}");
        assert_eq!(access_log::status_of(&lines[0]), 400, "{}", lines[0]);
    }
    assert_eq!(upstream_errors(&hf), errors_before);
    assert!(!hf.log_text().contains("panicked"));
}

/// The same malformed body on an upload that streams up: today the connection is dropped with
/// no answer and no access line while hubferry waits on the upstream. Now it is answered (which
/// status a broken upload gets is the relay's business) and logged once, with that status.
#[test]
fn a_malformed_chunked_upload_gets_an_answer_and_one_access_line() {
    let hf = start_with_echo();
    for (case, body) in MALFORMED_CHUNKS.iter().enumerate() {
        let target = format!("/v2/library/alpine/blobs/uploads/?case={case}");
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            hf.addr
        );
        let res = exchange(&hf, request.as_bytes());
        assert!(res.status >= 400, "{body:?}: {}", res.status);
        error_code(&res);
        let lines = access_log::settled_lines(&hf, &format!("{target} "));
        assert_eq!(lines.len(), 1, "{body:?}: {lines:?}");
        assert_eq!(access_log::status_of(&lines[0]), res.status, "{}", lines[0]);
    }
}

/// A client that resets its connection while hubferry waits for the upstream's answer: the
/// handler is dropped before any response exists, and today nothing is logged. The line says
/// 499 (nginx's "client closed request") and names the upstream it was waiting for.
#[test]
fn a_request_dropped_before_its_answer_is_logged_once_as_499() {
    let (upstream, accepted) = fakes::silent_reporting();
    let hf = Hubferry::start_with(&["--registry", &upstream, "--workers", "1"]);
    let target = "/v2/library/alpine/manifests/dropped";
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", hf.addr).unwrap();
    accepted
        .recv_timeout(Duration::from_secs(10))
        .expect("hubferry never asked the upstream");
    world::reset_on_close(&stream);
    drop(stream);
    let lines = access_log::wait_for_lines(&hf, target, 1);
    assert_eq!(lines.len(), 1, "no access line for the dropped request");
    assert_eq!(access_log::status_of(&lines[0]), 499, "{}", lines[0]);
    assert!(lines[0].contains("upstream=registry"), "{}", lines[0]);
    assert!(
        lines[0].contains(" outcome=unanswered ") && lines[0].contains(" registry=docker.io "),
        "{}",
        lines[0]
    );
    assert_eq!(access_log::settled_lines(&hf, target).len(), 1);
}

/// A client that leaves part-way through a download: its line says the response was aborted,
/// not complete, and how many bytes went out before.
#[test]
fn a_download_the_client_leaves_is_logged_as_aborted() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &crate::hubferry::FOLLOW_LOCAL_REDIRECTS);
    let big = w.big_layer();
    let bearer = format!("Bearer {}", w.token(&["repository:library/big:pull"]));
    let path = format!("/v2/library/big/blobs/{}", big.digest);
    let mut download =
        crate::hubferry::RawDownload::start(&hf.addr, &path, &[("Authorization", &bearer)]);
    download.read_some(1 << 20);
    drop(download);
    let lines = access_log::wait_for_lines(&hf, &big.digest, 1);
    assert_eq!(lines.len(), 1, "no access line for the download");
    assert_eq!(access_log::status_of(&lines[0]), 200, "{}", lines[0]);
    assert!(
        lines[0].contains(
            " outcome=aborted resumes=0 registry=docker.io upstream=registry redirects=1"
        ),
        "{}",
        lines[0]
    );
}

/// `Connection: Upgrade` and `Upgrade: websocket` on a POST with a 3-byte body: actix-http reads
/// that body until the connection closes, so today the request hangs until the client gives up
/// and then goes upstream as a broken upload, a 502 counted against the upstream. hubferry
/// speaks no WebSocket: a 400 at once, a close, one line, nothing upstream.
#[test]
fn a_websocket_upgrade_on_a_post_is_refused_at_once() {
    let hf = start_with_echo();
    let errors_before = upstream_errors(&hf);
    for (case, headers) in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n",
        "Upgrade: websocket\r\nContent-Length: 3\r\n",
        "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nContent-Length: 3\r\n",
    ]
    .iter()
    .enumerate()
    {
        let target = format!("/v2/library/alpine/blobs/uploads/?ws={case}");
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\n{headers}\r\nabc",
            hf.addr
        );
        let res = exchange(&hf, request.as_bytes());
        assert_eq!(res.status, 400, "{headers:?}");
        assert_eq!(error_code(&res), "UNSUPPORTED");
        assert_eq!(res.header("connection"), Some("close"));
        let lines = access_log::settled_lines(&hf, &format!("{target} "));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(access_log::status_of(&lines[0]), 400);
        assert!(lines[0].ends_with("upstream=- redirects=0"), "{}", lines[0]);
    }
    assert_eq!(upstream_errors(&hf), errors_before);
}

/// CONNECT is no registry operation: refused rather than sent upstream as a CONNECT.
#[test]
fn a_connect_request_is_refused_and_never_goes_upstream() {
    let hf = start_with_echo();
    let res = exchange(
        &hf,
        format!(
            "CONNECT /v2/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
            hf.addr
        )
        .as_bytes(),
    );
    assert_eq!(res.status, 400);
    assert_eq!(error_code(&res), "UNSUPPORTED");
    let lines = access_log::settled_lines(&hf, "\"CONNECT /v2/ ");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("upstream=- redirects=0"), "{}", lines[0]);
}

/// Any other upgrade (curl's `--http2` on plain HTTP asks for h2c) is ignored, as RFC 9110 §7.8
/// allows: the request is served with its body framed as declared, and the answer says the
/// connection closes instead of actix-http's `connection: upgrade` on a 200.
#[test]
fn another_upgrade_is_ignored_and_the_answer_closes_the_connection() {
    let hf = start_with_echo();
    let res = exchange(
        &hf,
        format!(
            "POST /v2/library/alpine/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\n\
             Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\
             Content-Length: 3\r\n\r\nabc",
            hf.addr
        )
        .as_bytes(),
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    let echo: Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 3);
    // Hop-by-hop: the upgrade never reaches the upstream.
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(
            fakes::echoed_header(&echo, name).is_empty(),
            "{name} went upstream: {echo}"
        );
    }
}
