//! The landing page: browsers asking for `/` get a page filled in with the
//! mirror's public URL and live status; registry clients still get the registry's answer. A
//! real browser (Debian's headless `chromium`) renders it: its DOM holds the set-up text, and
//! its screenshot is a page, not a blank.

use std::{io::Read, path::Path, process::Command};

use crate::{
    fakes,
    hubferry::{raw_get, Hubferry},
    world,
};

const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
const PUBLIC_URL: &str = "https://mirror.example.test";

#[test]
fn browsers_get_the_page_registry_clients_the_registry() {
    let w = world::plain();
    let hf = Hubferry::for_world(w, &["--public-url", PUBLIC_URL]);
    let res = raw_get(&hf.addr, "/", &[("Accept", BROWSER_ACCEPT)]);
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(res
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'"));
    let html = String::from_utf8(res.body).unwrap();
    for text in [
        "<code class=\"url\" id=\"mirror-url\">https://mirror.example.test</code>",
        "&quot;registry-mirrors&quot;: [&quot;https://mirror.example.test&quot;]",
        "[host.&quot;https://mirror.example.test&quot;]",
        "location = &quot;mirror.example.test&quot;",
        "Kubernetes nodes",
        &format!("<td>{}</td>", w.registry_url),
    ] {
        assert!(html.contains(text), "missing {text} in\n{html}");
    }

    // Without text/html, `/` is forwarded as the nginx config hubferry replaces forwards it:
    // the registry's own answer.
    let direct = raw_get(w.registry_host(), "/", &[]);
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let res = raw_get(&hf.addr, "/", &headers);
        assert_eq!(res.status, direct.status, "Accept: {accept:?}");
        assert_eq!(res.body, direct.body, "Accept: {accept:?}");
    }
    let log = hf.log_text();
    assert!(log.contains(r#""GET / HTTP/1.1" 200"#), "{log}");
}

#[test]
fn the_page_shows_live_status() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start(&[
        "--registry".into(),
        upstream,
        "--server-name".into(),
        "mirror.internal:5000".into(),
    ]);
    // Before any pull, no rate limit is known.
    let page = |hf: &Hubferry| {
        String::from_utf8(raw_get(&hf.addr, "/", &[("Accept", "text/html")]).body).unwrap()
    };
    assert!(page(&hf).contains("not seen yet"));
    // The fake upstream answers like Docker Hub: with its rate-limit headers.
    let res = raw_get(&hf.addr, "/v2/library/nginx/manifests/latest", &[]);
    assert_eq!(res.status, 200);
    // The figures are taken once the response is done, which may be just after it was read.
    world::wait_until(std::time::Duration::from_secs(10), || {
        page(&hf).contains("76 of 100 pulls left per 6 h")
    });
    let html = page(&hf);
    assert!(html.contains("76 of 100 pulls left per 6 h"), "{html}");
    assert!(!html.contains("<td>0 bytes</td>"), "{html}");
    // The Host (127.0.0.1:PORT) is not a server name: the page names the configured one.
    assert!(
        html.contains("[host.&quot;http://mirror.internal:5000&quot;]"),
        "{html}"
    );
    assert!(html.contains("insecure = true"));
    // Registry clients asking for `/` reach the upstream, as before.
    let res = raw_get(&hf.addr, "/", &[]);
    let echoed: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(echoed["path"], "/");
}

/// Headless Chromium, with everything that would reach the network switched off.
fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new(world::require_tool("chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn chromium_renders_the_page() {
    let upstream = fakes::upstream();
    let hf = Hubferry::start(&[
        "--registry".into(),
        upstream,
        "--public-url".into(),
        PUBLIC_URL.into(),
    ]);
    raw_get(&hf.addr, "/v2/library/nginx/manifests/latest", &[]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/", hf.url);

    let out = chromium(&dir.path().join("dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("<h1>Docker Hub mirror</h1>"),
        "chromium --dump-dom failed: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Text as the browser holds it: quotes are plain quotes in the DOM.
    for text in [
        r#"id="mirror-url">https://mirror.example.test</code>"#,
        r#""registry-mirrors": ["https://mirror.example.test"]"#,
        r#"[host."https://mirror.example.test"]"#,
        r#"location = "mirror.example.test""#,
        r#"- "https://mirror.example.test""#,
        "76 of 100 pulls left",
    ] {
        assert!(dom.contains(text), "missing {text} in the DOM:\n{dom}");
    }

    // Kept under target/tmp for a person to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("landing-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&dir.path().join("shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,1600")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = Png::decode(&std::fs::read(&shot).unwrap());
    assert_eq!((image.width, image.height), (1200, 1600));
    // Not blank: the background is one colour, the text and code blocks others.
    let background = image.pixel(0, 0);
    let differing = (0..image.height)
        .flat_map(|y| (0..image.width).map(move |x| (x, y)))
        .filter(|&(x, y)| image.pixel(x, y) != background)
        .count();
    let share = differing as f64 / f64::from(image.width * image.height);
    assert!(
        share > 0.05,
        "only {:.2}% of the screenshot is not background",
        share * 100.0
    );
    // The dark code blocks rendered (the page's only dark surfaces).
    let dark = (0..image.height)
        .flat_map(|y| (0..image.width).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b] = image.pixel(x, y);
            u16::from(r) + u16::from(g) + u16::from(b) < 150
        })
        .count();
    assert!(
        dark > 50_000,
        "the code blocks did not render ({dark} dark pixels)"
    );
}

/// Just enough of a PNG decoder for a browser's screenshot: 8-bit RGB or RGBA, not interlaced.
struct Png {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Png {
    fn decode(data: &[u8]) -> Png {
        assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let (mut at, mut header, mut compressed) = (8, None, Vec::new());
        while at + 8 <= data.len() {
            let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind = &data[at + 4..at + 8];
            let body = &data[at + 8..at + 8 + len];
            match kind {
                b"IHDR" => header = Some(body.to_vec()),
                b"IDAT" => compressed.extend_from_slice(body),
                b"IEND" => break,
                _ => {}
            }
            at += 12 + len;
        }
        let header = header.expect("IHDR");
        let width = u32::from_be_bytes(header[0..4].try_into().unwrap());
        let height = u32::from_be_bytes(header[4..8].try_into().unwrap());
        let (depth, colour, interlace) = (header[8], header[9], header[12]);
        assert!(depth == 8 && interlace == 0, "unexpected PNG: {header:?}");
        let channels = match colour {
            2 => 3,
            6 => 4,
            other => panic!("unexpected PNG colour type {other}"),
        };
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        let stride = width as usize * channels;
        assert_eq!(raw.len(), (stride + 1) * height as usize);
        let mut pixels = vec![0u8; stride * height as usize];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= channels {
                    pixels[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 {
                    pixels[(y - 1) * stride + x]
                } else {
                    0
                };
                let c = if x >= channels && y > 0 {
                    pixels[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    other => panic!("bad PNG filter {other}"),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        Png {
            width,
            height,
            channels,
            pixels,
        }
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
