//! Credentials go only where they belong, tried as an attacker who runs (or has compromised) one
//! registry of a many-registry mirror: `evil.test` is a registry whose token realm and API are
//! an echo server that reports every header it receives, configured beside the test world's
//! registry (as docker.io) and the second registry (as ghcr.io). A client that logged in to the
//! mirror for Docker Hub must never hand that registry its password, cookies or tokens.

use actix_web::http::Method;
use base64::Engine as _;
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes::{self, echo_of, echoed_header},
    hubferry::Hubferry,
    world::{self, SecondRegistry, World, SECOND_SERVICE},
};

/// hubferry with the world's registry as docker.io, the second registry as ghcr.io and the echo
/// upstream as `evil.test` (its realm is the echo too), with `evil_settings` (TOML lines) added
/// to that entry.
fn start(
    evil_settings: &str,
    extra: &[&str],
) -> (&'static World, &'static SecondRegistry, Hubferry) {
    let w = world::plain();
    let second = world::second();
    let echo = fakes::upstream();
    let file = world::config_file(&format!(
        "[[upstreams]]\nname = \"ghcr.io\"\nregistry = \"{}\"\n\n\
         [[upstreams]]\nname = \"evil.test\"\nregistry = \"{echo}\"\nrealm = \"{echo}/token\"\n{evil_settings}",
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

/// What `docker login <mirror>` makes docker send: the user's Docker Hub credentials.
fn hub_login() -> String {
    let pair = format!("{}:{}", world::USERNAME, world::PASSWORD);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// What the echo upstream saw: no credential of the client's in any form.
fn assert_nothing_of_the_clients(echo: &Value, what: &str) {
    assert!(
        echoed_header(echo, "authorization").is_empty(),
        "{what}: {echo}"
    );
    assert!(echoed_header(echo, "cookie").is_empty(), "{what}: {echo}");
    let text = echo.to_string();
    assert!(!text.contains(world::PASSWORD), "{what}: {echo}");
}

#[actix_rt::test]
async fn a_password_for_docker_hub_never_reaches_another_registrys_token_issuer() {
    let (_, _, hf) = start("", &[]);
    let client = world::client(None);
    // docker pings `/v2/` once and sends every token request to that realm (`/token`), with
    // the scope of whatever it pulls: here a repository of `evil.test`, by its path prefix.
    let mut res = client
        .get(format!(
            "{}/token?service=registry.docker.io&scope=repository:evil.test/x/y:pull",
            hf.url
        ))
        .insert_header(("Authorization", hub_login()))
        .insert_header(("Cookie", "session=hub-session"))
        .send()
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["path"], "/token", "{echo}");
    assert_nothing_of_the_clients(&echo, "GET /token");

    // The OAuth2 form (containerd with credentials) carries the password in its body: it goes
    // as an anonymous GET asking for the same token, with nothing that names the user.
    let form = format!(
        "grant_type=password&username={}&password={}&service=registry.docker.io&scope=repository%3Aevil.test%2Fx%2Fy%3Apull&client_id=containerd",
        world::USERNAME,
        world::PASSWORD
    );
    let mut res = client
        .post(format!("{}/token", hf.url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(form)
        .await
        .unwrap();
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["body_len"], 0, "{echo}");
    assert_eq!(
        echo["query"], "service=registry.docker.io&scope=repository%3Ax%2Fy%3Apull",
        "{echo}"
    );
    assert_nothing_of_the_clients(&echo, "POST /token");
    assert!(!echo.to_string().contains(world::USERNAME), "{echo}");

    // The registry's own realm, reached from the mirror's main host name.
    let mut res = client
        .get(format!(
            "{}/token/evil.test?scope=repository:x/y:pull",
            hf.url
        ))
        .insert_header(("Authorization", hub_login()))
        .send()
        .await
        .unwrap();
    assert_nothing_of_the_clients(&echo_of(&mut res).await, "GET /token/evil.test");
}

#[actix_rt::test]
async fn a_registry_gets_the_clients_credentials_by_its_host_name_or_when_configured() {
    let (_, _, hf) = start("", &[]);
    let client = world::client(None);
    let port = hf.addr.rsplit_once(':').unwrap().1;
    // Its own host name: `docker login evil.mirror` typed a password for it.
    let (_, _, by_host) = start("host_names = [\"localhost\"]\n", &[]);
    let by_host_port = by_host.addr.rsplit_once(':').unwrap().1;
    let mut res = client
        .get(format!(
            "http://localhost:{by_host_port}/token/evil.test?scope=repository:x/y:pull"
        ))
        .insert_header(("Authorization", hub_login()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed_header(&echo_of(&mut res).await, "authorization"),
        [hub_login()]
    );
    // From the main host name it is Docker Hub's password, not this registry's.
    let mut res = client
        .get(format!(
            "http://127.0.0.1:{port}/token/evil.test?scope=repository:x/y:pull"
        ))
        .insert_header(("Authorization", hub_login()))
        .send()
        .await
        .unwrap();
    assert_nothing_of_the_clients(&echo_of(&mut res).await, "main host name");

    // An operator who knows both are the same account says so.
    let (_, _, trusting) = start("forward_credentials = true\n", &[]);
    for path in [
        "/token?service=registry.docker.io&scope=repository:evil.test/x/y:pull",
        "/v2/evil.test/x/y/manifests/latest",
    ] {
        let mut res = client
            .get(format!("{}{path}", trusting.url))
            .insert_header(("Authorization", hub_login()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            echoed_header(&echo_of(&mut res).await, "authorization"),
            [hub_login()],
            "{path}"
        );
    }
}

#[actix_rt::test]
async fn a_token_one_registrys_issuer_minted_is_never_sent_to_another_registry() {
    let (w, _, hf) = start("", &[]);
    let client = world::client(None);
    // A Docker Hub token, with the user's rights, as docker gets it after `docker login`.
    let mut res = client
        .get(format!(
            "{}/token?service={}&scope=repository:private/secret:pull",
            hf.url,
            world::SERVICE
        ))
        .insert_header(("Authorization", hub_login()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hf~docker.io~"), "{token}");
    assert_eq!(body["access_token"].as_str(), Some(token.as_str()));
    let bearer = format!("Bearer {token}");
    let secret = w.image("private/secret");
    let manifest = format!("{}/v2/private/secret/manifests/latest", hf.url);
    let res = client
        .get(&manifest)
        .insert_header(("Accept", world::OCI_MANIFEST))
        .insert_header(("Accept", world::DOCKER_MANIFEST))
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the token works where it belongs");
    assert_eq!(
        res.headers().get("docker-content-digest").unwrap(),
        secret.digest.as_str()
    );

    // containerd keeps one token per host: the same token on a request for evil.test, by path
    // prefix and by `?ns=`, must stay home. So must one hubferry did not relay.
    let raw = format!("Bearer {}", w.token(&["repository:private/secret:pull"]));
    for authorization in [bearer.as_str(), raw.as_str()] {
        for path in [
            "/v2/evil.test/x/y/manifests/latest",
            "/v2/x/y/manifests/latest?ns=evil.test",
            "/v2/x/y/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000?ns=evil.test",
        ] {
            let mut res = client
                .request(Method::GET, format!("{}{path}", hf.url))
                .insert_header(("Authorization", authorization))
                .send()
                .await
                .unwrap();
            assert_nothing_of_the_clients(&echo_of(&mut res).await, path);
        }
    }
}

/// The real second registry and its real issuer: a client logged in for Docker Hub pulls a
/// public image of another registry through the path prefix; that issuer is asked anonymously,
/// and the token it mints (marked for it) opens that registry and no other.
#[actix_rt::test]
async fn another_registry_is_asked_anonymously_and_its_token_works_there() {
    let (_, second, hf) = start("", &FOLLOW_LOCAL_REDIRECTS);
    let client = world::client(None);
    let agent = format!("anonymous-check-{}", std::process::id());
    let mut res = client
        .get(format!(
            "{}/token?service={}&scope=repository:ghcr.io/owner/image:pull",
            hf.url,
            world::SERVICE
        ))
        .insert_header(("Authorization", hub_login()))
        .insert_header(("User-Agent", agent.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("hf~ghcr.io~"), "{token}");
    let asked: Vec<_> = second
        .issuer_records()
        .into_iter()
        .filter(|r| r.user_agent.as_deref() == Some(agent.as_str()))
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].authorization, None);
    assert_eq!(asked[0].query_values("service"), [SECOND_SERVICE]);

    let bearer = format!("Bearer {token}");
    let image = second.image("owner/image");
    let res = client
        .get(format!("{}/v2/ghcr.io/owner/image/manifests/v1", hf.url))
        .insert_header(("Accept", world::OCI_MANIFEST))
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("docker-content-digest").unwrap(),
        image.digest.as_str()
    );
    // On Docker Hub's names it is not sent: the registry asks for a token of its own.
    let res = client
        .get(format!("{}/v2/library/alpine/manifests/latest", hf.url))
        .insert_header(("Authorization", bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// A token answer hubferry cannot read whole cannot have its token marked, and is not passed
/// on unmarked: an issuer that codes it anyway is a 502, one that trickles it a 504.
#[actix_rt::test]
async fn a_token_answer_that_cannot_be_marked_is_not_passed_on() {
    let issuer = fakes::odd_token_issuer();
    let echo = fakes::upstream();
    let file = world::config_file(&format!(
            "[[upstreams]]\nname = \"coded.test\"\nregistry = \"{echo}\"\nrealm = \"{issuer}/coded\"\n\n\
             [[upstreams]]\nname = \"trickle.test\"\nregistry = \"{echo}\"\nrealm = \"{issuer}/trickle\"\n"
    ));
    let hf = Hubferry::start_with(&["--config", file.to_str().unwrap(), "--idle-timeout", "2s"]);
    let client = world::client(None);
    for (registry, status) in [("coded.test", 502), ("trickle.test", 504)] {
        let mut res = client
            .get(format!(
                "{}/token/{registry}?scope=repository:x/y:pull",
                hf.url
            ))
            .insert_header(("Accept-Encoding", "gzip"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{registry}");
        let body = res.body().await.unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("minted-elsewhere"),
            "{registry}"
        );
    }
}
