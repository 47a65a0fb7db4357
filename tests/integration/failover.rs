//! Several endpoints for one registry: an endpoint that is down (connection refused) ahead of a
//! good one, a good one that starts answering 503 or 429 (the nginx of `pull_budget` in front of
//! the test registry, switched by the test), and the circuit breaker opening and closing. The
//! endpoint fallen back on is another registry on the world's storage that serves anyone, as
//! mirror.gcr.io serves Docker Hub's public images.

use std::time::Duration;

use crate::{
    hubferry::{raw_get, Hubferry, RawDownload, FOLLOW_LOCAL_REDIRECTS},
    operations::{get_text, sample},
    pull_budget::{get_manifest, hub},
    relay::{Fault, Relay},
    skopeo::{self, assert_blobs_copied},
    world::{self, World},
};

/// hubferry with docker.io's endpoints `first` (as `--registry`) then `fallback`.
fn with_endpoints(w: &World, first: &str, fallback: &str, extra: &[&str]) -> Hubferry {
    let file = world::config_file(&format!(
        "[[upstreams]]\nname = \"docker.io\"\nendpoints = [\"{first}\", \"{fallback}\"]\n"
    ));
    let args = [
        &["--config", file.to_str().unwrap()][..],
        extra,
        &FOLLOW_LOCAL_REDIRECTS,
    ]
    .concat();
    Hubferry::for_registry(w, first, &args)
}

#[test]
fn skopeo_pulls_past_an_endpoint_that_is_down() {
    let w = world::plain();
    let (open, _child) = w.open_registry();
    let down = format!("http://127.0.0.1:{}", world::free_port());
    let hf = with_endpoints(w, &down, &open, &[]);
    let nginx = w.image("library/nginx");
    let registry = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };
    let dir = skopeo::pull(&registry, &nginx.reference(), &[]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        nginx.manifest
    );
    assert_blobs_copied(&dir, &nginx.blobs);
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.clone().unwrap()));
    let failures = sample(
        &metrics,
        &format!(
            r#"hubferry_upstream_endpoint_failures_total{{registry="docker.io",endpoint="{down}"}}"#
        ),
    );
    assert!(failures >= 1.0, "{metrics}");
}

/// The metrics sample of an endpoint.
fn endpoint_sample(hf: &Hubferry, name: &str, endpoint: &str) -> f64 {
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.clone().unwrap()));
    sample(
        &metrics,
        &format!(r#"{name}{{registry="docker.io",endpoint="{endpoint}"}}"#),
    )
}

#[test]
fn an_endpoint_answering_503_or_429_hands_over_and_its_breaker_opens_and_closes() {
    let w = world::plain();
    let (open, _child) = w.open_registry();
    let front = hub(&w.registry_url);
    let hf = with_endpoints(
        w,
        &front.url,
        &open,
        &["--breaker-failures", "2", "--breaker-cooldown", "1s"],
    );
    let up = || endpoint_sample(&hf, "hubferry_upstream_endpoint_up", &front.url);

    // Healthy: the first endpoint answers.
    assert_eq!(get_manifest(w, &hf).0, 200);
    let asked = front.requests();
    assert!(asked >= 1);
    assert_eq!(up(), 1.0);

    // 503, then 429: each answered by the fallback, and the breaker opens after two.
    front.switch("unavailable");
    assert_eq!(get_manifest(w, &hf).0, 200);
    front.unswitch("unavailable");
    front.switch("spent");
    assert_eq!(get_manifest(w, &hf).0, 200);
    assert_eq!(
        endpoint_sample(&hf, "hubferry_upstream_endpoint_failures_total", &front.url),
        2.0
    );
    assert_eq!(up(), 0.0);

    // Open: the first endpoint is not asked at all.
    let asked = front.requests();
    assert_eq!(get_manifest(w, &hf).0, 200);
    assert_eq!(
        front.requests(),
        asked,
        "an open breaker's endpoint was asked"
    );
    let page = String::from_utf8(raw_get(&hf.addr, "/", &[("Accept", "text/html")]).body).unwrap();
    assert!(
        page.contains(&format!("Endpoint of docker.io: {}", front.url))
            && page.contains("down: skipped after 2 failures in a row"),
        "{page}"
    );

    // Healthy again: once the cooldown is over, a request probes it and the breaker closes.
    front.unswitch("spent");
    let closed = world::wait_for(Duration::from_secs(10), || {
        assert_eq!(get_manifest(w, &hf).0, 200);
        (up() == 1.0).then_some(())
    });
    assert!(closed.is_some(), "the breaker never closed");
    assert!(front.requests() > asked);
}

#[test]
fn when_no_endpoint_answers_the_client_gets_the_first_ones_answer() {
    let w = world::plain();
    let front = hub(&w.registry_url);
    let down = format!("http://127.0.0.1:{}", world::free_port());
    let hf = with_endpoints(w, &front.url, &down, &[]);
    front.switch("spent");
    let (status, retry_after, body) = get_manifest(w, &hf);
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
}

/// A fallback that wants a token (the world's registry itself, behind a first endpoint that is
/// down): hubferry asks the realm of its challenge for an anonymous one, as a client would.
#[test]
fn a_fallback_that_asks_for_a_token_gets_an_anonymous_one() {
    let w = world::plain();
    let down = format!("http://127.0.0.1:{}", world::free_port());
    let hf = with_endpoints(w, &down, &w.registry_url, &[]);
    let nginx = w.image("library/nginx");
    let registry = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };
    let dir = skopeo::pull(&registry, &nginx.reference(), &[]);
    assert_blobs_copied(&dir, &nginx.blobs);
    let asked = w.issuer_records().iter().any(|r| {
        r.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("hubferry/"))
            && r.query_values("scope")
                .iter()
                .any(|s| s == "repository:library/nginx:pull")
    });
    assert!(
        asked,
        "hubferry asked the fallback's realm for no token of its own"
    );
}

/// A blob download broken at the first endpoint's CDN while that endpoint has gone: the
/// resume asks again through the endpoints, and the next one's answer (the same range of the
/// same bytes, from the same CDN) continues the client's download.
#[test]
fn a_download_broken_at_one_endpoint_goes_on_from_the_next() {
    use sha2::{Digest, Sha256};
    let w = world::plain();
    let relay = Relay::start(w.cdn_host(), &[Fault::CutAfter(20_000_000)]);
    let (first, first_child) = w.registry_redirecting_to(&format!("http://{}", relay.addr));
    let (open, _open_child) = w.open_registry();
    let hf = with_endpoints(w, &first, &open, &["--resume-backoff", "50ms"]);
    let big = w.big_layer();
    let token = w.token(&["repository:library/big:pull"]);
    let authorization = format!("Bearer {token}");
    let mut download = RawDownload::start(
        &hf.addr,
        &format!("/v2/library/big/blobs/{}", big.digest),
        &[("Authorization", authorization.as_str())],
    );
    // Under way from the first endpoint; then it goes away, and its CDN link breaks.
    download.read_some(1_000_000);
    drop(first_child);
    let response = download.finish();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len() as u64, big.size);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&response.body)),
        big.digest
    );
    let log = hf.log_text();
    assert!(log.contains("resuming "), "{log}");
    assert!(
        log.contains(&format!("answered by {open}")),
        "the resume was not answered by the next endpoint:\n{log}"
    );
}
