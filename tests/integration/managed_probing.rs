//! Managed mode probed as an attacker would: who exists, how long passwords are read, what a
//! forged `Host` can write into a challenge, which paths reach the upstream without a token,
//! what a mount may read, and a flood of wrong passwords at `/token`. Plus the one thing a
//! logged-in user must still be able to do: `docker search`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use base64::Engine as _;

use crate::{
    hubferry::{raw_get, raw_get_from, Hubferry, RawResponse},
    world::{self, World},
};

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-password";
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bob-password";
const STATIC_TOKEN: &str = "ci-static-token-0123456789";

/// An htpasswd file of `(user, password)` at bcrypt `cost`, as `htpasswd -B -C cost` writes it.
fn htpasswd(users: &[(&str, &str)], cost: u32) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    world::remove_at_exit(dir.clone());
    let path = dir.join("htpasswd");
    let lines: String = users
        .iter()
        .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, cost).unwrap()))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path
}

/// A managed hubferry before the world (no upstream account: public images only), closed to
/// anonymous clients, with `users` and `extra` flags.
fn managed(w: &World, users: &[(&str, &str)], cost: u32, extra: &[&str]) -> Hubferry {
    let file = htpasswd(users, cost);
    let mut args = vec![
        "--auth-mode",
        "managed",
        "--anonymous",
        "false",
        "--htpasswd",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut full = Hubferry::world_args(w, &w.registry_url);
    full.extend(args.iter().map(|s| s.to_string()));
    Hubferry::start_with_env(&full, &[("HUBFERRY_AUTH__TOKENS", STATIC_TOKEN)])
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn token_request(hf: &Hubferry, source: &str, user: &str, password: &str) -> RawResponse {
    let authorization = basic(user, password);
    raw_get_from(
        source,
        &hf.addr,
        "/token?service=hubferry&scope=repository:library/alpine:pull",
        &[("Authorization", authorization.as_str())],
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// What the world's registry received with `marker` in it, once it has logged everything sent
/// so far: a request of our own is sent straight to it, and its log is read until that shows.
async fn registry_saw(w: &World, marker: &str) -> Vec<String> {
    let flush = format!("/v2/flush/{marker}/manifests/x");
    world::client(None)
        .get(format!("{}{flush}", w.registry_url))
        .send()
        .await
        .unwrap();
    let seen = world::wait_for(Duration::from_secs(10), || {
        let seen: Vec<String> = w
            .registry_requests()
            .into_iter()
            .map(|r| r.uri)
            .filter(|uri| uri.contains(marker))
            .collect();
        seen.contains(&flush).then_some(seen)
    })
    .unwrap_or_else(|| panic!("the registry never logged {flush}"));
    seen.into_iter().filter(|uri| *uri != flush).collect()
}

#[test]
fn an_unknown_user_name_takes_as_long_to_refuse_as_a_wrong_password() {
    let w = world::plain();
    // A realistic cost (`htpasswd -B -C 10`); each try from its own address, so that the
    // failure limits stay out of the way.
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD)], 10, &[]);
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..7 {
        let started = Instant::now();
        let source = format!("127.0.3.{}", 1 + 2 * i);
        let res = token_request(&hf, &source, &format!("nobody{i}"), "guess");
        unknown.push(started.elapsed());
        assert_eq!(res.status, 401);
        let started = Instant::now();
        let source = format!("127.0.3.{}", 2 + 2 * i);
        let res = token_request(&hf, &source, ALICE, "guess");
        wrong.push(started.elapsed());
        assert_eq!(res.status, 401);
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    // Without a dummy check an unknown name is refused in well under a millisecond and a
    // wrong password after a full bcrypt check (tens of milliseconds): a 100× difference.
    assert!(
        unknown * 3 >= wrong,
        "unknown name refused in {unknown:?}, wrong password in {wrong:?}: the time tells which names exist"
    );
}

#[test]
fn a_password_is_read_past_bcrypts_72_bytes_or_refused() {
    let w = world::plain();
    let long = "L".repeat(80);
    let hf = managed(w, &[(ALICE, &long)], 4, &[]);
    // bcrypt itself reads 72 bytes: any suffix after them would do.
    let mut guess = long[..72].to_owned();
    guess.push_str("anything");
    assert_eq!(token_request(&hf, "127.0.0.1", ALICE, &guess).status, 401);
    assert_eq!(token_request(&hf, "127.0.0.1", ALICE, &long).status, 401);
}

#[test]
fn a_forged_host_cannot_add_parameters_to_the_challenge() {
    let w = world::plain();
    // No public_url, no server_names: the realm comes from the request's Host.
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD)], 4, &[]);
    let forged = r#"mirror",scope="repository:evil/x:push,pull",x=""#;
    let challenge = challenge_for_host(&hf, forged);
    let challenge = challenge.as_str();
    let params = challenge_params(challenge);
    let names: Vec<_> = params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["realm", "service", "scope"], "{challenge}");
    assert_eq!(params[2].1, "repository:library/alpine:pull", "{challenge}");
    assert!(
        params[0].1.contains("evil"),
        "the realm holds the whole Host"
    );
}

