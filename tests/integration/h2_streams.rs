//! HTTP/2 stream bounds, with an h2 client over TLS: hubferry advertises
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and refuses the streams of a client that ignores it, so one
//! connection cannot hold more blob downloads (upstream connections, buffers) than allowed.

use std::{
    cell::Cell,
    future::{poll_fn, Future},
    path::Path,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use h2::{client::SendRequest, Reason};

use crate::hubferry::FOLLOW_LOCAL_REDIRECTS;
use crate::{
    hubferry::Hubferry,
    world::{self, TlsFiles},
};

/// hubferry for the plain world with a TLS listener; returns it, the listener's address and
/// the test CA.
fn start(extra: &[&str]) -> (Hubferry, String, TlsFiles) {
    let dir = tempfile::Builder::new()
        .prefix("hubferry-h2-")
        .tempdir()
        .unwrap()
        .keep();
    world::remove_at_exit(dir.clone());
    let tls = world::tls_files(&dir);
    let tls_addr = format!("127.0.0.1:{}", world::free_port());
    let mut args = vec![
        "--tls-listen",
        &tls_addr,
        "--tls-cert",
        tls.cert.to_str().unwrap(),
        "--tls-key",
        tls.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let hf = Hubferry::for_world(world::plain(), &args);
    assert!(
        world::wait_for_port(&tls_addr, Duration::from_secs(10)),
        "no TLS listener on {tls_addr}; log:\n{}",
        hf.log_text()
    );
    (hf, tls_addr, tls)
}

/// An HTTP/2 connection to `addr`, driven in the background; the cell holds the
/// `SETTINGS_MAX_CONCURRENT_STREAMS` the server advertised (`usize::MAX` until it says one).
async fn connect(addr: &str, ca: &Path) -> (SendRequest<Bytes>, Rc<Cell<usize>>) {
    let mut config = world::rustls_config(ca);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = actix_rt::net::TcpStream::connect(addr).await.unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "hubferry did not choose HTTP/2"
    );
    let (send, mut connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let advertised = Rc::new(Cell::new(usize::MAX));
    let seen = advertised.clone();
    actix_rt::spawn(async move {
        let _ = poll_fn(|cx| {
            let polled = Pin::new(&mut connection).poll(cx);
            seen.set(connection.max_concurrent_send_streams());
            polled
        })
        .await;
    });
    (send, advertised)
}

fn open_descriptors(hf: &Hubferry) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", hf.child.id()))
        .unwrap()
        .count()
}

#[test]
fn hubferry_advertises_100_streams_per_connection_by_default() {
    let (_hf, addr, tls) = start(&[]);
    actix_rt::System::new().block_on(async {
        let (send, advertised) = connect(&addr, &tls.ca_cert).await;
        // The server's SETTINGS come first on the connection; one answered request is after it.
        let (response, _) = send
            .clone()
            .send_request(
                http::Request::get(format!("https://{addr}/v2/_catalog"))
                    .body(())
                    .unwrap(),
                true,
            )
            .unwrap();
        let response = actix_rt::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(advertised.get(), 100);
    });
}

/// One connection opens 200 blob downloads at once, before it has read the server's SETTINGS
/// (as a client that ignores them does). With `--h2-max-streams 10`, at most 10 are served,
/// the rest refused with `REFUSED_STREAM` (safe to retry: RFC 9113 §8.7), and hubferry's open
/// descriptors grow by what 10 downloads need, not 200.
#[test]
fn one_connection_cannot_hold_more_streams_than_allowed() {
    const LIMIT: usize = 10;
    const OPENED: usize = 200;
    let limit = LIMIT.to_string();
    let (hf, addr, tls) =
        start(&[&["--h2-max-streams", &limit], &FOLLOW_LOCAL_REDIRECTS[..]].concat());
    let world = world::plain();
    let blob = world.big_layer().digest.clone();
    let token = format!("Bearer {}", world.token(&["repository:library/big:pull"]));
    let before = open_descriptors(&hf);
    actix_rt::System::new().block_on(async {
        let (mut send, advertised) = connect(&addr, &tls.ca_cert).await;
        // Every request is sent before the connection task reads anything: the client still
        // believes it may open streams without limit.
        let responses: Vec<_> = (0..OPENED)
            .map(|_| {
                let request =
                    http::Request::get(format!("https://{addr}/v2/library/big/blobs/{blob}"))
                        .header("authorization", &token)
                        .body(())
                        .unwrap();
                send.send_request(request, true).expect("send").0
            })
            .collect();
        let mut served = Vec::new();
        let mut refused = 0;
        for response in responses {
            match actix_rt::time::timeout(Duration::from_secs(30), response)
                .await
                .expect("every stream is answered or refused")
            {
                // Kept open, unread: the download holds its upstream connection.
                Ok(response) => served.push(response),
                Err(err) if err.reason() == Some(Reason::REFUSED_STREAM) => refused += 1,
                Err(err) => panic!("stream failed otherwise: {err}"),
            }
        }
        assert!(
            !served.is_empty() && served.len() <= LIMIT,
            "{} streams served at once",
            served.len()
        );
        assert_eq!(served.len() + refused, OPENED);
        for response in &served {
            assert_eq!(response.status(), 200);
        }
        // Each served download holds a CDN connection, and its registry request may have left
        // an idle one in the pool: two per stream, and a few for the listener's own. Twice
        // that leaves room for a busy machine's timing (sockets still closing) and still tells
        // 10 downloads from the 200 (some 400 descriptors) an unbounded connection opens.
        let during = open_descriptors(&hf);
        assert!(
            during <= before + 4 * LIMIT + 10,
            "descriptors went from {before} to {during}"
        );
        assert_eq!(advertised.get(), LIMIT);
    });
}
