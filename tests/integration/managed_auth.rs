//! Managed auth against the real world: hubferry is the token issuer its
//! clients see, and pulls from the world's registry with its own account (the world's only
//! user), so `private/secret`, which anonymous clients cannot pull in passthrough mode (see
//! `registry_api::private_repos_are_refused_without_credentials`), becomes pullable.
//!
//! The world's issuer is shared by every test of the binary: hubferry's own token requests are
//! told apart by their `User-Agent` (`hubferry/<version>`; a passthrough mirror forwards its
//! client's), and `private/secret` is pulled by managed hubferries in one test only.

use std::path::{Path, PathBuf};

use actix_web::http::header;
use base64::Engine as _;
use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::{raw_get, Hubferry},
    skopeo::{self, assert_blobs_copied},
    world::{self, IssuerRecord, World},
};

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-client-pw";

/// Tests with a managed mirror run one at a time: they all fetch upstream tokens from the one
/// shared issuer as `hubferry/<version>`, and one of them counts those requests.
pub fn one_managed_mirror_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scratch() -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    dir
}

/// hubferry in managed mode with the world's account as its Docker Hub account (the password
/// from a file, as a Kubernetes secret would give it), plus `extra` flags.
fn managed(w: &World, password: &str, extra: &[&str]) -> Hubferry {
    let dir = scratch();
    let password_file = dir.join("upstream-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let mut args = vec![
        "--auth-mode",
        "managed",
        "--upstream-username",
        world::USERNAME,
        "--upstream-password-file",
        password_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Hubferry::for_world(w, &args)
}

/// An htpasswd file with one bcrypt user, as `htpasswd -B` writes it.
fn htpasswd(dir: &Path) -> PathBuf {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash(ALICE_PASSWORD, 5).unwrap();
    std::fs::write(&path, format!("{ALICE}:{hash}\n")).unwrap();
    path
}

fn through(hf: &Hubferry) -> skopeo::Registry<'_> {
    skopeo::Registry {
        host: hf.url.trim_start_matches("http://"),
        ca_file: None,
    }
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The token requests managed hubferries made for `scope`.
fn hubferry_token_requests(w: &World, scope: &str) -> Vec<IssuerRecord> {
    w.issuer_records()
        .into_iter()
        .filter(|r| {
            r.user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("hubferry/"))
        })
        .filter(|r| r.query_values("scope").iter().any(|s| s == scope))
        .collect()
}

/// Neither the upstream password nor its Basic encoding is anywhere in `text`.
fn assert_no_upstream_secret(text: &str, what: &str) {
    assert!(
        !text.contains(world::PASSWORD),
        "{what} holds the upstream password"
    );
    let encoded = basic(world::USERNAME, world::PASSWORD);
    let encoded = encoded.trim_start_matches("Basic ");
    assert!(
        !text.contains(encoded),
        "{what} holds the upstream credentials"
    );
}

#[test]
fn anonymous_clients_pull_private_repos_with_the_mirrors_account_and_its_tokens_are_cached() {
    let _one = one_managed_mirror_at_a_time();
    let w = world::plain();
    let hf = managed(w, world::PASSWORD, &FOLLOW_LOCAL_REDIRECTS);
    let secret = w.image("private/secret");
    let scope = "repository:private/secret:pull";
    // Other managed mirrors (one at a time, see above) may have asked before this one.
    let before = hubferry_token_requests(w, scope).len();

    for _ in 0..2 {
        // No --src-creds: skopeo is anonymous to hubferry.
        let dir = skopeo::pull(&through(&hf), &secret.reference(), &[]);
        assert_eq!(
            std::fs::read(dir.join("manifest.json")).unwrap(),
            secret.manifest
        );
        assert_eq!(
            skopeo::sha256_file(&dir.join("manifest.json")),
            secret.digest
        );
        assert_blobs_copied(&dir, &secret.blobs);
    }

    // Two pulls (manifest, config, layers each) within the token's life: one upstream token.
    let requests = hubferry_token_requests(w, scope).split_off(before);
    assert_eq!(requests.len(), 1, "{requests:#?}");
    // With hubferry's own account, and nothing of the client's (it sent nothing).
    let expected = basic(world::USERNAME, world::PASSWORD);
    for request in &requests {
        assert_eq!(request.authorization.as_deref(), Some(expected.as_str()));
        assert_eq!(request.x_forwarded_for, None);
    }
    assert_no_upstream_secret(&hf.log_text(), "hubferry's log");
}

