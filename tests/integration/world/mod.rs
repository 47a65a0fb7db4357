//! The test world: a real Docker-Hub-shaped upstream on 127.0.0.1 for hubferry to mirror.
//!
//! - registry: Debian's `docker-registry` (distribution 2.8) with token auth, whose blob
//!   GET/HEAD answer 307 to the CDN, as Docker Hub does;
//! - CDN: nginx serving the registry's storage directory;
//! - token issuer + `/v1/search`: an in-process actix-web server (the only fake part);
//! - images pushed at set-up: OCI index, Docker schema 2, many layers, a 100 MiB layer, a
//!   non-library repo and a private one.
//!
//! [`plain`] and [`tls`] each start one world lazily, shared by every test of the binary.
#![allow(dead_code)] // not every test binary module uses every helper

mod cdn;
mod certs;
mod http;
mod images;
mod issuer;
mod process;
mod push;
mod registry;
mod second;
mod token;
mod wait;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// Re-exported for the test modules; not every module uses every item.
#[allow(unused_imports)]
pub use cdn::{spawn_nginx, CdnLogEntry};
#[allow(unused_imports)]
pub use certs::{tls_files, TlsFiles};
#[allow(unused_imports)]
pub use http::{client, rustls_config};
#[allow(unused_imports)]
pub use images::*;
#[allow(unused_imports)]
pub use issuer::IssuerRecord;
#[allow(unused_imports)]
pub use process::{
    config_file, free_port, remove_at_exit, require_tool, reset_on_close, spawn_child,
    try_spawn_child, wait_for_port, ManagedChild,
};
#[allow(unused_imports)]
pub use registry::RegistryRequest;
#[allow(unused_imports)]
pub use second::{second, SecondRegistry, SECOND_SERVICE};
#[allow(unused_imports)]
pub use token::{Access, ISSUER, PASSWORD, SERVICE, USERNAME};
#[allow(unused_imports)]
pub use wait::{wait_for, wait_for_async, wait_until, POLL_INTERVAL};

use issuer::Issuer;
use token::Minter;

pub struct World {
    /// Temp dir holding everything (removed at process exit).
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT` (`https://` in the TLS world).
    pub registry_url: String,
    /// `http://127.0.0.1:PORT`: token at `/token`, search at `/v1/search`. Plain HTTP in
    /// both worlds.
    pub issuer_url: String,
    /// Where the registry redirects blobs: `http(s)://127.0.0.1:PORT`.
    pub cdn_url: String,
    /// Parsed by [`World::cdn_log`].
    pub cdn_access_log: PathBuf,
    /// The registry's Apache-combined access log, one line per request it received; parsed
    /// by [`World::registry_requests`] (e.g. to check a HEAD stayed a HEAD).
    pub registry_access_log: PathBuf,
    /// The registry's own log (level warn).
    pub registry_log: PathBuf,
    /// Filesystem root of the registry storage (served by the CDN).
    pub storage_root: PathBuf,
    /// CA that signed the registry and CDN certificates (TLS world only).
    pub ca_file: Option<PathBuf>,
    pub images: Vec<TestImage>,
    /// How long set-up took.
    pub setup_time: Duration,
    issuer: Arc<Issuer>,
    /// The certificate the registry checks tokens with (for more registries on this storage).
    issuer_cert: PathBuf,
    /// Kept alive for the life of the process; killed at exit.
    _children: Vec<ManagedChild>,
}

impl World {
    /// The pushed image named `repository` (e.g. `library/alpine`); panics if absent.
    pub fn image(&self, repository: &str) -> &TestImage {
        self.images
            .iter()
            .find(|i| i.repository == repository)
            .unwrap_or_else(|| panic!("this world has no image {repository}"))
    }

    /// The single layer of `library/big` (plain world only).
    pub fn big_layer(&self) -> &Blob {
        self.image("library/big").layers().next().unwrap()
    }

    /// `127.0.0.1:PORT` of the registry (for `docker://HOST/...` references).
    pub fn registry_host(&self) -> &str {
        host_of(&self.registry_url)
    }

    pub fn cdn_host(&self) -> &str {
        host_of(&self.cdn_url)
    }

    pub fn issuer_host(&self) -> &str {
        host_of(&self.issuer_url)
    }

    /// Every request the issuer received so far (all tests share it: filter by something
    /// unique to your test, e.g. a scope or a header).
    pub fn issuer_records(&self) -> Vec<IssuerRecord> {
        self.issuer.records()
    }

