//! What an upstream receives and what a client gets back, per route, seen from an upstream
//! that reports every header (behaviours 1, 3, 4, 7 and 9 of the core issue).

use actix_web::http::{header, Method};

use crate::{
    fakes::{self, echo_of, echoed_header as header},
    hubferry::Hubferry,
    world,
};

fn start(upstream: &str, extra: &[&str]) -> Hubferry {
    let mut args = vec![
        "--registry",
        upstream,
        "--auth",
        upstream,
        "--index",
        upstream,
    ];
    args.extend_from_slice(extra);
    Hubferry::start_with(&args)
}

#[actix_rt::test]
async fn registry_requests_keep_their_headers_and_get_forwarding_ones() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!(
            "{}/v2/library/alpine/manifests/latest?ns=docker.io",
            hf.url
        ))
        .insert_header(("Accept", "application/vnd.oci.image.index.v1+json"))
        .append_header((
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        ))
        .insert_header(("Authorization", "Bearer client-token"))
        .insert_header(("Range", "bytes=5-"))
        .insert_header(("If-Range", "\"etag-1\""))
        .insert_header(("X-Forwarded-For", "203.0.113.9"))
        .insert_header(("Proxy-Authorization", "Basic c2VjcmV0"))
        .insert_header(("User-Agent", "hubferry-test/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Response: upstream headers pass, hop-by-hop ones do not.
    assert_eq!(res.headers().get("x-upstream").unwrap(), "echo");
    assert!(res.headers().get("proxy-authenticate").is_none());
    assert!(res.headers().get("keep-alive").is_none());
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/v2/library/alpine/manifests/latest");
    assert_eq!(echo["query"], "ns=docker.io");
    let upstream_host = upstream.trim_start_matches("http://");
    assert_eq!(header(&echo, "host"), vec![upstream_host]);
    assert_eq!(header(&echo, "accept").len(), 2, "{echo}");
    assert_eq!(header(&echo, "authorization"), vec!["Bearer client-token"]);
    assert_eq!(header(&echo, "range"), vec!["bytes=5-"]);
    assert_eq!(header(&echo, "if-range"), vec!["\"etag-1\""]);
    assert_eq!(header(&echo, "user-agent"), vec!["hubferry-test/1"]);
    assert_eq!(header(&echo, "x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(
        header(&echo, "x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert!(header(&echo, "proxy-authorization").is_empty());
    assert!(
        header(&echo, "transfer-encoding").is_empty(),
        "a GET must not go up chunked"
    );
    // The test client sends `content-length: 0` on its GET; no length at all goes up.
    assert!(
        header(&echo, "content-length").is_empty(),
        "a GET goes up without a length: {echo}"
    );
}

#[actix_rt::test]
async fn head_stays_head_with_a_length() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let url = format!("{}/v2/some/repo/manifests/tag", hf.url);
    let get = client.get(&url).send().await.unwrap();
    let head = client.request(Method::HEAD, &url).send().await.unwrap();
    assert_eq!(head.headers().get("x-method").unwrap(), "HEAD");
    assert_eq!(get.headers().get("x-method").unwrap(), "GET");
    // The echo's body names the method, so the HEAD length is its own; the real registry's
    // HEAD-equals-GET length is checked in `registry_api`.
    assert!(head
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0"));
}

#[actix_rt::test]
async fn request_bodies_stream_up_sized_and_chunked() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let body = vec![7u8; 3 << 20];
    let mut res = client
        .put(format!("{}/v2/a/blobs/uploads/1?digest=sha256:x", hf.url))
        .send_body(body.clone())
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(
        header(&echo, "content-length"),
        vec![body.len().to_string().as_str()]
    );

    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(actix_web::web::Bytes::from(vec![1u8; 100_000]))),
    );
    let mut res = client
        .patch(format!("{}/v2/a/blobs/uploads/1", hf.url))
        .send_stream(chunks)
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "PATCH");
    assert_eq!(echo["body_len"], 800_000);

    // An empty POST (how a push starts an upload) keeps saying so: a server may refuse a POST
    // without a length (411).
    let mut res = client
        .post(format!("{}/v2/a/blobs/uploads/", hf.url))
        .send()
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(header(&echo, "content-length"), vec!["0"]);
}

#[actix_rt::test]
async fn token_goes_to_auth_with_query_body_and_credentials() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let query = "service=registry.docker.io&scope=repository:library/alpine:pull&scope=repository:library/nginx:pull";
    let mut res = client
        .get(format!("{}/token?{query}", hf.url))
        .insert_header(("Authorization", "Basic dXNlcjpwYXNz"))
        .send()
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["path"], "/token");
    assert_eq!(echo["query"], query);
    assert_eq!(header(&echo, "authorization"), vec!["Basic dXNlcjpwYXNz"]);

    let form = "grant_type=password&username=u&password=p&service=registry.docker.io&scope=repository%3Aa%3Apull";
    let mut res = client
        .post(format!("{}/token", hf.url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(form)
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/token");
    assert_eq!(echo["body_len"], form.len());
}

#[actix_rt::test]
async fn search_query_is_rewritten_for_the_index() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!(
            "{}/v1/search?q=library/nginx&n=5&page=&extra=1",
            hf.url
        ))
        .insert_header(("X-Docker-Token", "true"))
        .send()
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["path"], "/v1/search");
    assert_eq!(echo["query"], "q=nginx&n=5");
    assert_eq!(header(&echo, "x-docker-token"), vec!["true"]);
}

#[actix_rt::test]
async fn everything_else_goes_to_the_registry() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    for (path, expected_path, expected_query) in [
        ("/", "/", ""),
        ("/some/other/path?x=1", "/some/other/path", "x=1"),
        ("/v2foo", "/v2foo", ""),
    ] {
        let mut res = client
            .get(format!("{}{path}", hf.url))
            .send()
            .await
            .unwrap();
        let echo = echo_of(&mut res).await;
        assert_eq!(echo["path"], expected_path);
        assert_eq!(echo["query"], expected_query);
    }
}

#[actix_rt::test]
async fn catalog_is_refused_without_calling_upstream() {
    // The registry address is dead: a 404 (not a 502) proves nothing was called.
    let dead = format!("http://127.0.0.1:{}", world::free_port());
    let hf = start(&dead, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!("{}/v2/_catalog?n=100", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
}

#[actix_rt::test]
async fn every_bearer_challenge_names_our_token_endpoint() {
    let upstream = fakes::upstream();
    let hf = start(&upstream, &[]);
    let client = world::client(None);
    let res = client
        .get(format!("{}/v2/challenge/manifests/x", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let challenges: Vec<_> = res
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        vec![
            format!(
                r#"Bearer realm="{}/token",service="svc",scope="repository:a/b:pull,push""#,
                hf.url
            ),
            r#"Basic realm="basic""#.to_owned(),
        ]
    );

    let hf = start(&upstream, &["--public-url", "https://mirror.example.com"]);
    let res = client
        .get(format!("{}/v2/challenge/manifests/x", hf.url))
        .insert_header(("Host", "evil.example"))
        .send()
        .await
        .unwrap();
    let first = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        first.starts_with(r#"Bearer realm="https://mirror.example.com/token""#),
        "{first}"
    );
}
