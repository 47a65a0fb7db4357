//! Blobs between plain sockets go by `splice(2)`: every byte arrives, in order, the
//! connection carries on after the body, the access line and the metrics count what was
//! spliced, and a TLS client takes the usual path.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use sha2::{Digest, Sha256};

use crate::{
    access_log::settled_lines,
    hubferry::{Hubferry, FOLLOW_LOCAL_REDIRECTS},
    operations::{get_text, sample},
    tls_listener, world,
};

const SPLICED: &str = "hubferry_response_body_spliced_bytes_total";

fn pull_token(w: &world::World, repo: &str) -> String {
    format!("Bearer {}", w.token(&[&format!("repository:{repo}:pull")]))
}

fn metric(hf: &Hubferry, name: &str) -> f64 {
    let (_, metrics) = get_text(&format!("{}/metrics", hf.admin_url.as_ref().unwrap()));
    sample(&metrics, name)
}

/// One response read off a kept-alive connection: its head, and exactly its Content-Length of
/// body, read `piece` bytes at a time.
fn read_response(stream: &mut TcpStream, piece: usize) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0; length];
    for part in body.chunks_mut(piece) {
        stream.read_exact(part).expect("the whole body");
    }
    (head, body)
}

fn get(stream: &mut TcpStream, addr: &str, path: &str, bearer: &str, accept: &str) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nAccept: {accept}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
}

/// A fast client and a slow one (small reads, small receive buffer: the client's socket is
/// full most of the time) each get the 100 MiB layer byte for byte over plain HTTP, and then a
/// manifest on the same connection: the body's length was counted right. The layer went by
/// `splice(2)`: all but what awc read with the response head, as the metric says; the access
/// line counts every byte.
#[test]
fn a_blob_between_plain_sockets_is_spliced_and_the_connection_carries_on() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &FOLLOW_LOCAL_REDIRECTS);
    let big = w.big_layer();
    let nginx = w.image("library/nginx");
    let bearer = pull_token(w, "library/big");
    let nginx_bearer = pull_token(w, "library/nginx");
    let blob = format!("/v2/library/big/blobs/{}", big.digest);
    let manifest = format!("/v2/library/nginx/manifests/{}", nginx.tag);

    for (piece, receive_buffer) in [(1 << 20, None), (4096, Some(16 * 1024))] {
        let spliced_before = metric(&hf, SPLICED);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let addr: std::net::SocketAddr = hf.addr.parse().unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();

        get(&mut stream, &hf.addr, &blob, &bearer, "*/*");
        let (head, body) = read_response(&mut stream, piece);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len() as u64, big.size);
        assert_eq!(format!("sha256:{:x}", Sha256::digest(&body)), big.digest);

        get(
            &mut stream,
            &hf.addr,
            &manifest,
            &nginx_bearer,
            world::DOCKER_MANIFEST,
        );
        let (head, body) = read_response(&mut stream, 4096);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, nginx.manifest);

        let spliced = metric(&hf, SPLICED) - spliced_before;
        assert!(
            spliced > big.size as f64 * 0.9 && spliced <= big.size as f64,
            "{spliced} of {} bytes spliced (reads of {piece})",
            big.size
        );
    }
    let lines = settled_lines(&hf, &blob);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in lines {
        assert!(
            line.contains(&format!(" 200 {} ", big.size)),
            "the access line counts every byte: {line}"
        );
    }
}

/// The same layer to an HTTP/1.1 client on the TLS listener is not spliced (TLS bytes cannot
/// be), and arrives whole.
#[test]
fn a_tls_client_takes_the_usual_path() {
    let w = world::plain();
    let pair = tls_listener::new_pair("splice");
    let (hf, tls_addr) = tls_listener::start(&pair.cert, &pair.key, &FOLLOW_LOCAL_REDIRECTS);
    let big = w.big_layer();
    let bearer = pull_token(w, "library/big");
    let out = std::process::Command::new(world::require_tool("curl"))
        .args(["-sS", "--http1.1", "--max-time", "120", "--cacert"])
        .arg(&pair.ca_cert)
        .args(["-H", &format!("Authorization: {bearer}")])
        .arg(format!(
            "https://{tls_addr}/v2/library/big/blobs/{}",
            big.digest
        ))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        format!("sha256:{:x}", Sha256::digest(&out.stdout)),
        big.digest
    );
    assert_eq!(metric(&hf, SPLICED), 0.0);
}
