//! The registry API through hubferry against the real registry, CDN and token issuer, at the
//! HTTP level: the token dance, manifests (HEAD and GET), blobs through the 307, ranges,
//! search, and what the upstreams received.

use std::time::Duration;

use actix_web::http::{header, Method};
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::Hubferry,
    world::{self, World},
};

/// Gets a pull token for `repo` through hubferry, as a client would.
async fn token(client: &awc::Client, hf: &Hubferry, repo: &str) -> String {
    let mut res = client
        .get(format!(
            "{}/token?service={}&scope=repository:{repo}:pull",
            hf.url,
            world::SERVICE
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

fn started() -> (&'static World, Hubferry, awc::Client) {
    started_with(&[])
}

/// As [`started`], with hubferry following the registry's blob redirects to the world's CDN.
fn started_following() -> (&'static World, Hubferry, awc::Client) {
    started_with(&FOLLOW_LOCAL_REDIRECTS)
}

fn started_with(extra: &[&str]) -> (&'static World, Hubferry, awc::Client) {
    let w = world::plain();
    let hf = Hubferry::for_world(w, extra);
    (w, hf, world::client(None))
}

#[actix_rt::test]
async fn challenges_send_clients_to_our_token_endpoint() {
    let (_, hf, client) = started();
    let res = client.get(format!("{}/v2/", hf.url)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        &format!(
            r#"Bearer realm="{}/token",service="registry.docker.io""#,
            hf.url
        )
    );
    let res = client
        .request(
            Method::HEAD,
            format!("{}/v2/library/alpine/manifests/latest?ns=docker.io", hf.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        &format!(
            r#"Bearer realm="{}/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
            hf.url
        )
    );
}

#[actix_rt::test]
async fn token_requests_reach_the_issuer_with_forwarding_headers() {
    let (w, hf, client) = started();
    let marker = format!("repository:library/marker-{}:pull", std::process::id());
    let res = client
        .get(format!("{}/token?service=registry.docker.io&scope={marker}&scope=repository:library/nginx:pull", hf.url))
        .insert_header(("X-Forwarded-For", "198.51.100.4"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let record = w
        .issuer_records()
        .into_iter()
        .find(|r| r.query.contains(&marker))
        .expect("the issuer saw the token request");
    assert_eq!(record.path, "/token");
    assert_eq!(record.query_values("scope").len(), 2);
    assert_eq!(
        record.x_forwarded_for.as_deref(),
        Some("198.51.100.4, 127.0.0.1")
    );
    assert_eq!(record.x_real_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(record.x_forwarded_proto.as_deref(), Some("http"));
    assert_eq!(record.host.as_deref(), Some(w.issuer_host()));
}

#[actix_rt::test]
async fn oauth_form_token_requests_pass_with_their_body() {
    let (_, hf, client) = started();
    let form = format!(
        "grant_type=password&username={}&password={}&service=registry.docker.io&scope=repository%3Aprivate%2Fsecret%3Apull&client_id=test",
        world::USERNAME,
        world::PASSWORD
    );
    let mut res = client
        .post(format!("{}/token", hf.url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(form)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
}

#[actix_rt::test]
async fn manifests_head_and_get_agree_and_head_stays_head() {
    let (w, hf, client) = started();
    for (repo, accept) in [
        ("library/alpine", world::OCI_INDEX),
        ("library/nginx", world::DOCKER_MANIFEST),
    ] {
        let image = w.image(repo);
        let bearer = format!("Bearer {}", token(&client, &hf, repo).await);
        let url = format!("{}/v2/{repo}/manifests/{}?ns=docker.io", hf.url, image.tag);
        let head = client
            .request(Method::HEAD, &url)
            .insert_header(("Authorization", bearer.as_str()))
            .insert_header(("Accept", accept))
            .insert_header(("User-Agent", "hubferry-head-test"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "{repo}");
        let mut get = client
            .get(&url)
            .insert_header(("Authorization", bearer.as_str()))
            .insert_header(("Accept", accept))
            .send()
            .await
            .unwrap();
        let body = get.body().await.unwrap();
        assert_eq!(body.as_ref(), image.manifest.as_slice());
        for res in [&head, &get] {
            assert_eq!(
                res.headers().get("docker-content-digest").unwrap(),
                image.digest.as_str()
            );
            assert_eq!(
                res.headers().get(header::CONTENT_TYPE).unwrap(),
                image.media_type.as_str()
            );
            assert_eq!(
                res.headers().get(header::CONTENT_LENGTH).unwrap(),
                body.len().to_string().as_str()
            );
        }
        // The registry saw a HEAD, with containerd's ns= intact.
        let seen = w.wait_for_registry_request(Duration::from_secs(5), |r| {
            r.method == "HEAD"
                && r.uri == format!("/v2/{repo}/manifests/{}?ns=docker.io", image.tag)
                && r.user_agent == "hubferry-head-test"
        });
        assert!(seen.is_some(), "HEAD did not reach the registry as HEAD");
    }
}

#[actix_rt::test]
async fn private_repos_are_refused_without_credentials() {
    let (_, hf, client) = started();
    let bearer = format!("Bearer {}", token(&client, &hf, "private/secret").await);
    let res = client
        .get(format!("{}/v2/private/secret/manifests/latest", hf.url))
        .insert_header(("Authorization", bearer))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with(&format!(r#"Bearer realm="{}/token""#, hf.url)),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="repository:private/secret:pull""#),
        "{challenge}"
    );
}

#[actix_rt::test]
async fn blobs_come_through_the_cdn_without_credentials() {
    let (w, hf, client) = started_following();
    let nginx = w.image("library/nginx");
    let layer = nginx.layers().next().unwrap();
    let data = layer.data.as_ref().unwrap();
    let bearer = format!("Bearer {}", token(&client, &hf, "library/nginx").await);
    let agent = format!("hubferry-blob-test-{}", std::process::id());
    let url = format!("{}/v2/library/nginx/blobs/{}", hf.url, layer.digest);

    let mut res = client
        .get(&url)
        .insert_header(("Authorization", bearer.as_str()))
        .insert_header(("User-Agent", agent.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get(header::LOCATION).is_none(),
        "the client must not see the CDN"
    );
    assert_eq!(
        res.headers().get(header::CONTENT_LENGTH).unwrap(),
        data.len().to_string().as_str()
    );
    assert!(res.headers().get(header::ETAG).is_some());
    assert_eq!(
        res.body().limit(1 << 26).await.unwrap().as_ref(),
        data.as_slice()
    );

    let entry = w
        .wait_for_cdn_log(Duration::from_secs(5), |e| {
            e.user_agent.as_deref() == Some(agent.as_str())
        })
        .expect("the CDN served the blob");
    assert_eq!(entry.authorization, None, "Authorization leaked to the CDN");
    assert_eq!(entry.host.as_deref(), Some(w.cdn_host()));

    // HEAD follows the redirect too, and keeps the length.
    let head = client
        .request(Method::HEAD, &url)
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers().get(header::CONTENT_LENGTH).unwrap(),
        data.len().to_string().as_str()
    );
}

#[actix_rt::test]
async fn ranges_reach_the_cdn_and_come_back_as_206() {
    let (w, hf, client) = started_following();
    let layer = w.image("library/nginx").layers().next().unwrap();
    let data = layer.data.as_ref().unwrap();
    let bearer = format!("Bearer {}", token(&client, &hf, "library/nginx").await);
    let start = data.len() / 3;
    let mut res = client
        .get(format!(
            "{}/v2/library/nginx/blobs/{}",
            hf.url, layer.digest
        ))
        .insert_header(("Authorization", bearer))
        .insert_header(("Range", format!("bytes={start}-")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers().get(header::CONTENT_RANGE).unwrap(),
        format!("bytes {start}-{}/{}", data.len() - 1, data.len()).as_str()
    );
    assert_eq!(
        res.headers().get(header::CONTENT_LENGTH).unwrap(),
        (data.len() - start).to_string().as_str()
    );
    assert_eq!(
        res.body().limit(1 << 26).await.unwrap().as_ref(),
        &data[start..]
    );
}

#[actix_rt::test]
async fn search_strips_library_and_answers_in_hub_format() {
    let (w, hf, client) = started();
    let mut res = client
        .get(format!(
            "{}/v1/search?q=library/alpine&n=10&page=&junk=1",
            hf.url
        ))
        .insert_header(("X-Docker-Token", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["num_results"].as_u64().unwrap() >= 1, "{body}");
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "alpine" || r["name"] == "library/alpine"),
        "{body}"
    );
    let record = w
        .issuer_records()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/search" && r.query == "q=alpine&n=10")
        .expect("the index saw the rewritten query");
    assert_eq!(record.host.as_deref(), Some(w.issuer_host()));
}
