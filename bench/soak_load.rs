//! The soak's kinds of load. Each is a loop run by a few threads until `stop` is set; every
//! operation is checked (status, digests, lengths, bytes) and counted, every failure is an
//! error with its message.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::progress;
use crate::skopeo;
use crate::slow_clients::connect_small_rcvbuf;
use crate::world::{self, TestImage, World};

/// Every manifest type a pull accepts, as docker and containerd send them.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What each pull loop pulls, in turn, with skopeo's extra flags.
const PULLS: [(&str, &[&str]); 6] = [
    ("library/alpine", &["--all"]),
    ("library/nginx", &[]),
    ("library/many", &[]),
    ("library/big", &[]),
    ("someorg/tool", &[]),
    ("private/secret", &["--src-creds"]), // + USERNAME:PASSWORD
];

/// Bytes per second a slow reader reads.
pub const SLOW_RATE: u64 = 64_000;
/// A slow reader's range of the big layer: 4–16 MiB, 1–4.5 min at [`SLOW_RATE`]. Well above
/// what hubferry's socket send buffer takes in (up to 4 MiB), so hubferry holds the stream
/// and feels the backpressure for most of it.
const SLOW_MIN: u64 = 4 << 20;
const SLOW_MAX: u64 = 16 << 20;
/// Most body bytes a disconnecting client reads before it leaves.
const CUT_MAX: u64 = 8 << 20;
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Operations and errors of one kind of load.
pub struct Tally {
    pub name: &'static str,
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    /// The first few error messages.
    pub first: Mutex<Vec<String>>,
}

impl Tally {
    pub const fn new(name: &'static str) -> Tally {
        Tally {
            name,
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, result: Result<(), String>) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            if self.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                let mut short: String = e.replace('\n', " | ").chars().take(600).collect();
                short = format!("[{:.0}s] {short}", crate::elapsed());
                progress(&format!("ERROR {}: {short}", self.name));
                self.first.lock().unwrap().push(short);
            }
        }
    }
}

/// What every load thread shares.
pub struct Load {
    pub world: &'static World,
    /// hubferry's plain listener.
    pub addr: SocketAddrV4,
    /// Where pulls land (one directory per pull loop, emptied after each check).
    pub scratch: PathBuf,
    pub stop: AtomicBool,
    pub pulls: Tally,
    pub manifests: Tally,
    pub slow: Tally,
    /// Slow reads that got to the end of their range (the others were cut by the end).
    pub slow_complete: AtomicU64,
    pub disconnects: Tally,
    /// The token, manifest and blob requests before and after the load (see [`Load::settle`]).
    pub settles: Tally,
}

impl Load {
    pub fn tallies(&self) -> [&Tally; 5] {
        [
            &self.pulls,
            &self.manifests,
            &self.slow,
            &self.disconnects,
            &self.settles,
        ]
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, or less once stopped.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }

    fn bearer(&self, scopes: &[String]) -> String {
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        format!("Bearer {}", self.world.token(&scopes))
    }

    fn pull_bearer(&self, repository: &str) -> String {
        self.bearer(&[format!("repository:{repository}:pull")])
    }

