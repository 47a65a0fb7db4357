//! The fuzz targets of `src/fuzzing.rs` as property tests, so `make test` (and CI) runs a short
//! bounded fuzz of every parser that sees hostile input; `make fuzz` runs them for longer under
//! libFuzzer. 256 inputs per target by default; `PROPTEST_CASES=N` changes that.

use hubferry::fuzzing::{self, TARGETS};
use proptest::prelude::*;

/// Bytes the parsers care about: their delimiters, quotes, escapes, control characters and
/// non-ASCII, mixed with the words they look for, so generated input gets past the first check.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b" \t,=\";\\/:?&%+#@[]!'*.-_~".to_vec()),
        4 => b'a'..=b'z',
        1 => 0u8..=0x1f,
        1 => 0x80u8..=0xff,
        2 => any::<u8>(),
    ];
    let words = [
        "Bearer ",
        "bearer",
        "Basic ",
        "realm=",
        "service=",
        "scope=",
        "error=",
        "\"",
        "\\\"",
        ", ",
        "q=",
        "&n=",
        "&page=",
        "library/",
        "%2F",
        "%ff",
        "%",
        "+",
        "http://",
        "https://",
        "ftp://",
        "//",
        "../",
        "./",
        "?",
        "#",
        "[::1]",
        "127.0.0.1",
        "0x7f.1",
        "@",
        ":80",
        "xn--",
        "\u{e9}",
        "\u{0}",
        "\r\n",
        "/v2/",
        "registry.example",
    ];
    let piece = prop_oneof![
        prop::collection::vec(byte, 0..6),
        prop::sample::select(words.to_vec()).prop_map(|w| w.as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// Input for `fuzzing::image_policy` (a name, then allow and `!`deny patterns, one a line)
/// over the few characters that decide a glob match, so that names match often and in every
/// way: random bytes almost never make a valid pattern that matches anything.
fn image_lists_and_a_name() -> impl Strategy<Value = Vec<u8>> {
    let glob = prop::collection::vec(
        prop::sample::select(vec!["*", "**", "?", "/", "**/", "a", "b", ".", "-"]),
        1..7,
    )
    .prop_map(|pieces| pieces.concat());
    let upstream = prop::sample::select(vec!["", "", "ghcr.io/", "Quay.IO/", "localhost/"]);
    let pattern = (prop::bool::weighted(0.3), upstream, glob).prop_map(|(deny, upstream, glob)| {
        format!("{}{upstream}{glob}", if deny { "!" } else { "" })
    });
    let name = "[ab./-]{0,6}(/[ab./-]{0,6}){0,2}";
    (name, prop::collection::vec(pattern, 1..4)).prop_map(|(name, patterns)| {
        std::iter::once(name)
            .chain(patterns)
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    })
}

proptest! {
    // ProptestConfig::default() reads PROPTEST_CASES.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn no_target_panics_on_hostile_input(data in hostile_bytes()) {
        for (_, target) in TARGETS {
            target(&data);
        }
    }

    #[test]
    fn no_target_panics_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
        for (_, target) in TARGETS {
            target(&data);
        }
    }

    #[test]
    fn image_lists_decide_as_the_reference_glob_matcher(data in image_lists_and_a_name()) {
        fuzzing::image_policy(&data);
    }
}
