//! Starts the real hubferry binary (the one `cargo test` just built) as a child process on a
//! free loopback port, with its log in a file the test can read.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::world::{self, ManagedChild, World};

/// The arguments a test adds when its hubferry must follow redirects to this machine (the test
/// world's CDN, a fake's own 127.0.0.1): production refuses redirects to private addresses
/// (`redirect.allow_private` is off by default), and so does every other test's hubferry.
pub const FOLLOW_LOCAL_REDIRECTS: [&str; 2] = ["--allow-private-redirects", "true"];

pub struct Hubferry {
    pub child: ManagedChild,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`, for skopeo and raw sockets.
    pub addr: String,
    /// `http://127.0.0.1:PORT` of the admin listener (`/healthz`, `/readyz`, `/metrics`), unless
    /// the test switched it off or chose its own.
    pub admin_url: Option<String>,
    pub log: PathBuf,
    _time_limit: TimeLimit,
}

/// How long a test may run once it has started a hubferry. The slowest tests take about 15 s on
/// a loaded two-core machine; a test still running long after that hangs, and would otherwise
/// hold the whole run until CI gives up on it.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(180);

/// Ends the test process, naming the test, if the test that started a hubferry is still
/// running [`TEST_TIME_LIMIT`] later; dropped (with its hubferry) when the test ends, when it
/// notes how long the test ran with it for the slowest-tests report.
struct TimeLimit {
    test: String,
    started: std::time::Instant,
    _done: std::sync::mpsc::Sender<()>,
}

/// The longest each test ran with a hubferry, printed (slowest first) when the process exits.
static DURATIONS: std::sync::Mutex<Vec<(String, Duration)>> = std::sync::Mutex::new(Vec::new());

/// How many of the slowest tests the report names.
const SLOWEST_SHOWN: usize = 10;

extern "C" fn report_slowest() {
    use std::io::Write;
    let mut durations = std::mem::take(&mut *DURATIONS.lock().unwrap_or_else(|e| e.into_inner()));
    durations.sort_by_key(|(_, took)| std::cmp::Reverse(*took));
    let mut report = format!(
        "\nslowest tests (time with a hubferry running), of {}:\n",
        durations.len()
    );
    for (test, took) in durations.iter().take(SLOWEST_SHOWN) {
        report.push_str(&format!("  {:>7.2}s  {test}\n", took.as_secs_f64()));
    }
    // Straight to the file descriptor: libtest captures eprintln! of test threads.
    let _ = std::io::stderr().write_all(report.as_bytes());
}

impl Drop for TimeLimit {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let mut durations = DURATIONS.lock().unwrap_or_else(|e| e.into_inner());
        match durations.iter_mut().find(|(test, _)| *test == self.test) {
            Some((_, longest)) => *longest = (*longest).max(took),
            None => durations.push((self.test.clone(), took)),
        }
    }
}

impl TimeLimit {
    fn start() -> TimeLimit {
        static REPORT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registering a plain extern "C" fn with no captured state.
        REPORT.call_once(|| unsafe {
            libc::atexit(report_slowest);
        });
        let (done, finished) = std::sync::mpsc::channel::<()>();
        // libtest runs each test on a thread named after it.
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let named = test.clone();
        std::thread::spawn(move || {
            let test = named;
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(TEST_TIME_LIMIT)
            {
                use std::io::Write;
                // Straight to the file descriptor: libtest captures eprintln! of test threads.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n{test} is still running after its limit of {}s: stopping the test run",
                    TEST_TIME_LIMIT.as_secs()
                );
                std::process::exit(101);
            }
        });
        TimeLimit {
            test,
            started: std::time::Instant::now(),
            _done: done,
        }
    }
}

impl Hubferry {
    /// Starts hubferry with `args` (plus `--listen` on a free loopback port and 2 workers unless
    /// given), otherwise with production's defaults: a test whose hubferry must follow a
    /// redirect to the test world's CDN or a fake, all on 127.0.0.1, passes
    /// [`FOLLOW_LOCAL_REDIRECTS`].
    pub fn start(args: &[String]) -> Hubferry {
        Self::start_with_env(args, &[])
    }