    /// One skopeo pull of `PULLS[i]` through hubferry into `dir`, checked, then removed.
    pub fn pull(&self, i: usize, dir: &std::path::Path) -> Result<(), String> {
        let (repo, extra) = PULLS[i % PULLS.len()];
        let image = self.world.image(repo);
        let creds = format!("{}:{}", world::USERNAME, world::PASSWORD);
        let mut args: Vec<&str> = extra.to_vec();
        if args.contains(&"--src-creds") {
            args.push(&creds);
        }
        let host = self.addr.to_string();
        let registry = skopeo::Registry {
            host: &host,
            ca_file: None,
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let result = skopeo::try_pull(&registry, &image.reference(), &args, dir)
            .and_then(|out| check_pulled(&out, image));
        let _ = std::fs::remove_dir_all(dir);
        result.map_err(|e| format!("{repo}: {e}"))
    }

    /// Pull loop `n`: every test image in turn, starting at a different one per loop.
    pub fn pull_loop(&self, n: usize) {
        let dir = self.scratch.join(format!("pull-{n}"));
        let mut i = n;
        while !self.stopped() {
            self.pulls.record(self.pull(i, &dir));
            i += 1;
            self.pause(Duration::from_millis(500));
        }
    }

    /// Manifest connection `n`: GET and HEAD of every image's manifest by tag and by digest,
    /// on one keep-alive connection (a new one after an error), about 20 a second.
    pub fn manifest_loop(&self, n: usize) {
        let scopes: Vec<String> = self
            .world
            .images
            .iter()
            .map(|i| format!("repository:{}:pull", i.repository))
            .collect();
        let mut bearer = (Instant::now(), self.bearer(&scopes));
        let mut conn: Option<Conn> = None;
        let images = &self.world.images;
        let mut k = n;
        while !self.stopped() {
            // Tokens live 300 s.
            if bearer.0.elapsed() > Duration::from_secs(60) {
                bearer = (Instant::now(), self.bearer(&scopes));
            }
            let image = &images[k % images.len()];
            let head = (k / images.len()) % 2 == 1;
            let reference = if (k / images.len() / 2) % 2 == 1 {
                &image.digest
            } else {
                &image.tag
            };
            k += 1;
            let method = if head { "HEAD" } else { "GET" };
            let path = format!("/v2/{}/manifests/{reference}", image.repository);
            let result = (|| {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(Conn::open(self.addr, false)?),
                };
                c.send(
                    method,
                    &path,
                    &[("Authorization", &bearer.1), ("Accept", ACCEPT)],
                )?;
                check_manifest(c, image, head)
            })();
            if result.is_err() {
                conn = None;
            }
            self.manifests
                .record(result.map_err(|e| format!("{method} {path}: {e}")));
            self.pause(Duration::from_millis(50));
        }
    }

    /// Slow reader `n`: random 4–16 MiB ranges of the big layer at [`SLOW_RATE`], the 206,
    /// its Content-Range, length and SHA-256 checked against the registry's own file. A read
    /// cut short by the end of the soak has the bytes it got checked.
    pub fn slow_loop(&self, n: usize) {
        let big = self.world.big_layer();
        let file = match File::open(self.world.blob_path(&big.digest)) {
            Ok(f) => f,
            Err(e) => return self.slow.record(Err(format!("open the big layer: {e}"))),
        };
        let mut rng = Rng::new(n as u64);
        while !self.stopped() {
            let len = SLOW_MIN + rng.below(SLOW_MAX - SLOW_MIN + 1);
            let start = rng.below(big.size - len + 1);
            self.slow
                .record(self.slow_read(big, &file, start, start + len - 1));
        }
    }