/// The challenge a manifest request with `Host: host` gets, read off a raw socket (so the
/// `Host` goes exactly as written).
fn challenge_for_host(hf: &Hubferry, host: &str) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(&hf.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "GET /v2/library/alpine/manifests/latest HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("www-authenticate")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no challenge in {answer}"))
}

/// The parameters of a Bearer challenge, reading quoted strings as RFC 9110 does.
fn challenge_params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge.strip_prefix("Bearer ").expect(challenge);
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{challenge}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap()),
                '"' => break,
                c => value.push(c),
            }
        }
        params.push((name.trim().to_owned(), value));
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(other) => panic!("{other:?} after a parameter of {challenge}"),
        }
    }
    params
}

#[actix_rt::test]
async fn nothing_reaches_the_upstream_before_admission() {
    let w = world::plain();
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD)], 4, &[]);
    let marker = format!("admission{}", std::process::id());
    for path in [
        format!("//v2/library/alpine/manifests/{marker}"),
        format!("/%762/library/alpine/manifests/{marker}"),
        format!("/{marker}/anything"),
        format!("/v1/{marker}"),
    ] {
        let res = raw_get(&hf.addr, &path, &[]);
        assert!(matches!(res.status, 400 | 401), "{path}: {}", res.status);
    }
    assert_eq!(registry_saw(w, &marker).await, Vec::<String>::new());
}

#[actix_rt::test]
async fn denied_images_are_not_reachable_by_another_spelling_of_the_path() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &["--deny-image", "library/alpine"]);
    let marker = format!("spelling{}", std::process::id());
    for path in [
        format!("//v2/library/alpine/manifests/{marker}"),
        format!("/%762/library/alpine/manifests/{marker}"),
        format!("/V2/library/alpine/manifests/{marker}"),
    ] {
        let res = raw_get(&hf.addr, &path, &[]);
        // 400: refused as ambiguous; 403: read as the registry API path it spells, and denied.
        assert!(matches!(res.status, 400 | 403), "{path}: {}", res.status);
    }
    assert_eq!(registry_saw(w, &marker).await, Vec::<String>::new());
}

