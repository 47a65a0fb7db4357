//! Deterministic test images (seeded PRNG, no network): real tar / tar.gz layers, image
//! configs and manifests of the four media types a Docker Hub mirror meets.

use std::io::Write;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Payload of the big layer's single file; the layer is this plus tar framing.
pub const BIG_PAYLOAD: u64 = 100 * 1024 * 1024;
const BIG_SEED: u64 = 0x6875_6266_6572_7279; // "hubferry"
const CHUNK: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct Blob {
    /// `sha256:<hex>`
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The bytes; `None` only for the big layer (see [`big_layer_chunks`] or read it from
    /// `World::blob_path`).
    pub data: Option<Vec<u8>>,
}

/// A manifest referenced from an index.
#[derive(Clone, Debug)]
pub struct ChildManifest {
    /// `linux/amd64`, `linux/arm64/v8`
    pub platform: String,
    pub digest: String,
    pub media_type: String,
    pub manifest: Vec<u8>,
    /// Config first, then layers in order.
    pub blobs: Vec<Blob>,
}

#[derive(Clone, Debug)]
pub struct TestImage {
    /// Full name as on Docker Hub, e.g. `library/alpine`.
    pub repository: String,
    pub tag: String,
    /// Digest of `manifest` (what the registry answers in `Docker-Content-Digest`).
    pub digest: String,
    pub media_type: String,
    pub manifest: Vec<u8>,
    /// Every blob of the image, children's included: per manifest, config then layers.
    pub blobs: Vec<Blob>,
    /// For an index, the manifests it lists; empty otherwise.
    pub children: Vec<ChildManifest>,
}

impl TestImage {
    /// `library/alpine:latest`
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The name docker users type: `alpine` for `library/alpine`.
    pub fn short_name(&self) -> &str {
        self.repository
            .strip_prefix("library/")
            .unwrap_or(&self.repository)
    }

    pub fn blob(&self, digest: &str) -> &Blob {
        self.blobs
            .iter()
            .find(|b| b.digest == digest)
            .unwrap_or_else(|| panic!("{} has no blob {digest}", self.repository))
    }

    /// Layer blobs (not configs).
    pub fn layers(&self) -> impl Iterator<Item = &Blob> {
        self.blobs
            .iter()
            .filter(|b| !b.media_type.contains("config"))
    }

    pub fn largest_blob(&self) -> &Blob {
        self.blobs
            .iter()
            .max_by_key(|b| b.size)
            .expect("image has blobs")
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// xorshift64: fast enough in a debug build for 100 MiB, and reproducible.
struct Prng(u64);

impl Prng {
    fn new(label: &str) -> Prng {
        // FNV-1a of the label, never 0 (xorshift's fixed point).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Prng(h | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

fn tar_header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).expect("tar path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// A small real tar.gz layer: (compressed bytes, diff_id of the uncompressed tar).
fn small_layer(label: &str, files: usize, file_size: usize) -> (Vec<u8>, String) {
    let mut rng = Prng::new(label);
    let mut tar = tar::Builder::new(Vec::new());
    let text = format!("hubferry test layer {label}\n");
    tar.append(
        &tar_header("etc/hubferry-layer", text.len() as u64),
        text.as_bytes(),
    )
    .expect("tar append");
    for i in 0..files {
        let data = rng.bytes(file_size);
        let path = format!("opt/{}/file-{i}.bin", label.replace([':', '/'], "_"));
        tar.append(&tar_header(&path, data.len() as u64), data.as_slice())
            .expect("tar append");
    }
    let tar = tar.into_inner().expect("tar finish");
    // GzEncoder writes mtime 0 and a fixed OS byte: the output is reproducible.
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip finish"), sha256_digest(&tar))
}

fn blob(media_type: &str, data: Vec<u8>) -> Blob {
    Blob {
        digest: sha256_digest(&data),
        media_type: media_type.to_string(),
        size: data.len() as u64,
        data: Some(data),
    }
}

fn descriptor(b: &Blob) -> Value {
    json!({"mediaType": b.media_type, "size": b.size, "digest": b.digest})
}

fn config_json(label: &str, arch: &str, variant: Option<&str>, diff_ids: &[String]) -> Vec<u8> {
    let mut config = json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.hubferry.test": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().enumerate().map(|(i, _)| json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("hubferry world: {label} layer {i}"),
        })).collect::<Vec<_>>(),
    });
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    serde_json::to_vec_pretty(&config).unwrap()
}

/// Media types of one manifest flavour.
struct Flavour {
    manifest: &'static str,
    config: &'static str,
    layer: &'static str,
}

const OCI: Flavour = Flavour {
    manifest: OCI_MANIFEST,
    config: OCI_CONFIG,
    layer: OCI_LAYER_GZIP,
};
const DOCKER: Flavour = Flavour {
    manifest: DOCKER_MANIFEST,
    config: DOCKER_CONFIG,
    layer: DOCKER_LAYER,
};

/// A single-platform manifest: (digest, bytes, blobs config-first).
fn manifest(
    label: &str,
    flavour: &Flavour,
    arch: &str,
    variant: Option<&str>,
    layers: Vec<(Blob, String)>,
) -> (String, Vec<u8>, Vec<Blob>) {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let config = blob(flavour.config, config_json(label, arch, variant, &diff_ids));
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": flavour.manifest,
        "config": descriptor(&config),
        "layers": layers.iter().map(|(b, _)| descriptor(b)).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&doc).unwrap();
    let mut blobs = vec![config];
    blobs.extend(layers.into_iter().map(|(b, _)| b));
    (sha256_digest(&bytes), bytes, blobs)
}

