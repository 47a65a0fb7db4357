//! No capability leaks, tried against an upstream that redirects blob downloads to signed CDN
//! URLs (`?verify=...`, `X-Amz-Signature=...`, userinfo), as Docker Hub and S3 do: a signed URL
//! is a bearer capability, so neither a client's answer nor the log may show it; the CDN's own
//! headers stay with the CDN, and the mirror's own headers stay with the mirror.

use serde_json::Value;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    fakes::{self, echo_of, echoed_header, SIGNATURE},
    hubferry::Hubferry,
    world,
};

fn start() -> Hubferry {
    let upstream = fakes::upstream();
    Hubferry::start_with(
        &[
            &["--registry", upstream.as_str()],
            &FOLLOW_LOCAL_REDIRECTS[..],
        ]
        .concat(),
    )
}

#[actix_rt::test]
async fn a_signed_cdn_url_is_never_shown_to_the_client_or_the_log() {
    let hf = start();
    let client = world::client(None);
    // The CDN cannot be reached: the 502's log line names where hubferry went, not how it was
    // signed; the client is told which role failed and the request id, no URL at all.
    let mut res = client
        .get(format!("{}/v2/signed-dead/manifests/x", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("127.0.0.1"), "{message}");
    let logged = hf.error_log_line(&body);
    assert!(logged.contains("http://127.0.0.1:1/blob"), "{logged}");
    for secret in [SIGNATURE, "cdnpass", "cdnuser", "X-Amz-Signature"] {
        assert!(!body.to_string().contains(secret), "{secret} in {body}");
        assert!(!logged.contains(secret), "{secret} in {logged}");
    }
    // A download that works is logged too (redirects at debug level).
    let res = client
        .get(format!("{}/v2/signed/manifests/x", hf.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    world::wait_until(std::time::Duration::from_secs(10), || {
        hf.log_text().contains("/v2/signed/manifests/x")
    });
    let log = hf.log_text();
    assert!(log.contains("/cdn/signed"), "the redirect is logged: {log}");
    for secret in [SIGNATURE, "cdnpass", "cdnuser"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[actix_rt::test]
async fn the_cdn_gets_only_what_selects_the_bytes_and_the_client_only_what_describes_them() {
    let hf = start();
    let client = world::client(None);
    let mut res = client
        .get(format!("{}/v2/signed/manifests/x", hf.url))
        .insert_header(("Authorization", "Bearer registry-token"))
        .insert_header(("Cookie", "session=mirror"))
        .insert_header((
            "Forwarded",
            "for=192.0.2.1;host=mirror.example.com;proto=https",
        ))
        .insert_header(("X-Forwarded-Host", "mirror.example.com"))
        .insert_header(("X-Forwarded-For", "192.0.2.1"))
        .insert_header(("X-Registry-Auth", "eyJ1c2VybmFtZSI6ImFsaWNlIn0="))
        .insert_header(("Range", "bytes=0-"))
        .insert_header(("User-Agent", "docker/27.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for (name, _) in [
        ("server", ()),
        ("via", ()),
        ("x-amz-request-id", ()),
        ("x-amz-id-2", ()),
        ("cf-ray", ()),
        ("set-cookie", ()),
        ("alt-svc", ()),
        ("x-upstream", ()),
    ] {
        assert!(
            res.headers().get(name).is_none(),
            "the CDN's {name} reached the client"
        );
    }
    let echo = echo_of(&mut res).await;
    assert_eq!(echo["path"], "/cdn/signed");
    for name in [
        "authorization",
        "cookie",
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
        "x-registry-auth",
    ] {
        assert!(
            echoed_header(&echo, name).is_empty(),
            "{name} reached the CDN: {echo}"
        );
    }
    assert_eq!(echoed_header(&echo, "range"), ["bytes=0-"]);
    assert_eq!(echoed_header(&echo, "user-agent"), ["docker/27.0"]);
}
