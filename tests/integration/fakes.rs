//! Small upstreams that misbehave or report on purpose, for what the real registry cannot show:
//! the exact headers an upstream receives, redirect chains that loop, bodies that break. The
//! real registry, CDN and clients are in `world`; these only complement them.

use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use actix_web::{http::StatusCode, web, App, HttpRequest, HttpResponse, HttpServer};

/// Runs an actix app on its own thread and returns its base URL.
fn serve<F, T>(factory: F) -> String
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            HttpServer::new(factory)
                .workers(1)
                .listen(listener)
                .unwrap()
                .run()
                .await
                .unwrap()
        })
    });
    format!("http://127.0.0.1:{port}")
}

/// Answers every request with a JSON description of what it received, and with a few
/// response headers a proxy must (not) pass on.
async fn echo(req: HttpRequest, mut body: web::Payload) -> HttpResponse {
    let mut body_len = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        body_len += chunk.map(|c| c.len()).unwrap_or(0);
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    HttpResponse::Ok()
        .insert_header(("X-Upstream", "echo"))
        .insert_header(("X-Method", req.method().as_str()))
        // Docker Hub's rate-limit headers, as it sends them on manifest answers.
        .insert_header(("ratelimit-limit", "100;w=21600"))
        .insert_header(("ratelimit-remaining", "76;w=21600"))
        .insert_header(("Proxy-Authenticate", "Basic realm=\"upstream-proxy\""))
        .insert_header(("Keep-Alive", "timeout=99"))
        .json(serde_json::json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "body_len": body_len,
        }))
}

fn redirect(status: StatusCode, location: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Location", location))
        .body("redirecting")
}

/// An upstream that echoes requests, and redirects in every way a registry could. Its paths are
/// registry API paths (hubferry answers any other `/v2` path itself):
/// `/v2/loop/manifests/a` ↔ `.../b`, `/v2/chain/manifests/N` → N+1 forever,
/// `/v2/relative/x/manifests/start` → `../../end`, `/v2/see-other/manifests/x` (303),
/// `/v2/other-origin/manifests/x` (to `localhost` instead of `127.0.0.1`),
/// `/v2/bad-scheme/manifests/x` (to `file:`), `/v2/metadata/manifests/x` (to 169.254.169.254),
/// `/v2/mapped/manifests/x` (to `[::ffff:127.0.0.1]`), `/v2/challenge/manifests/x` (a 401 with
/// two challenges).
pub fn upstream() -> String {
    serve(|| {
        App::new()
            .route(
                "/v2/loop/manifests/a",
                web::to(|| async { redirect(StatusCode::TEMPORARY_REDIRECT, "/v2/loop/manifests/b".into()) }),
            )
            .route(
                "/v2/loop/manifests/b",
                web::to(|| async { redirect(StatusCode::TEMPORARY_REDIRECT, "/v2/loop/manifests/a".into()) }),
            )
            .route(
                "/v2/chain/manifests/{n}",
                web::to(|n: web::Path<u32>| async move {
                    redirect(StatusCode::FOUND, format!("/v2/chain/manifests/{}", *n + 1))
                }),
            )
            .route(
                "/v2/relative/x/manifests/start",
                web::to(|| async { redirect(StatusCode::TEMPORARY_REDIRECT, "../../end".into()) }),
            )
            .route(
                "/v2/see-other/manifests/x",
                web::to(|| async { redirect(StatusCode::SEE_OTHER, "/v2/after-303".into()) }),
            )
            .route(
                "/v2/other-origin/manifests/x",
                web::to(|req: HttpRequest| async move {
                    let port = req.app_config().local_addr().port();
                    redirect(
                        StatusCode::TEMPORARY_REDIRECT,
                        format!("http://localhost:{port}/cdn/blob?sig=1"),
                    )
                }),
            )
            .route(
                "/v2/metadata/manifests/x",
                web::to(|| async {
                    redirect(
                        StatusCode::TEMPORARY_REDIRECT,
                        "http://169.254.169.254/latest/meta-data/".into(),
                    )
                }),
            )
            .route(
                "/v2/mapped/manifests/x",
                web::to(|req: HttpRequest| async move {
                    let port = req.app_config().local_addr().port();
                    redirect(
                        StatusCode::FOUND,
                        format!("http://[::ffff:127.0.0.1]:{port}/cdn/blob"),
                    )
                }),
            )
            .route(
                "/v2/bad-scheme/manifests/x",
                web::to(|| async { redirect(StatusCode::TEMPORARY_REDIRECT, "file:///etc/passwd".into()) }),
            )
            .route(
                "/v2/challenge/manifests/x",
                web::to(|| async {
                    HttpResponse::Unauthorized()
                        .append_header((
                            "WWW-Authenticate",
                            r#"Bearer realm="https://auth.example/token",service="svc",scope="repository:a/b:pull,push""#,
                        ))
                        .append_header(("WWW-Authenticate", r#"Basic realm="basic""#))
                        .json(serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}))
                }),
            )
            .route(
                "/v2/signed/manifests/x",
                web::to(|req: HttpRequest| async move {
                    let port = req.app_config().local_addr().port();
                    redirect(
                        StatusCode::TEMPORARY_REDIRECT,
                        format!("http://cdnuser:cdnpass@localhost:{port}/cdn/signed?verify=1700000000-{SIGNATURE}&X-Amz-Signature={SIGNATURE}"),
                    )
                }),
            )
            .route(
                "/v2/signed-dead/manifests/x",
                web::to(|| async {
                    // Port 1 on loopback: nothing listens, the connection is refused.
                    redirect(
                        StatusCode::TEMPORARY_REDIRECT,
                        format!("http://cdnuser:cdnpass@127.0.0.1:1/blob?X-Amz-Signature={SIGNATURE}"),
                    )
                }),
            )
            .route("/cdn/signed", web::to(noisy_cdn))
            .default_service(web::to(echo))
    })
}

