//! Upstream answers that could hurt: redirects into the mirror's own network,
//! malformed challenges, and bodies that disagree with their `Content-Length`. Redirect loops
//! and non-http(s) `Location`s are in `redirects`, a body shorter than its length in `failures`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes,
    hubferry::{raw_get, Hubferry},
    world,
};

const REFUSE: [&str; 2] = ["--allow-private-redirects", "false"];

/// Why the mirror answered 502, as the operator reads it: the error's log line, found by the
/// request id of the answer. The client's own message names the failing role only.
async fn error_message(hf: &Hubferry, res: &mut awc::ClientResponse) -> String {
    let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let told = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !told.contains("127.0.0.1") && !told.contains("refusing"),
        "{told}"
    );
    hf.error_log_line(&body)
}

fn metrics(hf: &Hubferry) -> String {
    let admin = hf.admin_url.clone().unwrap();
    actix_rt::System::new().block_on(async {
        let mut res = world::client(None)
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap();
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
    })
}

/// The real world's registry answers a blob GET with a 307 to its CDN on 127.0.0.1: with the
/// default `redirect.allow_private = false` that hop is refused, and the CDN sees nothing.
#[test]
fn the_registry_redirect_to_a_loopback_cdn_is_refused_by_default() {
    let w = world::plain();
    // A blob of its own, so no other test's download of it can show up in the CDN's log.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let digest = w.push_blob(
        "library/alpine",
        format!("refused redirect {nanos:?}").into_bytes(),
    );
    let hf = Hubferry::for_world(w, &REFUSE);
    let bearer = format!("Bearer {}", w.token(&["repository:library/alpine:pull"]));
    let path = format!("/v2/library/alpine/blobs/{digest}");
    let message = actix_rt::System::new().block_on(async {
        let mut res = world::client(None)
            .get(format!("{}{path}", hf.url))
            .insert_header((header::AUTHORIZATION, bearer.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
        assert!(res.headers().get(header::LOCATION).is_none());
        error_message(&hf, &mut res).await
    });
    let cdn = w.cdn_host();
    assert!(
        message.contains(&format!("refusing to connect to {cdn}"))
            && message.contains("127.0.0.1 is loopback")
            && message.contains("redirect.allow_private"),
        "{message}"
    );
    // The registry was asked and answered its 307; the hop after it never happened.
    assert!(w
        .wait_for_registry_request(Duration::from_secs(5), |r| r.uri.contains(&digest))
        .is_some());
    // nginx logs a request once it has answered it: a request of the test's own, made now and
    // logged, is logged after any hubferry made before its 502.
    let marker = format!("/settled-{}", hf.addr.replace(':', "-"));
    let _ = crate::hubferry::raw_get(w.cdn_host(), &marker, &[]);
    assert!(w
        .wait_for_cdn_log(Duration::from_secs(10), |e| e.uri == marker)
        .is_some());
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !w.cdn_log().iter().any(|e| e.uri.contains(hex)),
        "the CDN was reached"
    );
    assert!(hf.log_text().contains("refusing to connect to"));
    let metrics = metrics(&hf);
    assert!(
        metrics.contains(
            r#"hubferry_upstream_errors_total{upstream="blob CDN",registry="docker.io",kind="redirect"} 1"#
        ),
        "{metrics}"
    );
}