    /// A token for the registry granting exactly `scopes` (e.g.
    /// `"repository:private/secret:pull"`, `"registry:catalog:*"`), minted without HTTP.
    pub fn token(&self, scopes: &[&str]) -> String {
        let access = token::parse_scopes(scopes.iter().copied());
        self.issuer.minter.mint(USERNAME, SERVICE, &access)
    }

    /// Parsed CDN access log so far.
    pub fn cdn_log(&self) -> Vec<CdnLogEntry> {
        cdn::read_log(&self.cdn_access_log)
    }

    /// nginx writes a log line just after the response went out, so a test that has read a
    /// body may look before the line exists: poll for the first entry matching `pred`.
    pub fn wait_for_cdn_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&CdnLogEntry) -> bool,
    ) -> Option<CdnLogEntry> {
        wait_for(timeout, || self.cdn_log().into_iter().find(|e| pred(e)))
    }

    /// Requests the registry received so far, from its access log.
    pub fn registry_requests(&self) -> Vec<RegistryRequest> {
        registry::read_access_log(&self.registry_access_log)
    }

    /// Like [`World::wait_for_cdn_log`], for the registry's access log.
    pub fn wait_for_registry_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&RegistryRequest) -> bool,
    ) -> Option<RegistryRequest> {
        wait_for(timeout, || {
            self.registry_requests().into_iter().find(|r| pred(r))
        })
    }

    /// Where the registry stores blob `digest` (the file the CDN serves).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage_root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The CDN path of blob `digest`, as the registry's 307 `Location` ends.
    pub fn cdn_blob_url(&self, digest: &str) -> String {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        format!(
            "{}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            self.cdn_url,
            &hex[..2]
        )
    }

    /// Upload `data` to `repository` as one blob and return its digest; no manifest is needed
    /// for blob GETs. Runs its own actix runtime, so call it outside one (the benchmark's big
    /// blob).
    pub fn push_blob(&self, repository: &str, data: Vec<u8>) -> String {
        let blob = Blob {
            digest: sha256_digest(&data),
            media_type: OCI_LAYER_TAR.into(),
            size: data.len() as u64,
            data: Some(data),
        };
        let token = self.token(&[&format!("repository:{repository}:pull,push")]);
        actix_rt::System::new().block_on(async {
            let pusher = push::Pusher {
                client: self.client(),
                registry_url: &self.registry_url,
                token,
            };
            pusher.push_blob(repository, &blob).await;
        });
        blob.digest
    }

    /// Another registry on this world's storage, images and token issuer, whose blob redirects
    /// go to `cdn_url` instead (e.g. a fault-injecting relay in front of the CDN). Plain HTTP
    /// world only. Stopped when the returned child is dropped.
    pub fn registry_redirecting_to(&self, cdn_url: &str) -> (String, ManagedChild) {
        self.another_registry(cdn_url, format!("{}/token", self.issuer_url))
    }

    /// Another registry on this world's storage that serves anyone without a token, as
    /// mirror.gcr.io serves Docker Hub's public images; its blobs redirect to this world's CDN.
    /// Plain HTTP world only. Stopped when the returned child is dropped.
    pub fn open_registry(&self) -> (String, ManagedChild) {
        self.another_registry(&self.cdn_url, String::new())
    }

    /// A registry on this world's storage; `realm` empty: without auth.
    fn another_registry(&self, cdn_url: &str, realm: String) -> (String, ManagedChild) {
        assert!(self.ca_file.is_none(), "plain world only");
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir_in(&self.dir)
            .expect("create registry dir")
            .keep();
        let registry = registry::start(&registry::RegistryOptions {
            dir: &dir,
            storage_root: &self.storage_root,
            realm,
            service: SERVICE,
            root_cert_bundle: &self.issuer_cert,
            cdn_url,
            tls: None,
        });
        (registry.url, registry.child)
    }

    /// An awc client that trusts this world's CA (if any) and follows no redirects. Use it
    /// inside an actix runtime (`#[actix_rt::test]`).
    pub fn client(&self) -> awc::Client {
        http::client(self.ca_file.as_deref())
    }
}

fn host_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// The plain-HTTP world with every test image.
pub fn plain() -> &'static World {
    static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
    shared(&WORLD, false)
}

/// The HTTPS world (registry and CDN behind a test CA, see [`World::ca_file`]) with
/// `library/alpine` and `library/nginx` only.
pub fn tls() -> &'static World {
    static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
    shared(&WORLD, true)
}

