//! Text log lines a client cannot forge. Request paths, token realm ids, OAuth2 scopes and user
//! names end up in log messages; a CR or LF among them would start a line of the client's
//! choosing (a fake access record), and an ESC would drive the terminal of whoever reads the log.
//! The text formatter (`logging::format`) writes every message through [`write_escaped`] and
//! every key-value through [`write_escaped_word`], so every value of every record is covered in
//! one place; the JSON format is escaped by serde_json.

use std::{fmt, io};

/// Writes `message` to `out` with every control character escaped: C0 (`\r`, `\n`, `\t`,
/// others as `\x1b`), DEL (`\x7f`) and C1 (`\u{85}`), plus U+2028 and U+2029, which some
/// viewers break lines at. Everything else, backslashes included, goes out as it is: a text log
/// is read by people, and JSON is the format to use for an exact copy.
///
/// Runs once per request (the access line): the message is formatted straight into `out`, each
/// piece scanned once and copied whole unless it holds a control character.
pub fn write_escaped(out: &mut impl io::Write, message: fmt::Arguments<'_>) -> io::Result<()> {
    write_with(out, message, false)
}

/// As [`write_escaped`], for the value of a `key=value` field: spaces are written as `_` too, so
/// a value is one word and the next space always starts the next field (a value holding
/// ` status=200` cannot pass for a field of its own).
pub fn write_escaped_word(out: &mut impl io::Write, value: fmt::Arguments<'_>) -> io::Result<()> {
    write_with(out, value, true)
}

/// As [`write_escaped`] (or [`write_escaped_word`] if `word`), for text at hand: no
/// formatting machinery in between.
pub fn write_str_escaped(out: &mut impl io::Write, text: &str, word: bool) -> io::Result<()> {
    escape(text, word, |piece| out.write_all(piece.as_bytes()))
}

fn write_with(out: &mut impl io::Write, message: fmt::Arguments<'_>, word: bool) -> io::Result<()> {
    let mut escaping = Escaping {
        out,
        word,
        error: None,
    };
    match fmt::write(&mut escaping, message) {
        Ok(()) => Ok(()),
        Err(fmt::Error) => Err(escaping
            .error
            .unwrap_or_else(|| io::Error::other("a log message failed to format"))),
    }
}

struct Escaping<'a, W> {
    out: &'a mut W,
    /// Spaces as `_` (see [`write_escaped_word`]).
    word: bool,
    /// Why the last write failed, since `fmt::Write` can only say that it did.
    error: Option<io::Error>,
}

impl<W: io::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(text, self.word, |piece| {
            self.out.write_all(piece.as_bytes())
        })
        .map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

/// Hands `text` to `emit` in pieces: runs without control characters as they are, each control
/// character as its escape (and, for a `word`, each space as `_`).
fn escape<E>(text: &str, word: bool, mut emit: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let bytes = text.as_bytes();
    let lowest = if word { 0x21 } else { 0x20 };
    // Nearly every piece is printable ASCII: tell so a block of bytes at a time (the fold has
    // no early exit, so it vectorises), and hand it on whole.
    let printable = bytes.chunks(32).all(|block| {
        block
            .iter()
            .fold(true, |ok, &b| ok & (lowest..0x7f).contains(&b))
    });
    if printable {
        return emit(text);
    }
    let mut clean_from = 0;
    let mut at = 0;
    while at < bytes.len() {
        // UTF-8: C1 is 0xC2 0x80..=0x9F, U+2028 and U+2029 are 0xE2 0x80 0xA8/0xA9. No other
        // character's encoding holds these sequences, so a byte scan is exact.
        let len = match bytes[at] {
            b' ' if word => {
                if clean_from < at {
                    emit(&text[clean_from..at])?;
                }
                emit("_")?;
                at += 1;
                clean_from = at;
                continue;
            }
            0x00..=0x1f | 0x7f => 1,
            0xc2 if matches!(bytes.get(at + 1), Some(0x80..=0x9f)) => 2,
            0xe2 if bytes.get(at + 1) == Some(&0x80)
                && matches!(bytes.get(at + 2), Some(0xa8 | 0xa9)) =>
            {
                3
            }
            _ => {
                at += 1;
                continue;
            }
        };
        if clean_from < at {
            emit(&text[clean_from..at])?;
        }
        let control = text[at..at + len].chars().next().unwrap_or_default();
        let mut buf = [0u8; 10];
        emit(escaped(control, &mut buf))?;
        at += len;
        clean_from = at;
    }
    if clean_from < bytes.len() {
        emit(&text[clean_from..])?;
    }
    Ok(())
}