fn gz_layers(
    label: &str,
    media_type: &str,
    count: usize,
    files: usize,
    size: usize,
) -> Vec<(Blob, String)> {
    (0..count)
        .map(|i| {
            let (gz, diff_id) = small_layer(&format!("{label}#{i}"), files, size);
            (blob(media_type, gz), diff_id)
        })
        .collect()
}

fn single(
    repository: &str,
    tag: &str,
    flavour: &Flavour,
    layers: Vec<(Blob, String)>,
) -> TestImage {
    let (digest, manifest, blobs) = manifest(repository, flavour, "amd64", None, layers);
    TestImage {
        repository: repository.into(),
        tag: tag.into(),
        digest,
        media_type: flavour.manifest.into(),
        manifest,
        blobs,
        children: Vec::new(),
    }
}

/// `library/alpine:latest`: an OCI index over linux/amd64 and linux/arm64/v8.
pub fn alpine() -> TestImage {
    let repository = "library/alpine";
    let platforms = [("amd64", None), ("arm64", Some("v8"))];
    let children: Vec<ChildManifest> = platforms
        .iter()
        .map(|&(arch, variant)| {
            let label = format!("{repository}/{arch}");
            let layers = gz_layers(&label, OCI_LAYER_GZIP, 1, 3, 6 * 1024);
            let (digest, manifest, blobs) = manifest(&label, &OCI, arch, variant, layers);
            let platform = match variant {
                Some(v) => format!("linux/{arch}/{v}"),
                None => format!("linux/{arch}"),
            };
            ChildManifest {
                platform,
                digest,
                media_type: OCI_MANIFEST.into(),
                manifest,
                blobs,
            }
        })
        .collect();
    let entries: Vec<Value> = children
        .iter()
        .zip(platforms)
        .map(|(c, (arch, variant))| {
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = v.into();
            }
            json!({
                "mediaType": c.media_type,
                "size": c.manifest.len(),
                "digest": c.digest,
                "platform": platform,
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let manifest = serde_json::to_vec_pretty(&index).unwrap();
    TestImage {
        repository: repository.into(),
        tag: "latest".into(),
        digest: sha256_digest(&manifest),
        media_type: OCI_INDEX.into(),
        manifest,
        blobs: children.iter().flat_map(|c| c.blobs.clone()).collect(),
        children,
    }
}

/// `library/nginx:latest`: Docker schema 2, two layers.
pub fn nginx() -> TestImage {
    let layers = gz_layers("library/nginx", DOCKER_LAYER, 2, 2, 8 * 1024);
    single("library/nginx", "latest", &DOCKER, layers)
}

/// `library/many:latest`: 14 small layers, for concurrency.
pub fn many() -> TestImage {
    let layers = gz_layers("library/many", OCI_LAYER_GZIP, 14, 1, 2 * 1024);
    single("library/many", "latest", &OCI, layers)
}

/// `someorg/tool:1.0`: outside `library/`, schema 2.
pub fn tool() -> TestImage {
    let layers = gz_layers("someorg/tool", DOCKER_LAYER, 1, 2, 4 * 1024);
    single("someorg/tool", "1.0", &DOCKER, layers)
}

/// `owner/image:v1`: OCI, one layer; lives on the second registry only (see `second`).
pub fn owner_image() -> TestImage {
    let layers = gz_layers("owner/image", OCI_LAYER_GZIP, 1, 2, 4 * 1024);
    single("owner/image", "v1", &OCI, layers)
}

/// `private/secret:latest`: schema 2, only pullable with credentials.
pub fn secret() -> TestImage {
    let layers = gz_layers("private/secret", DOCKER_LAYER, 1, 1, 4 * 1024);
    single("private/secret", "latest", &DOCKER, layers)
}

/// `library/big:latest`: one uncompressed tar layer holding [`BIG_PAYLOAD`] random bytes.
/// Generating it twice (digest, then upload) is cheaper than holding it.
pub fn big() -> TestImage {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for chunk in big_layer_chunks() {
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    let digest = format!("sha256:{:x}", hasher.finalize());
    let layer = Blob {
        digest: digest.clone(),
        media_type: OCI_LAYER_TAR.into(),
        size,
        data: None,
    };
    // Uncompressed layer: diff_id == digest.
    single("library/big", "latest", &OCI, vec![(layer, digest)])
}

/// The big layer's bytes, 1 MiB at a time: tar header, payload, end-of-archive blocks.
pub fn big_layer_chunks() -> impl Iterator<Item = Vec<u8>> {
    let header = tar_header("big.bin", BIG_PAYLOAD).as_bytes().to_vec();
    let mut rng = Prng::new("library/big");
    rng.0 ^= BIG_SEED;
    let chunks = (BIG_PAYLOAD as usize).div_ceil(CHUNK);
    let payload = (0..chunks).map(move |i| {
        let len = CHUNK.min(BIG_PAYLOAD as usize - i * CHUNK);
        rng.bytes(len)
    });
    // BIG_PAYLOAD is a multiple of 512, so no padding; two zero blocks end the archive.
    std::iter::once(header)
        .chain(payload)
        .chain(std::iter::once(vec![0u8; 1024]))
}
