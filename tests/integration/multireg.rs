//! Many registries through one hubferry: the test world's registry as
//! docker.io and a second registry (its own storage, CDN, token issuer and service name) as
//! ghcr.io, reached by containerd's `?ns=`, by a host name and by a path prefix; token realms
//! learned per upstream; Docker Hub's `library/` completion of paths and token scopes.

use std::time::Duration;

use actix_web::http::{header, Method};
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    access_log,
    hubferry::Hubferry,
    operations::{get_text, sample},
    skopeo::{self, assert_blobs_copied},
    world::{self, SecondRegistry, World, SECOND_SERVICE},
};

/// containerd's `Accept` on a resolve (PROTOCOL.md).
const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// hubferry with the world's registry as docker.io (with the `library/` rule, which only
/// Docker Hub's own address gets by default) and the second registry as ghcr.io, also selected
/// by the host name `localhost`.
fn start(extra: &[&str]) -> (&'static World, &'static SecondRegistry, Hubferry) {
    let w = world::plain();
    let second = world::second();
    let file = world::config_file(&format!(
        "[[upstreams]]\nname = \"ghcr.io\"\nregistry = \"{}\"\nhost_names = [\"localhost\"]\n",
        second.url
    ));
    let args = [
        &["--config", file.to_str().unwrap(), "--library", "true"],
        extra,
    ]
    .concat();
    let hf = Hubferry::for_world(w, &args);
    (w, second, hf)
}

fn through(host: &str) -> skopeo::Registry<'_> {
    skopeo::Registry {
        host,
        ca_file: None,
    }
}