/// How one control character is written: `\r`, `\n`, `\t`, `\x1b` below U+0080, `\u{85}` above.
fn escaped(control: char, buf: &mut [u8; 10]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match control {
        '\r' => return "\\r",
        '\n' => return "\\n",
        '\t' => return "\\t",
        _ => {}
    }
    let code = u32::from(control);
    let len = if code < 0x80 {
        buf[..2].copy_from_slice(b"\\x");
        buf[2] = HEX[(code >> 4) as usize];
        buf[3] = HEX[(code & 0xf) as usize];
        4
    } else {
        buf[..3].copy_from_slice(b"\\u{");
        let digits = (32 - code.leading_zeros()).div_ceil(4) as usize;
        for i in 0..digits {
            buf[3 + i] = HEX[((code >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        buf[3 + digits] = b'}';
        4 + digits
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("\\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape_text(text: &str) -> String {
        let mut out = Vec::new();
        write_escaped(&mut out, format_args!("{text}")).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_text_goes_out_as_it_is() {
        for text in [
            "",
            r#"127.0.0.1 "GET /v2/ HTTP/1.1" 401 0 0.412ms upstream=registry redirects=0"#,
            "naïve café ✓ 日本語 \\ \" ' \u{a0} \u{100} \u{2027} \u{202a}",
        ] {
            assert_eq!(escape_text(text), text);
        }
    }

    #[test]
    fn control_characters_are_escaped_readably() {
        assert_eq!(escape_text("a\r\nb"), r"a\r\nb");
        assert_eq!(escape_text("\ttab"), r"\ttab");
        assert_eq!(escape_text("\u{1b}[2J"), r"\x1b[2J");
        assert_eq!(escape_text("\0\u{7}\u{7f}"), r"\x00\x07\x7f");
        assert_eq!(
            escape_text("x\u{85}y\u{9b}z\u{80}\u{9f}"),
            r"x\u{85}y\u{9b}z\u{80}\u{9f}"
        );
        assert_eq!(escape_text("a\u{2028}b\u{2029}"), r"a\u{2028}b\u{2029}");
        assert_eq!(escape_text("é\u{1b}é"), r"é\x1bé");
    }

    #[test]
    fn every_control_character_is_caught_and_nothing_else() {
        // Every character that is, or shares a first byte with, one that is escaped; then a few.
        let high = [0xfeff, 0xfffd, 0x1f600, 0x10ffff];
        for c in (0..0x3000).chain(high).filter_map(char::from_u32) {
            let out = escape_text(&c.to_string());
            let control = c.is_control() || c == '\u{2028}' || c == '\u{2029}';
            assert_eq!(out != c.to_string(), control, "{c:?} -> {out:?}");
            assert!(!out.chars().any(|o| o.is_control()), "{c:?} -> {out:?}");
        }
    }

    #[test]
    fn a_forged_access_line_stays_on_its_line() {
        let id =
            "x\r\n[2025-01-01T00:00:00Z INFO  hubferry::access] 6.6.6.6 \"GET / HTTP/1.1\" 200";
        let mut out = Vec::new();
        write_escaped(
            &mut out,
            format_args!("upstream docker.io named no token realm {id}"),
        )
        .unwrap();
        assert!(!out.contains(&b'\n') && !out.contains(&b'\r'));
    }

    #[test]
    fn a_word_has_no_spaces_and_no_control_characters() {
        let word = |text: &str| {
            let mut out = Vec::new();
            write_escaped_word(&mut out, format_args!("{text}")).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(word("blob CDN"), "blob_CDN");
        assert_eq!(word("docker.io"), "docker.io");
        assert_eq!(word(" x status=200\r\n"), "_x_status=200\\r\\n");
        assert_eq!(word("a \r\n b"), r"a_\r\n_b");
        assert_eq!(word("é \u{1b}"), r"é_\x1b");
    }

    #[test]
    fn write_errors_are_reported() {
        struct Broken;
        impl io::Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_escaped(&mut Broken, format_args!("a\nb")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
