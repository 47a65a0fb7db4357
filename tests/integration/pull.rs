//! The real client through hubferry: skopeo pulls every test image (and pushes one) through
//! the mirror, and every digest is checked against what was pushed upstream.

use std::path::Path;

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::Hubferry,
    skopeo::{self, assert_blobs_copied},
    world::{self, TestImage},
};

fn through(hf: &Hubferry) -> skopeo::Registry<'_> {
    skopeo::Registry {
        host: hf.url.trim_start_matches("http://"),
        ca_file: None,
    }
}

fn assert_manifest(dir: &Path, image: &TestImage) {
    assert_eq!(
        std::fs::read(dir.join("manifest.json")).unwrap(),
        image.manifest,
        "{} manifest",
        image.repository
    );
    assert_eq!(
        skopeo::sha256_file(&dir.join("manifest.json")),
        image.digest
    );
}

#[test]
fn skopeo_pulls_every_image_through_hubferry() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let registry = through(&hf);

    // A multi-arch OCI index, with every platform.
    let alpine = w.image("library/alpine");
    let dir = skopeo::pull(&registry, &alpine.reference(), &["--all"]);
    assert_manifest(&dir, alpine);
    assert_blobs_copied(&dir, &alpine.blobs);

    // Docker schema 2, many layers, one big layer, a repo outside library/.
    for repo in [
        "library/nginx",
        "library/many",
        "library/big",
        "someorg/tool",
    ] {
        let image = w.image(repo);
        let dir = skopeo::pull(&registry, &image.reference(), &[]);
        assert_manifest(&dir, image);
        assert_blobs_copied(&dir, &image.blobs);
    }

    // A private repo, with credentials passed through to the token issuer.
    let secret = w.image("private/secret");
    let creds = format!("{}:{}", world::USERNAME, world::PASSWORD);
    let dir = skopeo::pull(&registry, &secret.reference(), &["--src-creds", &creds]);
    assert_manifest(&dir, secret);

    // Every blob came through the CDN redirect, followed by hubferry (logged once the body is
    // done, which may be just after skopeo has read it).
    let big = w.big_layer();
    let redirected =
        |l: &str| l.contains(&big.digest) && l.contains(" 200 ") && l.contains("redirects=1");
    assert!(
        world::wait_until(std::time::Duration::from_secs(10), || {
            hf.log_text().lines().any(redirected)
        }),
        "no redirected blob GET for the big layer in:\n{}",
        hf.log_text()
    );
}

#[test]
fn skopeo_pulls_through_hubferry_from_a_tls_upstream() {
    let w = world::tls();
    assert!(w.registry_url.starts_with("https://") && w.cdn_url.starts_with("https://"));
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let registry = through(&hf);
    for (repo, extra) in [
        ("library/alpine", &["--all"][..]),
        ("library/nginx", &[][..]),
    ] {
        let image = w.image(repo);
        let dir = skopeo::pull(&registry, &image.reference(), extra);
        assert_manifest(&dir, image);
        assert_blobs_copied(&dir, &image.blobs);
    }
    assert!(hf.log_text().contains("redirects=1"));
}

#[test]
fn skopeo_pushes_through_hubferry() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let registry = through(&hf);
    let nginx = w.image("library/nginx");
    let source = skopeo::pull(&registry, &nginx.reference(), &[]);

    let target = format!("library/pushed-{}:v1", std::process::id());
    let creds = format!("{}:{}", world::USERNAME, world::PASSWORD);
    skopeo::push(&source, &registry, &target, &["--dest-creds", &creds]);

    // The upload went through hubferry (Location rewritten back to us), and the registry has it.
    let log = hf.log_text();
    assert!(
        log.lines().any(|l| l.contains("PUT /v2/library/pushed-")
            && l.contains("/manifests/v1")
            && l.contains(" 201 ")),
        "{log}"
    );
    let direct = skopeo::Registry {
        host: w.registry_host(),
        ca_file: None,
    };
    let dir = skopeo::pull(&direct, &target, &[]);
    assert_blobs_copied(&dir, &nginx.blobs);
}
