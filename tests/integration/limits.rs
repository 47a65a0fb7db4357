//! Connection limits from config: the request-head timeout cuts a slowloris client, a worker
//! holds no more client connections than allowed, and the upstream pool is capped.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::{fakes, hubferry::Hubferry, world};

#[test]
fn a_trickled_request_head_is_cut_off() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start(&[
        "--registry".into(),
        upstream,
        "--request-head-timeout".into(),
        "1s".into(),
    ]);
    let mut stream = TcpStream::connect(&hf.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // ...and the rest of the head never comes.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow head was not cut"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[test]
fn a_worker_holds_at_most_max_connections() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start(&[
        "--registry".into(),
        upstream,
        "--workers".into(),
        "1".into(),
        "--max-connections".into(),
        "2".into(),
    ]);
    let request = format!("GET /v2/x/tags/list HTTP/1.1\r\nHost: {}\r\n\r\n", hf.addr);
    let served = |stream: &mut TcpStream| {
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200"
    };
    // Two kept-alive connections fill the worker.
    let mut first = TcpStream::connect(&hf.addr).unwrap();
    let mut second = TcpStream::connect(&hf.addr).unwrap();
    for s in [&mut first, &mut second] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(served(s));
    }
    // A third waits in the backlog, unserved...
    let mut third = TcpStream::connect(&hf.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    assert!(
        !served(&mut third),
        "a third connection was served beyond the limit"
    );
    // ...until one of the first two goes away.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 12];
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[test]
fn the_upstream_pool_is_capped() {
    let stalled = fakes::stalled_body();
    let hf = Hubferry::start(&[
        "--registry".into(),
        stalled,
        "--workers".into(),
        "1".into(),
        "--upstream-pool".into(),
        "1".into(),
        "--response-timeout".into(),
        "1s".into(),
    ]);
    // The first request takes the only upstream connection and keeps it (its body stalls).
    let mut first = TcpStream::connect(&hf.addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        first,
        "GET /v2/a/tags/list HTTP/1.1\r\nHost: {}\r\n\r\n",
        hf.addr
    )
    .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The second cannot get an upstream connection in time.
    let status = actix_rt::System::new().block_on(async {
        world::client(None)
            .get(format!("{}/v2/b/tags/list", hf.url))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 504);
}
