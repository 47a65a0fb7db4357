//! Proves the test world behaves like Docker Hub before any proxy is involved: real clients
//! (skopeo, awc) against the registry, CDN and token issuer directly.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::{
    skopeo::{self, assert_blobs_copied},
    world::{self, World},
};

/// `skopeo copy` from the world's registry into a fresh `dir:`; returns that dir.
fn skopeo_copy(world: &World, reference: &str, extra: &[&str]) -> PathBuf {
    let registry = skopeo::Registry {
        host: world.registry_host(),
        ca_file: world.ca_file.as_deref(),
    };
    skopeo::pull(&registry, reference, extra)
}

#[test]
fn skopeo_copies_the_index_with_all_platforms() {
    let w = world::plain();
    let alpine = w.image("library/alpine");
    let dir = skopeo_copy(w, "library/alpine:latest", &["--all"]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        alpine.manifest
    );
    assert_blobs_copied(&dir, &alpine.blobs);
}

#[test]
fn skopeo_picks_amd64_from_the_index() {
    let w = world::plain();
    let alpine = w.image("library/alpine");
    let amd64 = alpine
        .children
        .iter()
        .find(|c| c.platform == "linux/amd64")
        .unwrap();
    let dir = skopeo_copy(w, "library/alpine:latest", &[]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        amd64.manifest
    );
    assert_blobs_copied(&dir, &amd64.blobs);
}

#[test]
fn skopeo_copies_schema2_and_private_with_credentials() {
    let w = world::plain();
    for (repo, extra) in [
        ("library/nginx", &[][..]),
        ("someorg/tool", &[][..]),
        ("library/many", &[][..]),
        ("private/secret", &["--src-creds", "testuser:testpass"][..]),
    ] {
        let image = w.image(repo);
        let dir = skopeo_copy(w, &image.reference(), extra);
        assert_eq!(
            std::fs::read(dir.join("manifest.json")).unwrap(),
            image.manifest
        );
        assert_blobs_copied(&dir, &image.blobs);
    }
}

#[test]
fn skopeo_over_tls_with_the_test_ca() {
    let w = world::tls();
    assert!(w.registry_url.starts_with("https://") && w.cdn_url.starts_with("https://"));
    let alpine = w.image("library/alpine");
    let dir = skopeo_copy(w, "library/alpine:latest", &["--all"]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        alpine.manifest
    );
    assert_blobs_copied(&dir, &alpine.blobs);
    let nginx = w.image("library/nginx");
    let dir = skopeo_copy(w, "library/nginx:latest", &[]);
    assert_blobs_copied(&dir, &nginx.blobs);
    // The CDN really served them over TLS.
    let layer = nginx.layers().next().unwrap();
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    assert!(w
        .wait_for_cdn_log(Duration::from_secs(5), |e| e.uri.contains(hex)
            && e.status == 200)
        .is_some());
}