    fn slow_read(
        &self,
        big: &world::Blob,
        file: &File,
        start: u64,
        end: u64,
    ) -> Result<(), String> {
        let path = format!("/v2/library/big/blobs/{}", big.digest);
        let what = |e: String| format!("GET {path} bytes {start}-{end}: {e}");
        let stream = connect_small_rcvbuf(self.addr).map_err(|e| what(format!("connect: {e}")))?;
        let mut c = Conn::from_stream(stream, true).map_err(what)?;
        let range = format!("bytes={start}-{end}");
        let auth = self.pull_bearer("library/big");
        c.send("GET", &path, &[("Authorization", &auth), ("Range", &range)])
            .map_err(what)?;
        let head = c.head().map_err(what)?;
        let len = end - start + 1;
        let content_range = format!("bytes {start}-{end}/{}", big.size);
        if head.status != 206
            || head.get("content-range") != Some(&content_range)
            || head.length() != Some(len)
        {
            return Err(what(format!("answered {}", head.summary())));
        }
        let mut hasher = Sha256::new();
        let (mut got, began) = (0u64, Instant::now());
        let mut buf = vec![0u8; 16 * 1024];
        while got < len && !self.stopped() {
            // Token bucket: what the rate allows so far, at most one second's worth at once.
            let allowed = (SLOW_RATE as f64 * began.elapsed().as_secs_f64()) as u64;
            let budget = allowed.saturating_sub(got).min(SLOW_RATE).min(len - got);
            if budget < 4096.min(len - got) {
                std::thread::sleep(Duration::from_millis(25));
                continue;
            }
            let want = (budget as usize).min(buf.len());
            match c.reader.read(&mut buf[..want]) {
                Ok(0) => return Err(what(format!("closed after {got} of {len} bytes"))),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    got += n as u64;
                }
                Err(e) => return Err(what(format!("after {got} of {len} bytes: {e}"))),
            }
        }
        if got == len {
            self.slow_complete.fetch_add(1, Ordering::Relaxed);
        }
        let mut expected = vec![0u8; got as usize];
        file.read_exact_at(&mut expected, start)
            .map_err(|e| what(format!("read the layer file: {e}")))?;
        if hasher.finalize()[..] != Sha256::digest(&expected)[..] {
            return Err(what(format!(
                "wrong bytes: the {got} read hash differently from the layer's"
            )));
        }
        Ok(())
    }

    /// Disconnecting client `n`: starts a blob or manifest GET and leaves, either right after
    /// sending the request or after a random part of the body (half the time with a reset).
    /// Every response head it reads must be a 200 with the right length.
    pub fn disconnect_loop(&self, n: usize) {
        let mut rng = Rng::new(1000 + n as u64);
        let nginx = self.world.image("library/nginx");
        let many = self.world.image("library/many");
        let blobs = [
            ("library/big", self.world.big_layer()),
            ("library/many", many.layers().nth(n % 14).unwrap()),
            ("library/nginx", nginx.largest_blob()),
        ];
        while !self.stopped() {
            let (repo, path, len, accept) = if rng.below(10) < 6 {
                let (repo, blob) = blobs[rng.below(blobs.len() as u64) as usize];
                let path = format!("/v2/{repo}/blobs/{}", blob.digest);
                (repo, path, blob.size, None)
            } else {
                let images = &self.world.images;
                let image = &images[rng.below(images.len() as u64) as usize];
                let path = format!("/v2/{}/manifests/{}", image.repository, image.tag);
                let len = image.manifest.len() as u64;
                (image.repository.as_str(), path, len, Some(ACCEPT))
            };
            let before_head = rng.below(5) == 0;
            let cut = rng.below(len.min(CUT_MAX));
            let reset = rng.below(2) == 0;
            let result = (|| {
                let mut c = Conn::open(self.addr, true)?;
                let auth = self.pull_bearer(repo);
                let mut headers = vec![("Authorization", auth.as_str())];
                headers.extend(accept.map(|a| ("Accept", a)));
                c.send("GET", &path, &headers)?;
                if !before_head {
                    let head = c.head()?;
                    if head.status != 200 || head.length() != Some(len) {
                        return Err(format!("answered {}", head.summary()));
                    }
                    let mut left = cut;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let want = (left as usize).min(buf.len());
                        match c.reader.read(&mut buf[..want]) {
                            Ok(0) => return Err(format!("closed after {} of {len}", cut - left)),
                            Ok(n) => left -= n as u64,
                            Err(e) => return Err(format!("after {} of {len}: {e}", cut - left)),
                        }
                    }
                }
                if reset {
                    crate::world::reset_on_close(&c.writer);
                }
                Ok(())
            })();
            let when = if before_head {
                "before the head".to_string()
            } else {
                format!("after {cut} body bytes")
            };
            self.disconnects
                .record(result.map_err(|e| format!("GET {path} (leaving {when}): {e}")));
            self.pause(Duration::from_millis(200));
        }
    }

    /// Requests that reach every upstream (token issuer, registry, CDN) on fresh connections,
    /// each answer checked. Run after the client pools' idle connections have expired, they
    /// make each worker drop those (awc closes stale pooled connections only when it next
    /// connects to that host), so the descriptor count compares like with like.
    pub fn settle(&self) {
        let nginx = self.world.image("library/nginx");
        let blob = nginx.largest_blob();
        let scope = "repository:library/nginx:pull";
        let token = format!("/token?service={}&scope={scope}", world::SERVICE);
        let manifest = format!("/v2/{}/manifests/{}", nginx.repository, nginx.tag);
        let blob_path = format!("/v2/{}/blobs/{}", nginx.repository, blob.digest);
        let auth = self.pull_bearer(&nginx.repository);
        // Connections go to the workers in turn: enough rounds for each to see every host.
        for _ in 0..4 {
            for (path, len) in [
                (&token, None),
                (&manifest, Some(nginx.manifest.len() as u64)),
                (&blob_path, Some(blob.size)),
            ] {
                let result = (|| {
                    let mut c = Conn::open(self.addr, true)?;
                    c.send("GET", path, &[("Authorization", &auth), ("Accept", ACCEPT)])?;
                    let head = c.head()?;
                    let body = c.body(&head)?;
                    if head.status != 200 || len.is_some_and(|l| l != body.len() as u64) {
                        return Err(format!("answered {}", head.summary()));
                    }
                    if path == &blob_path && world::sha256_digest(&body) != blob.digest {
                        return Err("wrong bytes".into());
                    }
                    Ok(())
                })();
                self.settles
                    .record(result.map_err(|e| format!("GET {path}: {e}")));
            }
        }
    }
}