/// The signature in the signed CDN URLs of [`upstream`]: a capability no client or log may see.
pub const SIGNATURE: &str = "SIGNATURE-SECRET-0123456789";

/// A CDN that echoes the request, with the headers a real CDN adds about itself.
async fn noisy_cdn(req: HttpRequest, body: web::Payload) -> HttpResponse {
    let mut res = echo(req, body).await;
    for (name, value) in [
        ("server", "AmazonS3"),
        ("via", "1.1 abc.cloudfront.net (CloudFront)"),
        ("x-amz-request-id", "REQUESTID"),
        ("x-amz-id-2", "HOSTID"),
        ("cf-ray", "8a1b2c3d4e5f-FRA"),
        (
            "set-cookie",
            "__cf_bm=cdn-session; Domain=.cdn.example; HttpOnly",
        ),
        ("alt-svc", "h3=\":443\"; ma=86400"),
    ] {
        res.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(name),
            actix_web::http::header::HeaderValue::from_static(value),
        );
    }
    res
}

/// The echo upstream's report of a request, from a response that carries it.
pub async fn echo_of(res: &mut awc::ClientResponse) -> serde_json::Value {
    let body = res.body().limit(1 << 20).await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

/// Every value of header `name` the echo upstream received.
pub fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str() == Some(name))
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

/// A raw HTTP/1.1 server: for each connection it reads the request head, then runs `answer`
/// on the socket. Returns `http://127.0.0.1:PORT`.
fn raw_server(answer: fn(&mut std::net::TcpStream)) -> String {
    raw_server_with_head(answer, |_, stream, answer| answer(stream))
}

/// As [`raw_server`], with the request head given to `route`, which answers through `answer`
/// or by itself.
fn raw_server_with_head(
    answer: fn(&mut std::net::TcpStream),
    route: fn(&str, &mut std::net::TcpStream, fn(&mut std::net::TcpStream)),
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                route(&String::from_utf8_lossy(&head), &mut stream, answer);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// A token issuer that codes its answer though nobody asked for it (`/coded`), or sends a
/// token answer a byte every second (`/trickle`).
pub fn odd_token_issuer() -> String {
    raw_server_with_head(
        |_| {},
        |head, stream, _| {
            let token = br#"{"token":"minted-elsewhere","expires_in":300}"#;
            if head.starts_with("GET /coded") {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(token).unwrap();
                let body = gz.finish().unwrap();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    token.len()
                );
                for byte in token {
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                    // Not a wait: the trickle is the point.
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        },
    )
}

/// Accepts, reads the request, and never answers.
pub fn silent() -> String {
    // Not a wait: the upstream's silence is what the tests that use it are about.
    raw_server(|_| std::thread::sleep(Duration::from_secs(120)))
}

/// An upstream that reads each request head, reports it, and then reads (and drops) the body
/// until the connection closes, never answering.
pub fn silent_reporting() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads, reported) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let heads = heads.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            });
        }
    });
    (url, reported)
}