async fn registry_blob(
    w: &World,
    method: awc::http::Method,
    repo: &str,
    digest: &str,
) -> awc::ClientResponse<impl futures_util::Stream> {
    let token = w.token(&[&format!("repository:{repo}:pull")]);
    w.client()
        .request(
            method,
            format!("{}/v2/{repo}/blobs/{digest}", w.registry_url),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn check_blob_redirect(w: &World) {
    let nginx = w.image("library/nginx");
    let layer = nginx.layers().next().unwrap();
    for method in [awc::http::Method::GET, awc::http::Method::HEAD] {
        let resp = registry_blob(w, method.clone(), &nginx.repository, &layer.digest).await;
        assert_eq!(resp.status().as_u16(), 307, "{method} blob");
        let location = resp.headers().get("location").unwrap().to_str().unwrap();
        assert_eq!(
            location,
            w.cdn_blob_url(&layer.digest),
            "{method} blob location"
        );
    }
    // The registry's access log shows the HEAD as a HEAD.
    let head = w.wait_for_registry_request(Duration::from_secs(5), |r| {
        // Exactly this repo: other tests (a push through hubferry) HEAD the same digest elsewhere.
        r.method == "HEAD" && r.uri == format!("/v2/{}/blobs/{}", nginx.repository, layer.digest)
    });
    assert_eq!(head.expect("registry logged the HEAD").status, 307);
    // The CDN serves the exact bytes, with no credentials needed.
    let client = w.client();
    let mut resp = client
        .get(w.cdn_blob_url(&layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.body().await.unwrap();
    assert_eq!(world::sha256_digest(&body), layer.digest);
    let hex = layer.digest.strip_prefix("sha256:").unwrap().to_string();
    let entry = w
        .wait_for_cdn_log(Duration::from_secs(5), |e| {
            e.uri.contains(&hex) && e.method == "GET" && e.status == 200
        })
        .expect("CDN logged the GET");
    assert_eq!(entry.authorization, None);
    assert_eq!(entry.body_bytes, layer.size);
    assert_eq!(entry.host.as_deref(), Some(w.cdn_host()));
}

#[actix_rt::test]
async fn blob_get_and_head_redirect_to_the_cdn() {
    check_blob_redirect(world::plain()).await;
}

#[actix_rt::test]
async fn blob_redirect_over_tls() {
    check_blob_redirect(world::tls()).await;
}

#[actix_rt::test]
async fn big_layer_is_served_with_ranges() {
    let w = world::plain();
    let big = w.big_layer();
    assert!(big.size >= 100 * 1024 * 1024);
    assert_eq!(big.media_type, world::OCI_LAYER_TAR);
    assert_eq!(
        std::fs::metadata(w.blob_path(&big.digest)).unwrap().len(),
        big.size
    );
    let client = w.client();
    let resp = client
        .head(w.cdn_blob_url(&big.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-length")
            .unwrap()
            .to_str()
            .unwrap(),
        big.size.to_string()
    );
    // First 512 bytes: the tar header of big.bin, exactly as generated.
    let mut resp = client
        .get(w.cdn_blob_url(&big.digest))
        .insert_header(("Range", "bytes=0-511"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        resp.headers()
            .get("content-range")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("bytes 0-511/{}", big.size)
    );
    let body = resp.body().await.unwrap();
    assert_eq!(
        body.as_ref(),
        world::big_layer_chunks().next().unwrap().as_slice()
    );
}

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

/// GET the issuer's `/token`; returns (status, JSON body).
async fn get_token(w: &World, query: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = w.client().get(format!("{}/token?{query}", w.issuer_url));
    if let Some(a) = auth {
        req = req.insert_header(("Authorization", a));
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn manifest_status(w: &World, image: &world::TestImage, token: &str) -> u16 {
    let url = format!(
        "{}/v2/{}/manifests/{}",
        w.registry_url, image.repository, image.tag
    );
    let resp = w
        .client()
        .get(url)
        .insert_header(("Accept", image.media_type.as_str()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[actix_rt::test]
async fn token_flow_guards_private_repositories() {
    let w = world::plain();
    let secret = w.image("private/secret");
    let query = "service=registry.docker.io&scope=repository:private/secret:pull";

    // The registry's challenge points at the issuer, as Docker Hub's points at auth.docker.io.
    let url = format!("{}/v2/private/secret/manifests/latest", w.registry_url);
    let resp = w.client().get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        challenge.contains(&format!("realm=\"{}/token\"", w.issuer_url)),
        "{challenge}"
    );
    assert!(
        challenge.contains("service=\"registry.docker.io\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:private/secret:pull\""),
        "{challenge}"
    );

    let (status, body) = get_token(w, query, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let anon = body["token"].as_str().unwrap();
    assert_eq!(manifest_status(w, secret, anon).await, 401);

    let (status, _) = get_token(w, query, Some(&basic("testuser", "wrong"))).await;
    assert_eq!(status, 401);

    let (status, body) = get_token(w, query, Some(&basic("testuser", "testpass"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        manifest_status(w, secret, body["access_token"].as_str().unwrap()).await,
        200
    );

    // Several scope parameters in one request, anonymous: public one granted only.
    let alpine = w.image("library/alpine");
    let multi = format!("{query}&scope=repository:library/alpine:pull");
    let (_, body) = get_token(w, &multi, None).await;
    let token = body["token"].as_str().unwrap();
    assert_eq!(manifest_status(w, alpine, token).await, 200);
    assert_eq!(manifest_status(w, secret, token).await, 401);
}

#[actix_rt::test]
async fn oauth_post_token_and_records() {
    let w = world::plain();
    let secret = w.image("private/secret");
    let form = "grant_type=password&username=testuser&password=testpass&service=registry.docker.io\
                &scope=repository%3Aprivate%2Fsecret%3Apull&client_id=world-smoke&access_type=offline";
    let mut resp = w
        .client()
        .post(format!("{}/token", w.issuer_url))
        .insert_header(("X-Forwarded-For", "203.0.113.7"))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "repository:private/secret:pull");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(manifest_status(w, secret, token).await, 200);

    let refresh = body["refresh_token"].as_str().unwrap();
    let form = format!("grant_type=refresh_token&refresh_token={refresh}&service=registry.docker.io&scope=repository%3Aprivate%2Fsecret%3Apull&client_id=world-smoke");
    let mut resp = w
        .client()
        .post(format!("{}/token", w.issuer_url))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        manifest_status(w, secret, body["access_token"].as_str().unwrap()).await,
        200
    );

    let record = w
        .issuer_records()
        .into_iter()
        .find(|r| r.method == "POST" && r.body.contains("client_id=world-smoke&access_type"))
        .expect("issuer recorded the POST");
    assert_eq!(record.x_forwarded_for.as_deref(), Some("203.0.113.7"));
    assert_eq!(record.host.as_deref(), Some(w.issuer_host()));
    assert_eq!(record.authorization, None);
}

async fn search(w: &World, query: &str) -> serde_json::Value {
    let mut resp = w
        .client()
        .get(format!("{}/v1/search?{query}", w.issuer_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[actix_rt::test]
async fn search_answers_like_docker_hub() {
    let w = world::plain();
    let body = search(w, "q=alp&n=25&page=1").await;
    assert_eq!(body["query"], "alp");
    assert_eq!(body["num_results"], 1);
    assert_eq!(body["page"], 1);
    assert_eq!(body["page_size"], 25);
    assert_eq!(body["num_pages"], 1);
    let hit = &body["results"][0];
    assert_eq!(hit["name"], "alpine");
    assert_eq!(hit["is_official"], true);
    assert_eq!(hit["is_automated"], false);
    assert!(hit["star_count"].is_u64() && hit["description"].is_string());

    let body = search(w, "q=tool").await;
    assert_eq!(body["results"][0]["name"], "someorg/tool");
    assert_eq!(body["results"][0]["is_official"], false);
    assert_eq!(search(w, "q=secret").await["num_results"], 0);
    // Pagination over everything public: alpine big many nginx someorg/tool, plus whatever
    // other tests pushed meanwhile (library/pushed-*).
    let body = search(w, "q=&n=2&page=1").await;
    let total = body["num_results"].as_u64().unwrap();
    assert!(total >= 5, "{body}");
    assert_eq!(body["num_pages"].as_u64().unwrap(), total.div_ceil(2));
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
}