fn check_pulled(dir: &std::path::Path, image: &TestImage) -> Result<(), String> {
    let manifest =
        std::fs::read(dir.join("manifest.json")).map_err(|e| format!("read manifest.json: {e}"))?;
    let digest = world::sha256_digest(&manifest);
    if digest != image.digest {
        return Err(format!("manifest.json is {digest}, not {}", image.digest));
    }
    skopeo::check_blobs_copied(dir, &image.blobs)
}

fn check_manifest(c: &mut Conn, image: &TestImage, head_only: bool) -> Result<(), String> {
    let head = c.head()?;
    let ok = head.status == 200
        && head.get("docker-content-digest") == Some(&image.digest)
        && head.get("content-type") == Some(&image.media_type)
        && head.length() == Some(image.manifest.len() as u64);
    // Read the body either way, to keep the connection usable.
    let body = if head_only {
        Vec::new()
    } else {
        c.body(&head)?
    };
    if !ok {
        return Err(format!("answered {}", head.summary()));
    }
    if !head_only && body != image.manifest {
        return Err("body differs from the pushed manifest".into());
    }
    Ok(())
}

/// A response head: status and headers (names lower-cased).
pub struct Head {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn length(&self) -> Option<u64> {
        self.get("content-length")?.parse().ok()
    }

    fn summary(&self) -> String {
        let mut s = self.status.to_string();
        for name in [
            "content-length",
            "content-type",
            "content-range",
            "docker-content-digest",
        ] {
            if let Some(v) = self.get(name) {
                s.push_str(&format!(", {name}: {v}"));
            }
        }
        s
    }
}

/// An HTTP/1.1 client connection on a plain socket: what a strict client sees, nothing
/// hidden by a library.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    close: bool,
}

impl Conn {
    fn open(addr: SocketAddrV4, close: bool) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        Conn::from_stream(stream, close)
    }

    /// `close`: send `Connection: close` (one request), else keep the connection alive.
    fn from_stream(stream: TcpStream, close: bool) -> Result<Conn, String> {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::with_capacity(16 * 1024, stream),
            writer,
            close,
        })
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<(), String> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: hubferry\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.close {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        self.writer
            .write_all(req.as_bytes())
            .map_err(|e| format!("send request: {e}"))
    }

    fn head(&mut self) -> Result<Head, String> {
        let mut line = String::new();
        let mut read_line = |line: &mut String| {
            line.clear();
            match self.reader.read_line(line) {
                Ok(0) => Err("closed before the response head".to_string()),
                Ok(_) => Ok(line.trim_end().to_string()),
                Err(e) => Err(format!("read response head: {e}")),
            }
        };
        let status_line = read_line(&mut line)?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let l = read_line(&mut line)?;
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Ok(Head { status, headers })
    }

    /// The body of a response with a Content-Length.
    fn body(&mut self, head: &Head) -> Result<Vec<u8>, String> {
        let len = head
            .length()
            .ok_or_else(|| format!("no Content-Length: {}", head.summary()))?;
        let mut body = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("read {len}-byte body: {e}"))?;
        Ok(body)
    }
}

/// xorshift64: reproducible per thread, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