#[test]
fn htpasswd_users_pull_and_everyone_else_is_refused() {
    let _one = one_managed_mirror_at_a_time();
    let w = world::plain();
    let dir = scratch();
    let users = htpasswd(&dir);
    let hf = managed(
        w,
        world::PASSWORD,
        &[
            "--htpasswd",
            users.to_str().unwrap(),
            "--anonymous",
            "false",
            FOLLOW_LOCAL_REDIRECTS[0],
            FOLLOW_LOCAL_REDIRECTS[1],
        ],
    );
    let image = w.image("someorg/tool");
    let registry = through(&hf);

    let creds = format!("{ALICE}:{ALICE_PASSWORD}");
    let pulled = skopeo::pull(&registry, &image.reference(), &["--src-creds", &creds]);
    assert_blobs_copied(&pulled, &image.blobs);

    let wrong = format!("{ALICE}:not-{ALICE_PASSWORD}");
    let refused = skopeo::try_pull(
        &registry,
        &image.reference(),
        &["--src-creds", &wrong],
        &scratch(),
    )
    .expect_err("a wrong password pulled");
    let lower = refused.to_ascii_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{refused}"
    );
    let anonymous = skopeo::try_pull(&registry, &image.reference(), &[], &scratch())
        .expect_err("an anonymous client pulled");
    let lower = anonymous.to_ascii_lowercase();
    assert!(
        lower.contains("401")
            || lower.contains("unauthorized")
            || lower.contains("authentication required"),
        "{anonymous}"
    );

    // Search is closed to anonymous clients too; a token of ours opens it.
    let search = "/v1/search?q=alpine";
    assert_eq!(raw_get(&hf.addr, search, &[]).status, 401);
    let token = raw_get(
        &hf.addr,
        "/token?service=hubferry",
        &[("Authorization", &basic(ALICE, ALICE_PASSWORD))],
    );
    assert_eq!(token.status, 200);
    let token: Value = serde_json::from_slice(&token.body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let found = raw_get(&hf.addr, search, &[("Authorization", &bearer)]);
    assert_eq!(
        found.status,
        200,
        "{}",
        String::from_utf8_lossy(&found.body)
    );

    // The client's credentials never went upstream, right or wrong.
    for record in w.issuer_records() {
        for (name, value) in [
            (
                "authorization",
                record.authorization.clone().unwrap_or_default(),
            ),
            ("body", record.body.clone()),
            ("query", record.query.clone()),
        ] {
            assert!(
                !value.contains(&basic(ALICE, ALICE_PASSWORD)) && !value.contains(ALICE_PASSWORD),
                "the issuer saw the client's credentials in its {name}: {record:?}"
            );
        }
    }
    let log = hf.log_text();
    assert_no_upstream_secret(&log, "hubferry's log");
    assert!(
        !log.contains(ALICE_PASSWORD),
        "the client's password is logged"
    );
}

