//! Image allow and deny lists: refused images get 403 `DENIED` with the
//! operator's message at every endpoint of the repository, and nothing goes upstream for them.

use std::{sync::mpsc, time::Duration};

use crate::{
    hubferry::{raw_get, Hubferry, RawDownload, FOLLOW_LOCAL_REDIRECTS},
    skopeo, world,
};

const MESSAGE: &str = "this mirror serves official images only, and not nginx";

#[test]
fn only_allowed_images_are_served_and_denied_ones_never_go_upstream() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            "--allow-image",
            "library/*",
            "--deny-image",
            "library/nginx",
            "--denied-message",
            MESSAGE,
            FOLLOW_LOCAL_REDIRECTS[0],
            FOLLOW_LOCAL_REDIRECTS[1],
        ],
    );
    let through = skopeo::Registry {
        host: &hf.addr,
        ca_file: None,
    };

    // Allowed: an official image, pulled in full.
    let alpine = w.image("library/alpine");
    let dir = skopeo::pull(&through, &alpine.reference(), &[]);
    assert!(dir.join("manifest.json").is_file());

    // Outside the allow list, and on the deny list: skopeo fails with the operator's message.
    for image in ["someorg/tool", "library/nginx"] {
        let reference = w.image(image).reference();
        let scratch = tempfile::tempdir().unwrap();
        let err = skopeo::try_pull(&through, &reference, &[], scratch.path())
            .expect_err("a refused image was pulled");
        assert!(err.contains(MESSAGE), "{image}: {err}");
    }

    // Every endpoint of a refused repository, blobs by digest included, with or without the
    // library/ prefix.
    let nginx = w.image("library/nginx");
    let layer = &nginx.layers().next().unwrap().digest;
    let bearer = format!("Bearer {}", w.token(&["repository:library/nginx:pull"]));
    for path in [
        "/v2/library/nginx/manifests/latest".to_owned(),
        "/v2/nginx/manifests/latest".to_owned(),
        format!("/v2/library/nginx/blobs/{layer}"),
        "/v2/library/nginx/tags/list".to_owned(),
        "/v2/someorg/tool/blobs/uploads/".to_owned(),
    ] {
        let res = raw_get(&hf.addr, &path, &[("Authorization", &bearer)]);
        assert_eq!(res.status, 403, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED", "{path}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(MESSAGE),
            "{path}: {body}"
        );
    }
    // Nothing about the refused repositories went upstream: every access line for them says
    // no upstream answered.
    let log = hf.log_text();
    let refused: Vec<_> = log
        .lines()
        .filter(|l| l.contains("hubferry::access") && l.contains("/v2/someorg/tool/"))
        .collect();
    assert!(!refused.is_empty(), "{log}");
    assert!(
        refused.iter().all(|l| l.contains("upstream=-")),
        "{refused:#?}"
    );
    assert!(hf.log_text().contains(MESSAGE));
}

/// An operator's pattern with several `*`s, and clients that send names built to make a
/// backtracking glob matcher try every way of placing them: `*a*a*a*a*a*a*a*a*b` against
/// `someorg/` and 200 `a`s is beyond 10^13 tries, on a worker thread, before the name is refused.
/// Twice as many such requests as there are workers would take the mirror down for good. Each
/// is refused at once instead, and the mirror goes on serving.
#[test]
fn names_built_to_make_a_pattern_backtrack_are_refused_at_once() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[
            "--workers",
            "2",
            "--allow-image",
            "library/*,someorg/*a*a*a*a*a*a*a*a*b",
        ],
    );
    let path = format!("/v2/someorg/{}/manifests/latest", "a".repeat(200));
    let (answered, answers) = mpsc::channel();
    for _ in 0..4 {
        let download = RawDownload::start(&hf.addr, &path, &[]);
        let answered = answered.clone();
        std::thread::spawn(move || answered.send(download.finish()));
    }
    // Generous: the compiled lists answer in microseconds; the backtracking matcher, never.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for _ in 0..4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let res = answers
            .recv_timeout(left)
            .expect("a crafted name was not answered within 20 s: the worker is still matching");
        assert_eq!(res.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
    }

    // And the mirror still serves what it allows.
    let alpine = w.image("library/alpine");
    let bearer = format!("Bearer {}", w.token(&["repository:library/alpine:pull"]));
    let res = raw_get(
        &hf.addr,
        &format!("/v2/library/alpine/manifests/{}", alpine.digest),
        &[("Authorization", &bearer), ("Accept", &alpine.media_type)],
    );
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
}