/// Literal addresses (IPv4, IPv4-mapped IPv6) and names that resolve to loopback are refused
/// alike; a redirect back to the configured upstream, private as it is, is still followed.
#[actix_rt::test]
async fn private_redirect_targets_are_refused_the_configured_upstream_is_not() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start_with(&[&["--registry", upstream.as_str()], &REFUSE[..]].concat());
    let client = world::client(None);
    let port = upstream.rsplit(':').next().unwrap();
    for (path, refused) in [
        ("/v2/other-origin/manifests/x", format!("localhost:{port}")),
        ("/v2/mapped/manifests/x", format!("[::ffff:7f00:1]:{port}")),
        ("/v2/metadata/manifests/x", "169.254.169.254:80".to_owned()),
    ] {
        let mut res = client
            .get(format!("{}{path}", hf.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502, "{path}");
        let message = error_message(&hf, &mut res).await;
        assert!(
            message.contains(&format!("refusing to connect to {refused}: ")),
            "{path}: {message}"
        );
    }
    let res = client
        .get(format!("{}/v2/relative/x/manifests/start", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Every Bearer challenge a client sees names our token endpoint, however broken the upstream's
/// was; other schemes pass as they came; nothing panics.
#[actix_rt::test]
async fn malformed_challenges_never_leak_the_upstream_realm() {
    let upstream = fakes::malformed_challenges();
    let hf = Hubferry::start_with(&["--registry", upstream.as_str()]);
    let client = world::client(None);
    let res = client
        .get(format!("{}/v2/a/manifests/b", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let values: Vec<_> = res
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    assert_eq!(values.len(), 8, "{values:?}");
    let realm = format!(r#"Bearer realm="{}/token""#, hf.url);
    for value in &values {
        if value.to_ascii_lowercase().starts_with("bearer") {
            assert!(value.starts_with(&realm), "{value}");
        }
        assert!(!value.contains("auth.example"), "{value}");
    }
    assert!(values.contains(&r#"Basic realm="unterminated"#.to_owned()));
    assert!(values.contains(&format!(
        r#"{realm},service="svc",scope="repository:a/b:pull""#
    )));
    // Still serving.
    let res = client.get(format!("{}/v2/_catalog", hf.url)).send().await;
    assert_eq!(res.unwrap().status(), 404);
}

/// Bytes after the promised length are not passed on, and are never read as the answer to a
/// later request on a pooled connection (response smuggling).
#[test]
fn bytes_past_the_length_are_dropped_never_smuggled() {
    let upstream = fakes::long_body();
    let hf = Hubferry::start_with(&["--registry", upstream.as_str(), "--workers", "1"]);
    for path in [
        "/v2/a/blobs/sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "/v2/a/blobs/sha256:2222222222222222222222222222222222222222222222222222222222222222",
        "/v2/a/blobs/sha256:3333333333333333333333333333333333333333333333333333333333333333",
    ] {
        let res = raw_get(&hf.addr, path, &[]);
        assert_eq!(res.status, 200, "{path}: {}", hf.log_text());
        assert_eq!(res.header("x-smuggled"), None, "{path}");
        assert_eq!(res.header("content-length"), Some("10"), "{path}");
        assert_eq!(res.body, b"0123456789", "{path}");
    }
}

/// Two `Content-Length`s that disagree: the framing is unknowable, so nothing is relayed.
#[actix_rt::test]
async fn conflicting_lengths_are_a_502() {
    let upstream = fakes::conflicting_lengths();
    let hf = Hubferry::start_with(&["--registry", upstream.as_str()]);
    let mut res = world::client(None)
        .get(format!(
            "{}/v2/a/blobs/sha256:4444444444444444444444444444444444444444444444444444444444444444",
            hf.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    error_message(&hf, &mut res).await;
}

/// A CDN body shorter than its length, reached through a redirect, is cut off too: a strict
/// client sees either nothing or the promised length with fewer bytes before the close.
#[test]
fn a_short_body_behind_a_redirect_is_never_complete() {
    let upstream = fakes::short_body_behind_redirect();
    let hf = Hubferry::start_with(
        &[
            &["--registry", upstream.as_str()],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    );
    let outcome = std::panic::catch_unwind(|| raw_get(&hf.addr, "/v2/cdn-hop/manifests/x", &[]));
    if let Ok(res) = outcome {
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-length"), Some("1000"));
        assert!(res.body.len() < 1000, "a short body passed off as complete");
    }
    let logged = |log: &str| {
        log.contains("blob CDN failed after 10 bytes") || log.contains("ended after 10 of 1000")
    };
    assert!(
        world::wait_until(Duration::from_secs(10), || logged(&hf.log_text())),
        "{}",
        hf.log_text()
    );
}