/// Sends `request`, which must be refused with 401, and returns its challenge.
async fn challenge_of(request: awc::ClientRequest) -> String {
    let res = request.send().await.unwrap();
    assert_eq!(res.status(), 401);
    res.headers()
        .get(header::WWW_AUTHENTICATE)
        .expect("a 401 with a challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

/// What docker, containerd and skopeo do, step by step at the HTTP level.
// The lock is held for the whole test on purpose; nothing else in this test's runtime takes it.
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn clients_get_hubferrys_challenges_tokens_and_refusals() {
    let _one = one_managed_mirror_at_a_time();
    let w = world::plain();
    let dir = scratch();
    let users = htpasswd(&dir);
    let hf = managed(w, world::PASSWORD, &["--htpasswd", users.to_str().unwrap()]);
    let client = world::client(None);
    let nginx = w.image("library/nginx");
    let manifest_url = format!("{}/v2/library/nginx/manifests/{}", hf.url, nginx.tag);
    let mut seen = String::new();

    // No token: a challenge naming our realm (and the scope, for a repository).
    let challenge = challenge_of(client.get(format!("{}/v2/", hf.url))).await;
    assert_eq!(
        challenge,
        format!(r#"Bearer realm="{}/token",service="hubferry""#, hf.url)
    );
    let challenge = challenge_of(client.get(&manifest_url)).await;
    assert!(
        challenge.ends_with(r#"scope="repository:library/nginx:pull""#),
        "{challenge}"
    );
    let challenge = challenge_of(
        client
            .get(&manifest_url)
            .insert_header((header::AUTHORIZATION, "Bearer forged.token.here")),
    )
    .await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );

    // An anonymous token (auth.anonymous defaults to true), in Docker's token JSON.
    let mut res = client
        .get(format!(
            "{}/token?service=hubferry&scope=repository:library/nginx:pull",
            hf.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    seen.push_str(&body.to_string());
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let bearer = format!("Bearer {token}");

    let res = client
        .get(format!("{}/v2/", hf.url))
        .insert_header((header::AUTHORIZATION, bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut res = client
        .get(&manifest_url)
        .insert_header((header::AUTHORIZATION, bearer.as_str()))
        .insert_header((header::ACCEPT, nginx.media_type.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("docker-content-digest")
            .unwrap()
            .to_str()
            .unwrap(),
        nginx.digest
    );
    assert_eq!(
        res.body().await.unwrap().as_ref(),
        nginx.manifest.as_slice()
    );

    // That token is for nginx only.
    let challenge = challenge_of(
        client
            .get(format!("{}/v2/library/alpine/manifests/latest", hf.url))
            .insert_header((header::AUTHORIZATION, bearer.as_str())),
    )
    .await;
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );

    // Pull only: 405 UNSUPPORTED, as distribution's own pull-through cache answers.
    let mut res = client
        .post(format!("{}/v2/library/nginx/blobs/uploads/", hf.url))
        .insert_header((header::AUTHORIZATION, bearer.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");

    // containerd's OAuth2 form, and wrong credentials in both forms (even though anonymous
    // clients are welcome: a wrong password is not silently anonymous).
    let form = |password: &str| {
        format!(
            "grant_type=password&username={ALICE}&password={password}&service=hubferry\
             &client_id=containerd&scope=repository%3Alibrary%2Fnginx%3Apull"
        )
    };
    let mut res = client
        .post(format!("{}/token", hf.url))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form(ALICE_PASSWORD))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    seen.push_str(&body.to_string());
    assert!(body["access_token"].as_str().unwrap().starts_with("hf1."));
    assert_eq!(body["scope"], "repository:library/nginx:pull");
    let res = client
        .post(format!("{}/token", hf.url))
        .content_type("application/x-www-form-urlencoded")
        .send_body(form("wrong"))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client
        .get(format!("{}/token?service=hubferry", hf.url))
        .insert_header((header::AUTHORIZATION, basic(ALICE, "wrong")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let metrics = client
        .get(format!("{}/metrics", hf.admin_url.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&metrics));
    assert_no_upstream_secret(&seen, "a response");
    assert_no_upstream_secret(&hf.log_text(), "hubferry's log");
}

/// An account the upstream refuses is the mirror's problem, not the client's: 502, and the
/// (wrong) password is named nowhere.
// The lock is held for the whole test on purpose; nothing else in this test's runtime takes it.
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn refused_upstream_credentials_are_a_bad_gateway() {
    let _one = one_managed_mirror_at_a_time();
    let w = world::plain();
    let wrong = "wrong-upstream-pw";
    let hf = managed(w, wrong, &[]);
    let client = world::client(None);
    let mut res = client
        .get(format!(
            "{}/token?service=hubferry&scope=repository:library/nginx:pull",
            hf.url
        ))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let mut res = client
        .get(format!("{}/v2/library/nginx/manifests/latest", hf.url))
        .insert_header((header::AUTHORIZATION, bearer))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8_lossy(&res.body().await.unwrap()).into_owned();
    assert!(body.contains("UNAVAILABLE"), "{body}");
    assert!(!body.contains(wrong), "{body}");
    assert!(
        !hf.log_text().contains(wrong),
        "hubferry logged the password"
    );
}
