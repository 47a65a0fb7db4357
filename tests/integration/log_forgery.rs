//! Nothing a client sends forges a log line: CR, LF, ESC and the rest of
//! C0 and C1 in a token realm id, a `/v2` path, an OAuth2 `scope` or a user name are escaped in
//! the text log. The attacks go over raw sockets to the real binary, whose log is a file; each
//! must leave a log where every line is one record and no control character is left.

use std::time::Duration;

use base64::Engine as _;

use crate::{
    hostile::{exchange, parse},
    hubferry::{Hubferry, RawResponse},
    managed_auth::one_managed_mirror_at_a_time,
    world,
};

/// The time stamp of the forged record: real records carry the current time.
const FORGED_TIME: &str = "[2025-01-01T00:00:00Z";

/// What every attack tries to write: a line break, then a complete access record of a request
/// that never happened, then escape sequences that would clear the reader's terminal, set its
/// title and recolour it (ESC, BEL, NEL and CSI, the last two in C1). Spaces are U+00A0 and
/// slashes U+2215, which look the same on a terminal and keep it one path segment or scope.
fn forged() -> String {
    let record = format!(
        "{FORGED_TIME} INFO  hubferry::access] 6.6.6.6 \"GET /v2/ HTTP/1.1\" 200 0 0.100ms \
         upstream=- redirects=0"
    );
    let record = record.replace(' ', "\u{a0}").replace('/', "\u{2215}");
    format!("\r\n{record}\u{1b}[2J\u{1b}]0;pwned\u{7}\u{85}\u{9b}31m")
}

/// Every byte but the unreserved ones percent-encoded, as a path segment or query value.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `method target` with `headers` and `body`, over a raw socket.
fn send(
    hf: &Hubferry,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        hf.addr,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let raw = format!("{head}\r\n{body}");
    parse(&exchange(&hf.addr, raw.as_bytes()).expect("hubferry closed the connection"))
}

/// An OAuth2 token request (containerd's), its fields form-encoded.
fn post_form(hf: &Hubferry, fields: &[(&str, &str)]) -> RawResponse {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    send(
        hf,
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
}

/// The log once it holds `records` access records (each is written once its response body is
/// done, which may be just after the client has read it).
fn log_with_access_records(hf: &Hubferry, records: usize) -> String {
    let written = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" hubferry::access] "))
            .count()
    };
    world::wait_for(Duration::from_secs(10), || {
        let log = hf.log_text();
        (written(&log) >= records).then_some(log)
    })
    .unwrap_or_else(|| hf.log_text())
}

/// Every line is one record of hubferry's text format, none is the forged one, and no control
/// character (C0 but LF, DEL, C1) is left anywhere in the file.
fn assert_one_record_per_line(log: &str) {
    let record = regex::Regex::new(
        r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (ERROR|WARN |INFO |DEBUG|TRACE) [\w:]+\] ",
    )
    .unwrap();
    for line in log.lines() {
        assert!(
            record.is_match(line) && !line.starts_with(FORGED_TIME),
            "a line that is not one of hubferry's records: {line:?}\nthe log:\n{log}"
        );
    }
    let control = log
        .chars()
        .find(|c| *c != '\n' && (c.is_control() || *c == '\u{2028}' || *c == '\u{2029}'));
    assert_eq!(control, None, "a control character in the log:\n{log}");
}

