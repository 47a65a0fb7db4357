//! A second registry, standing in for another registry than Docker Hub (ghcr.io, quay.io...):
//! another `docker-registry` with its own storage, its own CDN, its own token issuer (so its
//! own realm) and its own service name, holding `owner/image:v1`. Built lazily, the first time
//! a test asks for it, and shared like [`super::plain`].

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::issuer::{self, Issuer, IssuerRecord};
use super::token::Minter;
use super::{
    cdn, certs, http, images, registry, remove_at_exit, ManagedChild, RegistryRequest, TestImage,
};

/// `service` (and token audience) of the second registry, as ghcr.io's is `ghcr.io`.
pub const SECOND_SERVICE: &str = "ghcr.test";

pub struct SecondRegistry {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `http://127.0.0.1:PORT` of its own token issuer; the realm is `<issuer_url>/token`.
    pub issuer_url: String,
    pub images: Vec<TestImage>,
    registry_access_log: PathBuf,
    issuer: Arc<Issuer>,
    _children: Vec<ManagedChild>,
}

impl SecondRegistry {
    pub fn image(&self, repository: &str) -> &TestImage {
        self.images
            .iter()
            .find(|i| i.repository == repository)
            .unwrap_or_else(|| panic!("the second registry has no image {repository}"))
    }

    /// The realm its challenges name.
    pub fn realm(&self) -> String {
        format!("{}/token", self.issuer_url)
    }

    /// Every request its token issuer received so far.
    pub fn issuer_records(&self) -> Vec<IssuerRecord> {
        self.issuer.records()
    }

    /// Requests the registry received so far.
    pub fn registry_requests(&self) -> Vec<RegistryRequest> {
        registry::read_access_log(&self.registry_access_log)
    }
}

/// The second registry, started on first use.
pub fn second() -> &'static SecondRegistry {
    static SECOND: OnceLock<Result<SecondRegistry, String>> = OnceLock::new();
    SECOND
        .get_or_init(|| {
            // A fresh thread: the caller may be inside a runtime (see `super::shared`).
            std::thread::spawn(build)
                .join()
                .map_err(|e| format!("{e:?}"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("second registry set-up failed: {e}"))
}

fn build() -> SecondRegistry {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("hubferry-second-")
        .tempdir()
        .expect("create temp dir")
        .keep();
    remove_at_exit(dir.clone());
    let key = certs::issuer_key(&dir);
    let issuer = Arc::new(Issuer::new(Minter::new(&key.key_pem, key.kid), None));
    let issuer_url = issuer::start(issuer.clone());
    let storage_root = dir.join("storage");
    std::fs::create_dir_all(&storage_root).expect("create storage root");
    let cdn = cdn::start(&dir, &storage_root, None);
    let registry = registry::start(&registry::RegistryOptions {
        dir: &dir,
        storage_root: &storage_root,
        realm: format!("{issuer_url}/token"),
        service: SECOND_SERVICE,
        root_cert_bundle: &key.cert_path,
        cdn_url: &cdn.url,
        tls: None,
    });
    issuer.registry_url.set(registry.url.clone()).unwrap();
    let images = vec![images::owner_image()];
    super::push_all(
        http::client(None),
        &registry,
        &issuer.minter,
        SECOND_SERVICE,
        &images,
    );
    eprintln!(
        "second registry ready in {:.1?}: registry {} cdn {} issuer {issuer_url}",
        started.elapsed(),
        registry.url,
        cdn.url
    );
    SecondRegistry {
        url: registry.url,
        issuer_url,
        images,
        registry_access_log: registry.access_log,
        issuer,
        _children: vec![registry.child, cdn.child],
    }
}
