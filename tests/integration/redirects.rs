//! The redirect resolver against an upstream that redirects in every way; the
//! real 307-to-CDN flow is in `registry_api`.

use actix_web::http::Method;
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes::{self, echo_of as json, echoed_header},
    hubferry::Hubferry,
    world,
};

fn start(upstream: &str, extra: &[&str]) -> Hubferry {
    Hubferry::start_with(&[&["--registry", upstream], extra].concat())
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echoed_header(echo, name).first().copied()
}

#[actix_rt::test]
async fn loops_and_endless_chains_are_a_502() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &["--max-redirects", "4"]);
    let client = world::client(None);
    for path in [
        "/v2/loop/manifests/a",
        "/v2/chain/manifests/0",
        "/v2/bad-scheme/manifests/x",
    ] {
        let mut res = client
            .get(format!("{}{path}", hf.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502, "{path}");
        assert!(res.headers().get("location").is_none());
        let body = json(&mut res).await;
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{path}");
    }
    let log = hf.log_text();
    assert!(log.contains("redirect loop"), "{log}");
    assert!(log.contains("more than 4 redirects"), "{log}");
}

#[actix_rt::test]
async fn relative_locations_resolve_against_the_request() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!("{}/v2/relative/x/manifests/start", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(json(&mut res).await["path"], "/v2/relative/end");
    // The access log says a redirect was followed (its line is written once the body is done,
    // which may be just after the client has read it).
    let followed =
        |l: &str| l.contains("/v2/relative/x/manifests/start") && l.contains("redirects=1");
    assert!(
        world::wait_until(std::time::Duration::from_secs(10), || {
            hf.log_text().lines().any(followed)
        }),
        "{}",
        hf.log_text()
    );
}

#[actix_rt::test]
async fn see_other_keeps_head_and_turns_into_get() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let url = format!("{}/v2/see-other/manifests/x", hf.url);
    let head = client.request(Method::HEAD, &url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers().get("x-method").unwrap(), "HEAD");
    let mut get = client.get(&url).send().await.unwrap();
    assert_eq!(json(&mut get).await["path"], "/v2/after-303");
}

#[actix_rt::test]
async fn the_cdn_hop_gets_no_credentials_and_its_own_host() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &FOLLOW_LOCAL_REDIRECTS);
    let client = world::client(None);
    let mut res = client
        .get(format!("{}/v2/other-origin/manifests/x", hf.url))
        .insert_header(("Authorization", "Bearer registry-token"))
        .insert_header(("Range", "bytes=100-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echo = json(&mut res).await;
    assert_eq!(echo["path"], "/cdn/blob");
    assert_eq!(echo["query"], "sig=1");
    assert_eq!(header(&echo, "authorization"), None);
    let port = upstream.rsplit(':').next().unwrap();
    assert_eq!(
        header(&echo, "host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_eq!(header(&echo, "range"), Some("bytes=100-"));
}

#[actix_rt::test]
async fn requests_with_bodies_get_the_redirect_itself() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let res = client
        .post(format!("{}/v2/chain/manifests/0", hf.url))
        .send_body("payload")
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    // The Location pointed at the upstream; the client is sent back through us.
    let location = res.headers().get("location").unwrap().to_str().unwrap();
    assert_eq!(location, "/v2/chain/manifests/1");
}