/// Build once, on a fresh thread: the caller may be inside an actix/tokio runtime, where
/// starting another one would panic. A failed set-up is remembered, not retried per test.
fn shared(cell: &'static OnceLock<Result<World, String>>, tls: bool) -> &'static World {
    cell.get_or_init(|| {
        std::thread::Builder::new()
            .name("world-setup".into())
            .spawn(move || build(tls))
            .expect("start set-up thread")
            .join()
            .map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            })
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("test world set-up failed: {e}"))
}

fn build(tls: bool) -> World {
    let started = Instant::now();
    for tool in ["docker-registry", "nginx", "skopeo"] {
        require_tool(tool);
    }
    let dir = tempfile::Builder::new()
        .prefix(if tls {
            "hubferry-world-tls-"
        } else {
            "hubferry-world-"
        })
        .tempdir()
        .expect("create temp dir")
        .keep();
    remove_at_exit(dir.clone());

    // The big layer's digest takes a while in a debug build: compute it meanwhile.
    let generated = std::thread::spawn(move || generate_images(tls));

    let key = certs::issuer_key(&dir);
    let tls_files = tls.then(|| certs::tls_files(&dir));
    let ca_file = tls_files.as_ref().map(|t| t.ca_cert.clone());
    let issuer = Arc::new(Issuer::new(
        Minter::new(&key.key_pem, key.kid),
        ca_file.clone(),
    ));
    let issuer_url = issuer::start(issuer.clone());

    let storage_root = dir.join("storage");
    std::fs::create_dir_all(&storage_root).expect("create storage root");
    let cdn = cdn::start(&dir, &storage_root, tls_files.as_ref());
    let registry = registry::start(&registry::RegistryOptions {
        dir: &dir,
        storage_root: &storage_root,
        realm: format!("{issuer_url}/token"),
        service: SERVICE,
        root_cert_bundle: &key.cert_path,
        cdn_url: &cdn.url,
        tls: tls_files.as_ref(),
    });
    issuer.registry_url.set(registry.url.clone()).unwrap();

    let images = generated.join().expect("generate images");
    let client = http::client(ca_file.as_deref());
    push_all(client, &registry, &issuer.minter, SERVICE, &images);

    let setup_time = started.elapsed();
    eprintln!(
        "test world ({}) ready in {setup_time:.1?}: registry {} cdn {} issuer {} dir {}",
        if tls { "tls" } else { "plain" },
        registry.url,
        cdn.url,
        issuer_url,
        dir.display()
    );
    World {
        dir,
        registry_url: registry.url,
        issuer_url,
        cdn_url: cdn.url,
        cdn_access_log: cdn.access_log,
        registry_access_log: registry.access_log,
        registry_log: registry.log,
        storage_root,
        ca_file,
        images,
        setup_time,
        issuer,
        issuer_cert: key.cert_path.clone(),
        _children: vec![registry.child, cdn.child],
    }
}

fn generate_images(tls: bool) -> Vec<TestImage> {
    if tls {
        return vec![alpine(), nginx()];
    }
    vec![alpine(), nginx(), many(), big(), tool(), secret()]
}

/// Waits for `registry` to answer, then pushes `images` to it with a token `minter` signs for
/// `service` (the registry's), all at once.
fn push_all(
    client: awc::Client,
    registry: &registry::Registry,
    minter: &Minter,
    service: &str,
    images: &[TestImage],
) {
    actix_rt::System::new().block_on(async {
        wait_for_registry(&client, registry).await;
        let scopes: Vec<String> = images
            .iter()
            .map(|i| format!("repository:{}:pull,push", i.repository))
            .collect();
        let access = token::parse_scopes(scopes.iter().map(String::as_str));
        let pusher = push::Pusher {
            client,
            registry_url: &registry.url,
            token: minter.mint(USERNAME, service, &access),
        };
        futures_util::future::join_all(images.iter().map(|i| pusher.push_image(i))).await;
    });
}

/// The registry is ready when `/v2/` answers 401 (token auth is on).
async fn wait_for_registry(client: &awc::Client, registry: &registry::Registry) {
    let last = std::cell::RefCell::new(String::new());
    let ready = wait_for_async(Duration::from_secs(20), || async {
        match client.get(format!("{}/v2/", registry.url)).send().await {
            Ok(r) if r.status().as_u16() == 401 => Some(()),
            Ok(r) => {
                *last.borrow_mut() = format!("status {}", r.status());
                None
            }
            Err(e) => {
                *last.borrow_mut() = e.to_string();
                None
            }
        }
    })
    .await;
    assert!(
        ready.is_some(),
        "registry /v2/ never answered 401 ({}); log:\n{}",
        last.borrow(),
        read_lossy(&registry.log)
    );
}

fn read_lossy(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