#[actix_rt::test]
async fn a_mount_cannot_read_from_a_repository_this_mirror_does_not_serve() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &["--deny-image", "private/*", "--library", "true"]);
    let client = world::client(None);
    let digest = &w.image("private/secret").blobs[0].digest;
    let marker = format!("mount{}", std::process::id());
    for from in ["private/secret", "private%2Fsecret"] {
        let mut res = client
            .post(format!(
                "{}/v2/library/alpine/blobs/uploads/?mount={digest}&from={from}&m={marker}",
                hf.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "from={from}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
    }
    // Docker Hub's `library/` rule applies to `from` as to the name.
    let hf = Hubferry::for_world(w, &["--deny-image", "library/nginx", "--library", "true"]);
    let res = client
        .post(format!(
            "{}/v2/alpine/blobs/uploads/?mount={digest}&from=nginx&m={marker}",
            hf.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(registry_saw(w, &marker).await, Vec::<String>::new());
}

#[actix_rt::test]
async fn docker_search_works_with_the_login_docker_sends() {
    let w = world::plain();
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD)], 4, &[]);
    let client = world::client(None);
    let search = format!("{}/v1/search?q=alpine&n=5", hf.url);
    // dockerd sends the stored login as Basic credentials, and `X-Docker-Token: true`.
    for (authorization, status) in [
        (basic(ALICE, ALICE_PASSWORD), 200),
        (basic("anyone", STATIC_TOKEN), 200),
        (basic(ALICE, "wrong"), 401),
    ] {
        let mut res = client
            .get(&search)
            .insert_header(("Authorization", authorization.as_str()))
            .insert_header(("X-Docker-Token", "true"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{authorization}");
        if status == 200 {
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["query"], "alpine");
        }
    }
    let res = client.get(&search).send().await.unwrap();
    assert_eq!(res.status(), 401);
}

/// Hubferry's thread count now.
fn threads(hf: &Hubferry) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", hf.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_wrong_passwords_neither_burns_the_cpu_nor_keeps_others_out() {
    let w = world::plain();
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD), (BOB, BOB_PASSWORD)], 8, &[]);
    // Once a login has been checked, every thread hubferry needs for it exists.
    assert_eq!(
        token_request(&hf, "127.0.0.3", BOB, BOB_PASSWORD).status,
        200
    );
    let threads_before = threads(&hf);
    // 300 concurrent guesses from one address.
    let attack: Vec<_> = (0..300)
        .map(|i| {
            let addr = hf.addr.clone();
            std::thread::spawn(move || {
                let authorization = basic(ALICE, &format!("guess{i}"));
                let res = raw_get_from(
                    "127.0.0.1",
                    &addr,
                    "/token?service=hubferry",
                    &[("Authorization", authorization.as_str())],
                );
                (res.status, res.header("retry-after").map(str::to_owned))
            })
        })
        .collect();
    // While they run, bob logs in from elsewhere.
    let started = Instant::now();
    let bob = token_request(&hf, "127.0.0.2", BOB, BOB_PASSWORD);
    let took = started.elapsed();
    let peak_threads = threads(&hf);
    assert_eq!(bob.status, 200);
    assert!(
        took < Duration::from_secs(1),
        "a valid login took {took:?} during the flood"
    );
    let results: Vec<_> = attack.into_iter().map(|t| t.join().unwrap()).collect();
    let checked = results.iter().filter(|(s, _)| *s == 401).count();
    let limited: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        checked <= 10,
        "{checked} guesses were checked (the burst is 10)"
    );
    assert_eq!(checked + limited.len(), 300, "{results:?}");
    assert!(limited.iter().all(|(_, retry)| retry.is_some()));
    // A thread per check grew it by hundreds; a bounded pool by a few at most.
    assert!(
        peak_threads <= threads_before + 16,
        "hubferry grew from {threads_before} to {peak_threads} threads"
    );

    // Guesses at one name from many addresses run into that name's limit.
    let statuses: Vec<u16> = (0..12)
        .map(|i| token_request(&hf, &format!("127.0.0.{}", 10 + i), "carol", "guess").status)
        .collect();
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
}

#[test]
fn password_checks_beyond_the_queue_are_refused_not_queued() {
    let w = world::plain();
    let hf = managed(w, &[(ALICE, ALICE_PASSWORD)], 10, &[]);
    // Many addresses, one guess each: the failure limits do not stop them, the queue does.
    let guesses: Vec<_> = (0..120)
        .map(|i| {
            let addr = hf.addr.clone();
            std::thread::spawn(move || {
                let source = format!("127.0.{}.{}", 1 + i / 200, 2 + i % 200);
                let authorization = basic(&format!("user{i}"), "guess");
                let res = raw_get_from(
                    &source,
                    &addr,
                    "/token?service=hubferry",
                    &[("Authorization", authorization.as_str())],
                );
                (res.status, res.header("retry-after").map(str::to_owned))
            })
        })
        .collect();
    let results: Vec<_> = guesses.into_iter().map(|t| t.join().unwrap()).collect();
    let busy: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        !busy.is_empty(),
        "every one of 120 concurrent checks was queued"
    );
    assert!(busy.iter().all(|(_, retry)| retry.is_some()));
    assert!(
        results.iter().all(|(s, _)| matches!(s, 401 | 503)),
        "{results:?}"
    );
}