/// Promises 1000 bytes, sends 10 and closes the connection.
pub fn short_body() -> String {
    raw_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/octet-stream\r\n\r\n0123456789");
    })
}

/// Sends headers and 10 of 1000 bytes, then goes quiet while keeping the connection open.
pub fn stalled_body() -> String {
    raw_server(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        // Not a wait: the stall is what the tests that use it are about.
        std::thread::sleep(Duration::from_secs(120));
    })
}

/// Length of every blob [`flaky_blobs`] serves.
pub const FLAKY_BLOB_LEN: u64 = 1_000_000;

/// A registry and CDN in one whose blob downloads break, and whose answers to the range request
/// that resumes them cannot continue the stream: `/v2/ignores-ranges/blobs/<digest>` redirects
/// to a CDN that answers every range with a 200 of the whole blob, `/v2/changes/blobs/<digest>`
/// to one that answers the range with the bytes of another version (another ETag). The first,
/// range-less download of each sends 100 kB of its 1 MB and closes.
pub fn flaky_blobs() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let range = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("range: bytes=")
                            .map(str::to_owned)
                    })
                    .and_then(|r| {
                        let (a, b) = r.trim().split_once('-')?;
                        Some((
                            a.parse::<u64>().ok()?,
                            b.parse::<u64>().unwrap_or(FLAKY_BLOB_LEN - 1),
                        ))
                    });
                let _ = flaky_answer(&mut stream, &path, range);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn flaky_answer(
    s: &mut std::net::TcpStream,
    path: &str,
    range: Option<(u64, u64)>,
) -> std::io::Result<()> {
    let body = |n: u64| vec![b'x'; n as usize];
    if let Some(mode) = path.strip_prefix("/v2/").and_then(|p| p.split('/').next()) {
        return write!(
            s,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: /cdn/{mode}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    match (path, range) {
        (_, None) => {
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {FLAKY_BLOB_LEN}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n")?;
            s.write_all(&body(100_000))
        }
        ("/cdn/ignores-ranges", Some(_)) => {
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {FLAKY_BLOB_LEN}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n")?;
            s.write_all(&body(FLAKY_BLOB_LEN))
        }
        (_, Some((from, to))) => {
            write!(
                s,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{to}/{FLAKY_BLOB_LEN}\r\nETag: \"v2\"\r\nConnection: close\r\n\r\n",
                to - from + 1
            )?;
            s.write_all(&body(to - from + 1))
        }
    }
}

/// `GET /v2/cdn-hop/manifests/x` answers 307 to `/short` on `localhost` (another origin, as the CDN is);
/// everything else gets the short body of [`short_body`].
pub fn short_body_behind_redirect() -> String {
    raw_server_with_head(
        |s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/octet-stream\r\n\r\n0123456789");
        },
        |head, s, answer| {
            if head.starts_with("GET /v2/cdn-hop/manifests/x ") {
                let port = s.local_addr().unwrap().port();
                let _ = write!(
                    s,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{port}/short\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            } else {
                answer(s);
            }
        },
    )
}

/// Promises 10 bytes and sends them, followed by a whole second response the client never
/// asked for (response smuggling). Later requests on the same connection get a plain answer,
/// so a client that read the smuggled one as the answer to its next request would show it.
pub fn long_body() -> String {
    raw_server(|s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789\
HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Smuggled: yes\r\n\r\nsmuggled!!",
        );
        loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) != 1 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
        }
    })
}

/// Two `Content-Length` headers that disagree (RFC 9112 §6.3: unrecoverable framing error).
pub fn conflicting_lengths() -> String {
    raw_server(|s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n01234567890123456789",
        );
    })
}

/// A 401 with challenges that break the grammar in every way the parser has to survive.
pub fn malformed_challenges() -> String {
    raw_server(|s| {
        let challenges: [&[u8]; 8] = [
            b"Bearer realm=\"https://auth.example/token",
            b"Bearer realm=\"https://auth.example/token\",service=\"svc\" junk",
            b"Bearer ,,,=",
            b"Bearer realm=https://auth.example/token",
            b"bEaReR service=\"svc\",scope=\"repository:a/b:pull\",realm=\"https://auth.example/token\"",
            b"Bearer realm=\"https://auth.example/t\xc3\xb6ken\",service=\"\xff\"",
            b"Basic realm=\"unterminated",
            b"",
        ];
        let mut head =
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                .to_vec();
        for value in challenges {
            head.extend_from_slice(b"WWW-Authenticate: ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n{}");
        let _ = s.write_all(&head);
    })
}
