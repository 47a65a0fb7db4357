//! Image allow and deny lists (issue 6, item 8): refused images get 403 `DENIED` with the
//! operator's message at every endpoint of the repository, and nothing goes upstream for them.

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::{raw_get, Hubferry},
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
