//! Pipelined HTTP/1.1 (RFC 9112 §9.3): requests sent back to back on one connection before any
//! answer, each answer framed for its own request. A client reads a HEAD answer as a head only
//! and a GET answer as a head plus `Content-Length` bytes, so one answer framed for another
//! request desynchronises every answer after it.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::Duration,
};

use crate::{
    access_log, fakes,
    hubferry::{Hubferry, RawResponse},
};

/// A registry path the echo upstream answers with a JSON body naming the method it saw.
const TARGET: &str = "/v2/library/alpine/manifests/latest";

fn request(method: &str, version: &str, hf: &Hubferry, close: bool) -> String {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "{method} {TARGET} {version}\r\nHost: {}\r\n{connection}\r\n",
        hf.addr
    )
}

/// Sends `requests` in one write, then reads until the server closes.
fn pipeline(hf: &Hubferry, requests: &[String]) -> Vec<u8> {
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(requests.concat().as_bytes()).unwrap();
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "hubferry did not close the connection: {e}; got {:?}",
            String::from_utf8_lossy(&raw)
        ),
    }
    raw
}

/// Splits `raw` into one answer per request method, as a client reads them: a HEAD answer is a
/// head alone, any other is a head and `Content-Length` bytes. Panics on anything left over.
fn answers(raw: &[u8], methods: &[&str]) -> Vec<(String, RawResponse)> {
    let mut rest = raw;
    let mut out = Vec::new();
    for method in methods {
        let split = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no answer head for the {method} in {:?} (all: {:?})",
                    String::from_utf8_lossy(rest),
                    String::from_utf8_lossy(raw)
                )
            });
        let head = String::from_utf8_lossy(&rest[..split]).into_owned();
        rest = &rest[split + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| panic!("no content-length in {head}"));
        let body_len = if *method == "HEAD" { 0 } else { length };
        assert!(
            rest.len() >= body_len,
            "the {method} answer announces {length} bytes but {} came: {:?}",
            rest.len(),
            String::from_utf8_lossy(raw)
        );
        let body = rest[..body_len].to_vec();
        rest = &rest[body_len..];
        out.push((
            status_line,
            RawResponse {
                status,
                headers,
                body,
            },
        ));
    }
    assert!(
        rest.is_empty(),
        "bytes after the last answer: {:?} (all: {:?})",
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(raw)
    );
    out
}

/// The method the echo upstream says it was sent.
fn echoed_method(res: &RawResponse) -> String {
    let echo: serde_json::Value = serde_json::from_slice(&res.body).unwrap_or_else(|e| {
        panic!(
            "not the echo's JSON ({e}): {:?}",
            String::from_utf8_lossy(&res.body)
        )
    });
    echo["method"].as_str().unwrap().to_owned()
}

fn start() -> Hubferry {
    let upstream = fakes::upstream();
    Hubferry::start_with(&["--registry", &upstream, "--workers", "1"])
}

#[test]
fn a_get_then_a_pipelined_head_each_get_their_own_framing() {
    let hf = start();
    let raw = pipeline(
        &hf,
        &[
            request("GET", "HTTP/1.1", &hf, false),
            request("HEAD", "HTTP/1.1", &hf, true),
        ],
    );
    let got = answers(&raw, &["GET", "HEAD"]);
    let (_, get) = &got[0];
    assert_eq!(get.status, 200);
    assert_eq!(echoed_method(get), "GET", "the GET's body is missing");
    // The GET asked to keep the connection: its answer must not carry the HEAD's close.
    assert_ne!(get.header("connection"), Some("close"));
    let (_, head) = &got[1];
    assert_eq!(head.status, 200);
    assert_eq!(head.header("connection"), Some("close"));
}

#[test]
fn a_head_then_a_pipelined_get_each_get_their_own_framing() {
    let hf = start();
    let raw = pipeline(
        &hf,
        &[
            request("HEAD", "HTTP/1.1", &hf, false),
            request("GET", "HTTP/1.1", &hf, true),
        ],
    );
    let got = answers(&raw, &["HEAD", "GET"]);
    let (_, head) = &got[0];
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-length").is_some_and(|l| l != "0"),
        "a HEAD keeps the GET's length"
    );
    let (_, get) = &got[1];
    assert_eq!(get.status, 200);
    assert_eq!(echoed_method(get), "GET");
}

#[test]
fn each_pipelined_answer_speaks_its_own_requests_http_version() {
    let hf = start();
    let raw = pipeline(
        &hf,
        &[
            request("GET", "HTTP/1.1", &hf, false),
            request("HEAD", "HTTP/1.1", &hf, false),
            // HTTP/1.0 without keep-alive: the connection ends after this one.
            request("GET", "HTTP/1.0", &hf, false),
        ],
    );
    let got = answers(&raw, &["GET", "HEAD", "GET"]);
    let versions: Vec<&str> = got
        .iter()
        .map(|(line, _)| line.split(' ').next().unwrap())
        .collect();
    assert_eq!(versions, ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    assert_eq!(echoed_method(&got[0].1), "GET");
    assert_eq!(echoed_method(&got[2].1), "GET");
    assert!(got.iter().all(|(_, res)| res.status == 200));
}

#[test]
fn every_pipelined_request_gets_one_access_line() {
    let hf = start();
    let methods = ["GET", "HEAD", "GET", "HEAD", "GET"];
    let requests: Vec<String> = methods
        .iter()
        .enumerate()
        .map(|(i, m)| request(m, "HTTP/1.1", &hf, i == methods.len() - 1))
        .collect();
    let raw = pipeline(&hf, &requests);
    let got = answers(&raw, &methods);
    for ((_, res), method) in got.iter().zip(methods) {
        assert_eq!(res.status, 200);
        if method == "GET" {
            assert_eq!(echoed_method(res), "GET");
        }
    }
    let log = access_log::settled_lines(&hf, TARGET);
    assert_eq!(log.len(), methods.len(), "{log:?}");
    for (line, method) in log.iter().zip(methods) {
        assert!(line.contains(&format!("\"{method} {TARGET} ")), "{line}");
        assert_eq!(access_log::status_of(line), 200, "{line}");
    }
}
