//! Streaming: the upstream length is kept, and a slow client slows the upstream
//! read instead of making hubferry buffer the blob.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::{raw_get, Hubferry, RawDownload},
    world,
};

fn pull_token(w: &world::World, repo: &str) -> String {
    format!("Bearer {}", w.token(&[&format!("repository:{repo}:pull")]))
}

#[test]
fn a_known_length_is_kept_not_chunked() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let nginx = w.image("library/nginx");
    let layer = nginx.layers().next().unwrap();
    let bearer = pull_token(w, "library/nginx");
    let res = raw_get(
        &hf.addr,
        &format!("/v2/library/nginx/blobs/{}", layer.digest),
        &[("Authorization", &bearer)],
    );
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-length"),
        Some(layer.size.to_string().as_str())
    );
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.body, *layer.data.as_ref().unwrap());

    let res = raw_get(
        &hf.addr,
        &format!("/v2/library/nginx/manifests/{}", nginx.tag),
        &[
            ("Authorization", &bearer),
            ("Accept", world::DOCKER_MANIFEST),
        ],
    );
    assert_eq!(
        res.header("content-length"),
        Some(nginx.manifest.len().to_string().as_str())
    );
    assert_eq!(res.header("transfer-encoding"), None);
}

#[test]
fn a_slow_client_does_not_make_hubferry_buffer_the_blob() {
    let w = world::plain();
    let hf = Hubferry::for_world(
        w,
        &[&["--workers", "1"], &FOLLOW_LOCAL_REDIRECTS[..]].concat(),
    );
    let big = w.big_layer();
    let bearer = pull_token(w, "library/big");
    // Warm up (first connection, TLS-free client set-up) so the baseline is honest.
    let warm = raw_get(&hf.addr, "/v2/_catalog", &[]);
    assert_eq!(warm.status, 404);
    let baseline = hf.rss_kib();

    let path = format!("/v2/library/big/blobs/{}", big.digest);
    let mut download = RawDownload::start(&hf.addr, &path, &[("Authorization", &bearer)]);
    // Read a little, then stop reading for a while: a proxy without backpressure would now
    // pull the whole 100 MiB from the CDN into memory.
    download.read_some(1 << 20);
    // Not a wait: the client's pause is the test's subject, long enough to pull the whole blob
    // over loopback many times over.
    std::thread::sleep(Duration::from_secs(3));
    let stalled = hf.rss_kib();
    let grown_mib = stalled.saturating_sub(baseline) / 1024;
    eprintln!("RSS baseline {baseline} KiB, stalled {stalled} KiB");
    assert!(
        grown_mib < 40,
        "hubferry grew by {grown_mib} MiB while its client read nothing (blob: {} MiB)",
        big.size >> 20
    );

    // The slow client still gets every byte, in order.
    let res = download.finish();
    assert_eq!(
        res.header("content-length"),
        Some(big.size.to_string().as_str())
    );
    assert_eq!(res.body.len() as u64, big.size);
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&res.body)),
        big.digest
    );
}