fn challenge(res: &awc::ClientResponse) -> String {
    res.headers()
        .get(header::WWW_AUTHENTICATE)
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The realm a challenge names.
fn realm_of(challenge: &str) -> String {
    let rest = challenge.strip_prefix("Bearer realm=\"").expect(challenge);
    rest[..rest.find('"').unwrap()].to_owned()
}

// `library/` completion, with the real client.
#[test]
fn skopeo_pulls_a_short_name_as_library() {
    let (w, _, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let alpine = w.image("library/alpine");
    let dir = skopeo::pull(&through(&hf.addr), "alpine:latest", &["--all"]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        alpine.manifest
    );
    assert_blobs_copied(&dir, &alpine.blobs);
    // skopeo asked for a token for `alpine` (the name it knows); the issuer saw `library/alpine`.
    let asked: Vec<String> = w
        .issuer_records()
        .iter()
        .flat_map(|r| r.query_values("scope"))
        .collect();
    assert!(
        asked.contains(&"repository:library/alpine:pull".to_owned()),
        "{asked:?}"
    );
    assert!(
        !asked.contains(&"repository:alpine:pull".to_owned()),
        "{asked:?}"
    );
}

// Every `scope` of a token request is completed, in the query and in an OAuth2 form.
#[actix_rt::test]
async fn every_scope_of_a_token_request_is_completed() {
    let (w, _, hf) = start(&[]);
    let client = world::client(None);
    let marker = format!("m{}", std::process::id());
    let res = client
        .get(format!(
            "{}/token?service={}&scope=repository:{marker}a:pull&scope=repository:{marker}b:pull+repository:someorg/tool:pull&scope=repository:docker.io/{marker}c:pull",
            hf.url,
            world::SERVICE
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let record = w
        .issuer_records()
        .into_iter()
        .find(|r| r.query.contains(&format!("{marker}a")))
        .expect("the issuer saw the token request");
    assert_eq!(record.path, "/token");
    assert_eq!(
        record.query_values("scope"),
        [
            format!("repository:library/{marker}a:pull"),
            format!("repository:library/{marker}b:pull repository:someorg/tool:pull"),
            format!("repository:library/{marker}c:pull"),
        ]
    );
    assert_eq!(record.query_values("service"), [world::SERVICE]);

    let form = format!(
        "grant_type=password&username={}&password={}&service={}&scope=repository%3A{marker}d%3Apull+repository%3A{marker}e%3Apull&client_id=test",
        world::USERNAME,
        world::PASSWORD,
        world::SERVICE
    );
    let mut res = client
        .post(format!("{}/token", hf.url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(form)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["scope"],
        format!("repository:library/{marker}d:pull repository:library/{marker}e:pull")
    );
}

// The path-prefix form, with the real client. The second registry's own realm
// is reached through `/token/ghcr.io/<id>`, with the prefix stripped from skopeo's scopes.
#[test]
fn skopeo_pulls_through_a_path_prefix() {
    let (_, second, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let image = second.image("owner/image");
    let dir = skopeo::pull(&through(&hf.addr), "ghcr.io/owner/image:v1", &[]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        image.manifest
    );
    assert_blobs_copied(&dir, &image.blobs);
    let token_requests: Vec<_> = second
        .issuer_records()
        .into_iter()
        .filter(|r| r.path == "/token")
        .collect();
    assert!(
        token_requests.iter().any(|r| {
            r.query_values("scope") == ["repository:owner/image:pull"]
                && r.query_values("service") == [SECOND_SERVICE]
        }),
        "{:?}",
        token_requests.iter().map(|r| &r.query).collect::<Vec<_>>()
    );
    assert!(second
        .registry_requests()
        .iter()
        .any(|r| r.uri == "/v2/owner/image/manifests/v1"));
}

// A host name mapped to an upstream (`localhost` → ghcr.io), with the real client.
#[test]
fn skopeo_pulls_by_host_name() {
    let (_, second, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let image = second.image("owner/image");
    let port = hf.addr.rsplit_once(':').unwrap().1;
    let host = format!("localhost:{port}");
    let dir = skopeo::pull(&through(&host), "owner/image:v1", &[]);
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        image.manifest
    );
    assert_blobs_copied(&dir, &image.blobs);
}

// Registries by `?ns=` and their realms, as containerd asks (hosts.toml mirror): `?ns=` on every request, no `/v2/`
// first, HEAD to resolve, the token from the realm the challenge named, then the blob.
#[actix_rt::test]
async fn containerd_requests_with_ns_reach_their_registry() {
    let (w, second, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let client = world::client(None);
    let image = second.image("owner/image");
    let manifest_url = format!("{}/v2/owner/image/manifests/v1?ns=ghcr.io", hf.url);
    let head = || {
        client
            .request(Method::HEAD, &manifest_url)
            .insert_header(("Accept", CONTAINERD_ACCEPT))
            .insert_header(("User-Agent", "containerd/v1.7.0"))
    };
    let res = head().send().await.unwrap();
    assert_eq!(res.status(), 401);
    let first = challenge(&res);
    let realm = realm_of(&first);
    assert!(
        realm.starts_with(&format!("{}/token/ghcr.io/", hf.url)),
        "{first}"
    );
    assert!(
        first.ends_with(&format!(
            r#"service="{SECOND_SERVICE}",scope="repository:owner/image:pull""#
        )),
        "{first}"
    );
    assert!(!first.contains(&second.issuer_url), "{first}");

    let mut res = client
        .get(format!(
            "{realm}?scope=repository%3Aowner%2Fimage%3Apull&service={SECOND_SERVICE}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());

    let res = head()
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("docker-content-digest").unwrap(),
        image.digest.as_str()
    );
    assert_eq!(
        res.headers().get(header::CONTENT_LENGTH).unwrap(),
        image.manifest.len().to_string().as_str()
    );
    let blob = image.blobs.last().unwrap();
    let mut res = client
        .get(format!(
            "{}/v2/owner/image/blobs/{}?ns=ghcr.io",
            hf.url, blob.digest
        ))
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.body().limit(1 << 24).await.unwrap();
    assert_eq!(bytes.as_ref(), blob.data.as_deref().unwrap());
    // The second registry saw the request with containerd's ns= intact.
    assert!(second
        .registry_requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.uri == "/v2/owner/image/manifests/v1?ns=ghcr.io"));

    // ns=docker.io goes to the world's registry, with Docker Hub's realm at /token.
    let res = client
        .request(
            Method::HEAD,
            format!("{}/v2/library/nginx/manifests/latest?ns=docker.io", hf.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res),
        format!(
            r#"Bearer realm="{}/token",service="{}",scope="repository:library/nginx:pull""#,
            hf.url,
            world::SERVICE
        )
    );
    assert!(w
        .registry_requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.uri == "/v2/library/nginx/manifests/latest?ns=docker.io"));

    // An ns= no upstream has is refused, not served from Docker Hub.
    let mut res = client
        .request(
            Method::GET,
            format!(
                "{}/v2/library/nginx/manifests/latest?ns=example.org",
                hf.url
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
}

// The path prefix is stripped going up and put back on what comes down.
#[actix_rt::test]
async fn the_path_prefix_is_put_back_on_challenge_scopes() {
    let (_, _, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let client = world::client(None);
    let res = client
        .get(format!("{}/v2/ghcr.io/owner/image/manifests/v1", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let prefixed = challenge(&res);
    assert!(
        prefixed.ends_with(r#"scope="repository:ghcr.io/owner/image:pull""#),
        "{prefixed}"
    );
    // A client that asks with the scope it was given gets a token the registry accepts.
    let mut res = client
        .get(format!(
            "{}?service={SECOND_SERVICE}&scope=repository:ghcr.io/owner/image:pull",
            realm_of(&prefixed)
        ))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let res = client
        .get(format!("{}/v2/ghcr.io/owner/image/manifests/v1", hf.url))
        .insert_header(("Accept", world::OCI_MANIFEST))
        .insert_header((
            "Authorization",
            format!("Bearer {}", body["token"].as_str().unwrap()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

// `/token/<upstream>/<id>` reaches only a realm that upstream named. A hubferry that
// never relayed a challenge (another worker, another replica) learns it from the upstream.
#[actix_rt::test]
async fn token_realms_are_only_those_an_upstream_named() {
    let (_, second, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let client = world::client(None);
    let res = client
        .get(format!("{}/v2/owner/image/manifests/v1?ns=ghcr.io", hf.url))
        .send()
        .await
        .unwrap();
    let realm = realm_of(&challenge(&res));
    let id = realm.rsplit('/').next().unwrap().to_owned();

    let fresh = start(&FOLLOW_LOCAL_REDIRECTS).2;
    let res = client
        .get(format!(
            "{}/token/ghcr.io/{id}?service={SECOND_SERVICE}&scope=repository:owner/image:pull",
            fresh.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", fresh.log_text());

    let before = second.issuer_records().len();
    for path in [
        "/token/ghcr.io/0000000000000000".to_owned(),
        format!("/token/docker.io/{id}"),
        format!("/token/nowhere.example/{id}"),
        "/token/ghcr.io".to_owned(),
    ] {
        let mut res = client
            .get(format!("{}{path}?scope=never-forwarded", hf.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{path}");
    }
    // None of them reached the issuer: once a token request that does, made after them, has
    // arrived, the issuer has seen none of theirs. (Other tests share the issuer and may use
    // it meanwhile: only the probes' own scope is looked for.)
    let marker = "repository:owner/settled:pull";
    let res = client
        .get(format!(
            "{}/token/ghcr.io/{id}?service={SECOND_SERVICE}&scope={marker}",
            hf.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", hf.log_text());
    let records = world::wait_for(Duration::from_secs(10), || {
        let records = second.issuer_records();
        records
            .iter()
            .any(|r| r.query.contains("settled"))
            .then_some(records)
    })
    .expect("the marker token request reached the issuer");
    let probes: Vec<_> = records[before..]
        .iter()
        .map(|r| &r.query)
        .filter(|q| q.contains("never-forwarded"))
        .collect();
    assert!(probes.is_empty(), "{probes:?}");
}

// The upstream metrics and the access log say which registry, as well as which role, answered:
// a pull through the ghcr.io prefix counts against ghcr.io (its registry, its token issuer and
// the CDN its blobs were redirected to), not against docker.io.
#[test]
fn upstream_metrics_and_access_lines_name_the_registry() {
    let (_, second, hf) = start(&FOLLOW_LOCAL_REDIRECTS);
    let image = second.image("owner/image");
    let dir = skopeo::pull(&through(&hf.addr), "ghcr.io/owner/image:v1", &[]);
    assert_blobs_copied(&dir, &image.blobs);
    let admin = hf.admin_url.clone().unwrap();
    let count = |metrics: &str, role: &str, registry: &str| {
        sample(
            metrics,
            &format!(
                r#"hubferry_upstream_response_seconds_count{{upstream="{role}",registry="{registry}"}}"#
            ),
        )
    };
    let mut metrics = String::new();
    assert!(
        world::wait_until(Duration::from_secs(10), || {
            metrics = get_text(&format!("{admin}/metrics")).1;
            count(&metrics, "blob CDN", "ghcr.io") >= image.blobs.len() as f64
        }),
        "{metrics}"
    );
    assert!(count(&metrics, "registry", "ghcr.io") >= 1.0, "{metrics}");
    assert!(count(&metrics, "auth", "ghcr.io") >= 1.0, "{metrics}");
    // Only skopeo's `/v2/` check, which names no repository, goes to the default upstream.
    for role in ["auth", "blob CDN"] {
        assert_eq!(count(&metrics, role, "docker.io"), 0.0, "{metrics}");
    }
    let blob = &image.blobs[0].digest;
    let lines = access_log::wait_for_lines(&hf, blob, 1);
    assert!(
        lines.iter().any(|l| l.contains(" 200 ")
            && l.contains(" registry=ghcr.io upstream=registry redirects=1")),
        "{lines:?}"
    );
}
