//! Upstream failures become registry JSON errors with the right status and a log line naming
//! the upstream, and a body that breaks is never passed off as complete.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    fakes,
    hubferry::{raw_get, Hubferry},
    world,
};

fn start(registry: &str, extra: &[&str]) -> Hubferry {
    Hubferry::start_with(&[&["--registry", registry], extra].concat())
}

async fn error_of(res: &mut awc::ClientResponse) -> Value {
    let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[actix_rt::test]
async fn refused_connection_is_a_502_naming_the_upstream() {
    let dead = format!("http://127.0.0.1:{}", world::free_port());
    let hf = start(&dead, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!("{}/v2/library/alpine/manifests/latest", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(error_of(&mut res).await["errors"][0]["code"], "UNAVAILABLE");
    let log = hf.log_text();
    assert!(
        log.contains("cannot reach upstream registry") && log.contains(&dead),
        "{log}"
    );
}

/// The answer is for the client: the error's code, which role failed, and a request id. The
/// upstream's address and the cause are for the operator: in the log line of that same id,
/// which the request's access line carries too.
#[actix_rt::test]
async fn an_error_answer_and_its_log_lines_share_a_request_id_and_only_the_log_says_why() {
    let port = world::free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let hf = start(&dead, &[]);
    let mut res = world::client(None)
        .get(format!("{}/v2/library/alpine/manifests/latest", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let header = res
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = error_of(&mut res).await;
    let id = body["errors"][0]["detail"]["request_id"].as_str().unwrap();
    assert_eq!(id, header);
    assert_eq!(
        body["errors"][0]["message"],
        "the mirror cannot reach upstream registry"
    );
    assert!(!body.to_string().contains(&port.to_string()), "{body}");
    let logged = hf.error_log_line(&body);
    assert!(
        logged.contains(&dead) && logged.contains("WARN"),
        "{logged}"
    );
    assert!(logged.contains("source=upstream"), "{logged}");
    let access = format!("request_id={id}");
    assert!(
        world::wait_until(Duration::from_secs(5), || {
            hf.log_text()
                .lines()
                .any(|l| l.contains("hubferry::access]") && l.contains(&access))
        }),
        "no access line with {access}:\n{}",
        hf.log_text()
    );
}

#[actix_rt::test]
async fn unknown_host_is_a_502() {
    let hf = start(
        "http://no-such-registry.invalid",
        &["--connect-timeout", "3s"],
    );
    let client = world::client(None);
    let mut res = client.get(format!("{}/v2/", hf.url)).send().await.unwrap();
    assert!(
        matches!(res.status().as_u16(), 502 | 504),
        "{}",
        res.status()
    );
    assert_eq!(error_of(&mut res).await["errors"][0]["code"], "UNAVAILABLE");
}

#[actix_rt::test]
async fn silent_upstream_is_a_504_and_others_are_still_served() {
    let silent = fakes::silent();
    let hf = start(&silent, &["--response-timeout", "2s"]);
    let client = world::client(None);
    let url = format!("{}/v2/library/alpine/manifests/latest", hf.url);
    let pending = actix_rt::spawn({
        let client = client.clone();
        async move { client.get(url).send().await }
    });
    // Meanwhile the server answers other requests at once.
    let started = Instant::now();
    let res = client
        .get(format!("{}/v2/_catalog", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "blocked behind the silent upstream"
    );
    let mut res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(error_of(&mut res).await["errors"][0]["code"], "UNAVAILABLE");
    assert!(hf
        .log_text()
        .contains("did not send response headers within 2s"));
}

/// What a strict client sees when the upstream body breaks: either nothing (the connection
/// closed before the head was flushed) or the promised length with fewer bytes before the close.
fn assert_cut_short(hf: &Hubferry) {
    let path =
        "/v2/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let addr = hf.url.trim_start_matches("http://");
    let outcome = std::panic::catch_unwind(|| raw_get(addr, path, &[]));
    if let Ok(res) = outcome {
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-length"), Some("1000"));
        assert!(res.body.len() < 1000, "a short body passed off as complete");
    }
}

#[test]
fn a_short_upstream_body_is_never_complete_downstream() {
    let short = fakes::short_body();
    let hf = start(&short, &[]);
    assert_cut_short(&hf);
    assert!(
        world::wait_until(Duration::from_secs(10), || {
            hf.log_text().contains("ended after 10 of 1000 bytes")
        }),
        "{}",
        hf.log_text()
    );
}

#[test]
fn a_stalled_upstream_body_is_cut_by_the_idle_timeout() {
    let stalled = fakes::stalled_body();
    let hf = start(&stalled, &["--idle-timeout", "1s"]);
    assert_cut_short(&hf);
    assert!(
        hf.log_text().contains("was idle for 1s after 10 bytes"),
        "{}",
        hf.log_text()
    );
}