    /// As [`Hubferry::start`], from string slices.
    pub fn start_with(args: &[&str]) -> Hubferry {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::start(&args)
    }

    pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Hubferry {
        Self::start_prepared(args, env, |_| {})
    }

    /// As [`Hubferry::start`], with stderr (its log) a pipe that nobody reads: a stuck log
    /// shipper. The pipe's read end stays open in `child.stderr` for as long as hubferry runs.
    pub fn start_with_stderr_unread(args: &[String]) -> Hubferry {
        Self::start_prepared(args, &[], |cmd| {
            cmd.stderr(Stdio::piped());
        })
    }

    /// As [`Hubferry::start`], in the cgroup whose `cgroup.procs` file is `procs`: the process
    /// joins it before it runs hubferry, so hubferry sees that cgroup's limits as its own.
    pub fn start_in_cgroup(args: &[String], procs: &Path) -> Hubferry {
        use std::os::unix::{ffi::OsStrExt, process::CommandExt};
        let procs = std::ffi::CString::new(procs.as_os_str().as_bytes()).unwrap();
        Self::start_prepared(args, &[], move |cmd| {
            // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec;
            // writing 0 to cgroup.procs moves the writing process.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let error = std::io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(error);
                    }
                    Ok(())
                });
            }
        })
    }

    fn start_prepared(
        args: &[String],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Hubferry {
        // A test that chooses its own listener (`[::]:PORT`, say) reaches it on 127.0.0.1.
        let listen = args
            .iter()
            .position(|a| a == "--listen")
            .map(|i| args[i + 1].clone());
        let port = match &listen {
            Some(listen) => listen.rsplit(':').next().unwrap().parse().unwrap(),
            None => world::free_port(),
        };
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::Builder::new()
            .prefix("hubferry-test-")
            .tempdir()
            .unwrap()
            .keep();
        world::remove_at_exit(dir.clone());
        let log = dir.join("hubferry.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubferry"));
        if listen.is_none() {
            cmd.arg("--listen").arg(&addr);
        }
        if !args.iter().any(|a| a == "--workers") {
            cmd.args(["--workers", "2"]);
        }
        // Tests run in parallel: each hubferry gets its own admin port.
        let admin_url = if args.iter().any(|a| a == "--admin-listen") {
            None
        } else {
            let admin = format!("127.0.0.1:{}", world::free_port());
            cmd.args(["--admin-listen", &admin]);
            Some(format!("http://{admin}"))
        };
        cmd.args(args)
            // The world's own knob shares hubferry's prefix; hubferry would refuse it.
            .env_remove("HUBFERRY_KEEP_WORLD")
            // hubferry honours the proxy variables, as curl does; a test's world is on
            // loopback, and a test that wants a proxy says so.
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .env("RUST_LOG", "info,hubferry=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create hubferry log"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        prepare(&mut cmd);
        let time_limit = TimeLimit::start();
        let child = world::spawn_child(cmd);
        assert!(
            world::wait_for_port(&addr, Duration::from_secs(20)),
            "hubferry did not start listening on {addr}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Hubferry {
            child,
            url: format!("http://{addr}"),
            addr,
            admin_url,
            log,
            _time_limit: time_limit,
        }
    }

    /// Starts hubferry pointed at a test world's registry, token issuer and search index.
    pub fn for_world(world: &World, extra: &[&str]) -> Hubferry {
        Self::for_registry(world, &world.registry_url, extra)
    }

    /// As [`Hubferry::for_world`], with another registry on the world's storage (see
    /// `World::registry_redirecting_to`).
    pub fn for_registry(world: &World, registry_url: &str, extra: &[&str]) -> Hubferry {
        let mut args = Self::world_args(world, registry_url);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args)
    }

    /// The flags that point hubferry at `registry_url` and the world's token issuer and search
    /// index (and its CA, in the TLS world).
    pub fn world_args(world: &World, registry_url: &str) -> Vec<String> {
        let mut args = vec![
            "--registry".to_owned(),
            registry_url.to_owned(),
            "--auth".to_owned(),
            world.issuer_url.clone(),
            "--index".to_owned(),
            world.issuer_url.clone(),
        ];
        if let Some(ca) = &world.ca_file {
            args.push("--ca-file".to_owned());
            args.push(ca.display().to_string());
        }
        args
    }

    /// The log so far. hubferry writes its log from a thread of its own, behind a queue, so a
    /// line logged before an answer went out may reach the file just after the client read the
    /// answer: this reads once the file has stopped growing (two looks 20 ms apart), or after
    /// a second of steady logging.
    pub fn log_text(&self) -> String {
        let size = || std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut last = size();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = size();
            if now == last || std::time::Instant::now() > deadline {
                break;
            }
            last = now;
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log line of the error whose registry error `body` a client got: found by the
    /// request id the answer carries (`detail.request_id`). What only the operator may read
    /// (upstream URLs, causes, addresses) is there, and only there.
    pub fn error_log_line(&self, body: &serde_json::Value) -> String {
        let id = body["errors"][0]["detail"]["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no request id in {body}"))
            .to_owned();
        let needle = format!("request_id={id}");
        crate::world::wait_for(std::time::Duration::from_secs(5), || {
            self.log_text()
                .lines()
                .find(|l| l.contains(&needle) && !l.contains("hubferry::access]"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no log line with {needle}:\n{}", self.log_text()))
    }

    /// Resident memory of the hubferry process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

/// A response read straight off the socket, so framing is visible: what a strict client sees.
pub struct RawResponse {
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A GET over a raw socket with `Connection: close`, read at the test's own pace: a strict
/// client that sees a body ending short of its `Content-Length` as such.
pub struct RawDownload {
    stream: std::net::TcpStream,
    received: Vec<u8>,
}

impl RawDownload {
    pub fn start(addr: &str, path: &str, headers: &[(&str, &str)]) -> RawDownload {
        let stream = std::net::TcpStream::connect(addr).expect("connect to hubferry");
        Self::over(stream, addr, path, headers)
    }

    /// As [`RawDownload::start`], from the local address `source` (another loopback address
    /// such as `127.0.0.2` is another client).
    pub fn start_from(
        source: &str,
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawDownload {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
        socket.bind(&source.into()).expect("bind the client socket");
        let target: std::net::SocketAddr = addr.parse().unwrap();
        socket.connect(&target.into()).expect("connect to hubferry");
        Self::over(socket.into(), addr, path, headers)
    }

    fn over(
        mut stream: std::net::TcpStream,
        addr: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawDownload {
        use std::io::Write;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        RawDownload {
            stream,
            received: Vec::new(),
        }
    }

    /// Reads exactly `n` more bytes (head included).
    pub fn read_some(&mut self, n: usize) {
        use std::io::Read;
        let start = self.received.len();
        self.received.resize(start + n, 0);
        self.stream.read_exact(&mut self.received[start..]).unwrap();
    }

    /// Whether what was read so far starts with `prefix` (a status line, say).
    pub fn received_starts_with(&self, prefix: &[u8]) -> bool {
        self.received.starts_with(prefix)
    }

    /// Reads until the server closes and parses what came.
    pub fn finish(mut self) -> RawResponse {
        use std::io::Read;
        let _ = self.stream.read_to_end(&mut self.received); // a reset after data is a result too
        let raw = self.received;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        RawResponse {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }
}

/// As [`raw_get`], from the local address `source`.
pub fn raw_get_from(source: &str, addr: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    RawDownload::start_from(source, addr, path, headers).finish()
}

/// `GET path`, read to the end at once.
pub fn raw_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    RawDownload::start(addr, path, headers).finish()
}
