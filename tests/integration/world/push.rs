//! Pushing test images straight to the registry with the distribution API, as `docker push`
//! would: monolithic blob uploads (POST then PUT with `digest`), then manifests, children
//! before the index that lists them (distribution checks references exist).

use actix_web::body::SizedStream;
use bytes::Bytes;

use super::images::{big_layer_chunks, Blob, TestImage};

pub struct Pusher<'a> {
    pub client: awc::Client,
    pub registry_url: &'a str,
    /// Token with pull,push on the repository being pushed.
    pub token: String,
}

impl Pusher<'_> {
    pub async fn push_image(&self, image: &TestImage) {
        let repo = &image.repository;
        for blob in &image.blobs {
            self.push_blob(repo, blob).await;
        }
        for child in &image.children {
            self.put_manifest(
                repo,
                &child.digest,
                &child.media_type,
                &child.manifest,
                &child.digest,
            )
            .await;
        }
        self.put_manifest(
            repo,
            &image.tag,
            &image.media_type,
            &image.manifest,
            &image.digest,
        )
        .await;
    }

    pub async fn push_blob(&self, repo: &str, blob: &Blob) {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.registry_url);
        let resp = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("start upload to {repo}: {e}"));
        assert_eq!(resp.status().as_u16(), 202, "start upload to {repo}");
        let location = resp
            .headers()
            .get("location")
            .expect("upload Location")
            .to_str()
            .unwrap()
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.registry_url)
        } else {
            location
        };
        // Location carries the upload state (`?_state=...`); digest is appended to it.
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .client
            .put(format!("{location}{sep}digest={}", blob.digest))
            .bearer_auth(&self.token)
            .content_type("application/octet-stream");
        let result = match &blob.data {
            Some(data) => put.send_body(data.clone()).await,
            None => {
                // The big layer: streamed with its length, never held in memory whole.
                let chunks = big_layer_chunks().map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
                let body = SizedStream::new(blob.size, futures_util::stream::iter(chunks));
                put.send_body(body).await
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("upload {} to {repo}: {e}", blob.digest));
        let body = resp.body().await.unwrap_or_default();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "upload {} to {repo}: {}",
            blob.digest,
            String::from_utf8_lossy(&body)
        );
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.registry_url);
        let mut resp = self
            .client
            .put(url)
            .bearer_auth(&self.token)
            .content_type(media_type)
            .send_body(bytes.to_vec())
            .await
            .unwrap_or_else(|e| panic!("put manifest {repo}:{reference}: {e}"));
        let body = resp.body().await.unwrap_or_default();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "put manifest {repo}:{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        let got = resp
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap_or(""));
        assert_eq!(got, Some(digest), "registry digest for {repo}:{reference}");
    }
}