#[test]
fn crafted_realm_ids_and_paths_cannot_forge_log_lines() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &[]);
    let forged = encoded(&forged());
    let targets = [
        // A realm id the upstream never named: refused, and the refusal names the id.
        format!("/token/docker.io/{forged}"),
        format!("/token/{forged}"),
        format!("/token/docker.io/{forged}?scope=repository:x{forged}:pull"),
        format!("/v2/library/alpine{forged}/manifests/latest"),
        format!("/v2/library/alpine/manifests/{forged}"),
        format!("/v2/library/alpine/blobs/sha256:{forged}"),
        format!("/v2/{forged}"),
        format!("/{forged}"),
    ];
    for target in &targets {
        let res = send(&hf, "GET", target, &[], "");
        assert!(
            (400..500).contains(&res.status),
            "{target}: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        );
        let body: serde_json::Value = serde_json::from_slice(&res.body)
            .unwrap_or_else(|_| panic!("{target}: not a registry error"));
        assert!(body["errors"][0]["code"].is_string(), "{target}: {body}");
    }
    let log = log_with_access_records(&hf, targets.len());
    assert_one_record_per_line(&log);
    // The realm id was logged, escaped, for whoever investigates.
    assert!(
        log.contains(&format!(r"named no token realm \r\n{FORGED_TIME}")),
        "{log}"
    );
    assert!(
        log.contains(r"\x1b[2J\x1b]0;pwned\x07\u{85}\u{9b}31m"),
        "{log}"
    );
}

#[test]
fn managed_mode_scopes_and_user_names_cannot_forge_log_lines() {
    let _one = one_managed_mirror_at_a_time();
    let w = world::plain();
    let dir = tempfile::tempdir().unwrap();
    // A user name as a sign-up form may take it: no line break (htpasswd is one user a line)
    // and no colon, but a CR that sends the terminal back to the start of the line and
    // escapes that rewrite it.
    let mallory =
        "mallory\r[2025-01-01T00.00.00Z INFO  hubferry] admin logged in\u{1b}[1A\u{85}\u{9b}0m";
    let hash = bcrypt::hash("mallory-pw", 4).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{mallory}:{hash}\n")).unwrap();
    let hf = Hubferry::for_world(
        w,
        &[
            "--auth-mode",
            "managed",
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ],
    );
    let forged = forged();
    let scope = format!("repository:x{forged}:pull");
    let mut requests = 0;
    let mut expect = |res: RawResponse, status: u16| {
        requests += 1;
        assert_eq!(res.status, status, "{}", String::from_utf8_lossy(&res.body));
    };
    // Anonymous OAuth2 form (containerd), the scope in the form and in the query.
    expect(post_form(&hf, &[("scope", scope.as_str())]), 200);
    // The query refuses C0 characters outright; C1 ones it lets through.
    let query = format!("/token?service=hubferry&scope={}", encoded(&scope));
    expect(send(&hf, "GET", &query, &[], ""), 400);
    let c1_scope = "repository:y\u{85}[2J\u{9b}31m:pull";
    let query = format!("/token?service=hubferry&scope={}", encoded(c1_scope));
    expect(send(&hf, "GET", &query, &[], ""), 200);
    // The crafted user logs in, with Basic credentials and with the form.
    let credentials = basic(mallory, "mallory-pw");
    expect(
        send(&hf, "GET", "/token", &[("Authorization", &credentials)], ""),
        200,
    );
    let form = [
        ("grant_type", "password"),
        ("username", mallory),
        ("password", "mallory-pw"),
        ("scope", scope.as_str()),
    ];
    expect(post_form(&hf, &form), 200);
    // User names a client makes up, with wrong passwords.
    let made_up = format!("eve{forged}");
    let credentials = basic(&made_up, "wrong");
    expect(
        send(&hf, "GET", "/token", &[("Authorization", &credentials)], ""),
        401,
    );
    let form = [
        ("grant_type", "password"),
        ("username", made_up.as_str()),
        ("password", "wrong"),
    ];
    expect(post_form(&hf, &form), 401);
    let grant_type = format!("password{forged}");
    expect(post_form(&hf, &[("grant_type", grant_type.as_str())]), 401);

    let log = log_with_access_records(&hf, requests);
    assert_one_record_per_line(&log);
    // Both were logged, escaped.
    assert!(
        log.contains(r"issued a token to user:mallory\r[2025-01-01T00.00.00Z"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            r"issued a token to anonymous for x\r\n{FORGED_TIME}"
        )),
        "{log}"
    );
    assert!(
        log.contains(r"issued a token to anonymous for y\u{85}[2J\u{9b}31m"),
        "{log}"
    );
}
