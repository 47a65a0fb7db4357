//! The types a setting's value can have. Each one parses the text that environment variables
//! and flags give; TOML's native numbers and booleans are read as their text, so `workers = 4`
//! and `HUBFERRY_WORKERS=4` go through the same check. An unset key without a default reads as
//! the empty text, which the types that may be off (a listener, a path) take for "off".

use std::{fmt, marker::PhantomData, net::SocketAddr, path::PathBuf, time::Duration};

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use url::Url;

use super::LogFormat;
use crate::{
    auth::users::Secret,
    net::client_addr::Cidr,
    net::origin::ServerName,
    policy::images::Pattern,
    upstream::proxy::{Bypass, ProxyChoice},
};

/// A value type of a setting: what it is parsed from, and what its problems say.
pub trait Leaf: Sized {
    /// What a value looks like, for the message when a table is given where a value belongs.
    const EXPECTED: &'static str;
    /// The value written as `text`, or the problem with it (the key is added by the caller).
    fn parse(text: &str) -> Result<Self, String>;
}

struct LeafVisitor<T>(PhantomData<T>);

impl<T: Leaf> LeafVisitor<T> {
    fn parse<E: de::Error>(text: &str) -> Result<T, E> {
        T::parse(text).map_err(E::custom)
    }
}

impl<T: Leaf> Visitor<'_> for LeafVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        Self::parse(text)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<T, E> {
        Self::parse(&value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Self::parse(&value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Self::parse(&value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        Self::parse(&value.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Self::parse("")
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Self::parse("")
    }
}

macro_rules! deserialize_leaf {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(LeafVisitor::<Self>(PhantomData))
            }
        }
    )*};
}

deserialize_leaf!(
    Fraction,
    Listen,
    Bool,
    Span,
    UpstreamUrl,
    PublicUrl,
    FilePath,
    Item,
    LogFormat,
    AuthMode,
    MaxStreams,
    AcmeDomain,
    AcmeDirectory,
    AcmeChallenge,
);

/// A listen address, or `None` for `off` or empty (the listener is switched off).
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub Option<SocketAddr>);

impl Leaf for Listen {
    const EXPECTED: &'static str = "an address like 0.0.0.0:5000, or off";
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        text.parse()
            .map(|addr| Listen(Some(addr)))
            .map_err(|_| format!("'{text}' is not an address like 0.0.0.0:5000 (or off)"))
    }
}

/// Largest value of a `usize` setting: the type's own limit, not a policy.
pub const USIZE: u64 = usize::MAX as u64;
/// Largest value of a `u32` setting.
pub const U32: u64 = u32::MAX as u64;

/// A whole number from `MIN` to `MAX`; `MAX` is [`USIZE`] or [`U32`] when only the type
/// bounds it.
#[derive(Debug, Clone, Copy)]
pub struct Count<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Count<MIN, MAX> {
    pub fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Only for settings declared with `MAX` at most [`U32`].
    pub fn u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }
}

impl<const MIN: u64, const MAX: u64> Leaf for Count<MIN, MAX> {
    const EXPECTED: &'static str = "a whole number";
    fn parse(text: &str) -> Result<Self, String> {
        let unbounded = MAX == USIZE || MAX == U32;
        let range = match (unbounded, MIN) {
            (true, 0) => "(0 for no limit)".to_owned(),
            (true, _) => format!("of at least {MIN}"),
            (false, _) => format!("from {MIN} to {MAX}"),
        };
        match text.trim().parse::<u64>() {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(Count(n)),
            Ok(n) if n > MAX && unbounded => Err(format!("'{text}' is more than {MAX}")),
            _ => Err(format!("'{text}' is not a whole number {range}")),
        }
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LeafVisitor::<Self>(PhantomData))
    }
}

/// A fraction from 0 to 1 (`0.1`).
#[derive(Debug, Clone, Copy)]
pub struct Fraction(pub f64);

impl Leaf for Fraction {
    const EXPECTED: &'static str = "a fraction from 0 to 1, such as 0.1";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(Fraction(f)),
            _ => Err(format!(
                "'{text}' is not a fraction from 0 to 1, such as 0.1"
            )),
        }
    }
}

/// `true` or `false` (any case); not `yes`, `1` or `on`, which the `config` crate would take.
#[derive(Debug, Clone, Copy)]
pub struct Bool(pub bool);

impl Leaf for Bool {
    const EXPECTED: &'static str = "true or false";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Bool(true)),
            "false" => Ok(Bool(false)),
            _ => Err(format!("'{text}' is not true or false")),
        }
    }
}

/// A duration longer than zero, written as humantime reads it (`10s`, `500ms`, `1m30s`).
#[derive(Debug, Clone, Copy)]
pub struct Span(pub Duration);

impl Leaf for Span {
    const EXPECTED: &'static str = "a duration like 10s, 500ms or 2m";
    fn parse(text: &str) -> Result<Self, String> {
        let duration = humantime::parse_duration(text.trim())
            .map_err(|_| format!("'{text}' is not a duration like 10s, 500ms or 2m"))?;
        if duration.is_zero() {
            return Err("must be longer than zero".into());
        }
        Ok(Span(duration))
    }
}

/// An upstream base URL (see [`parse_upstream_url`]).
#[derive(Debug, Clone)]
pub struct UpstreamUrl(pub Url);

impl Leaf for UpstreamUrl {
    const EXPECTED: &'static str = "an http:// or https:// URL";
    fn parse(text: &str) -> Result<Self, String> {
        parse_upstream_url(text).map(UpstreamUrl)
    }
}

/// The origin clients reach the mirror at; `None` when empty.
#[derive(Debug, Clone)]
pub struct PublicUrl(pub Option<Url>);

impl Leaf for PublicUrl {
    const EXPECTED: &'static str = "an origin such as https://mirror.example.com";
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(PublicUrl(None));
        }
        // Docker clients only accept a mirror at the root of an origin.
        let url = parse_http_url(text)?;
        if url.path() != "/" {
            return Err(format!(
                "'{text}' must be an origin such as https://mirror.example.com, without a path"
            ));
        }
        Ok(PublicUrl(Some(url)))
    }
}

/// A file's path; `None` when empty. Whether the file exists is checked where it is read.
#[derive(Debug, Clone, Default)]
pub struct FilePath(pub Option<PathBuf>);

impl Leaf for FilePath {
    const EXPECTED: &'static str = "a file's path";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(FilePath((!text.is_empty()).then(|| PathBuf::from(text))))
    }
}

/// A value that may be left empty: `None` when the text is empty (or the key unset).
#[derive(Debug, Clone, Copy)]
pub struct Blank<T>(pub Option<T>);

impl<T: Leaf> Leaf for Blank<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Blank(None));
        }
        T::parse(text).map(|value| Blank(Some(value)))
    }
}

impl<'de, T: Leaf> Deserialize<'de> for Blank<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LeafVisitor::<Self>(PhantomData))
    }
}

impl Leaf for String {
    const EXPECTED: &'static str = "a string";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

/// One item of a [`List`], as written.
struct Item(String);

impl Leaf for Item {
    const EXPECTED: &'static str = "a string";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Item(text.to_owned()))
    }
}

/// A list setting: a TOML array, or one string with commas between the items (how environment
/// variables and flags give it). Items are trimmed and empty ones left out.
#[derive(Debug, Clone)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T: Leaf> List<T> {
    fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(T::parse)
            .collect::<Result<_, _>>()
            .map(List)
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Leaf> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<List<T>, E> {
        List::parse(text.split(',')).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
        Ok(List(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(Item(item)) = seq.next_element()? {
            items.push(item);
        }
        List::parse(items.iter().map(String::as_str)).map_err(de::Error::custom)
    }
}

impl<'de, T: Leaf> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

impl Leaf for ServerName {
    const EXPECTED: &'static str = "a host name";
    fn parse(text: &str) -> Result<Self, String> {
        ServerName::parse(text)
    }
}

impl Leaf for Cidr {
    const EXPECTED: &'static str = "a network (CIDR) or address";
    fn parse(text: &str) -> Result<Self, String> {
        Cidr::parse(text)
    }
}

impl Leaf for Pattern {
    const EXPECTED: &'static str = "an image pattern";
    fn parse(text: &str) -> Result<Self, String> {
        Pattern::parse(text)
    }
}

impl Leaf for ProxyChoice {
    const EXPECTED: &'static str =
        "a proxy URL such as http://proxy.corp:3128 or socks5h://127.0.0.1:1080, or none";
    fn parse(text: &str) -> Result<Self, String> {
        ProxyChoice::parse(text)
    }
}

impl Leaf for Bypass {
    const EXPECTED: &'static str = "a host name, .domain, address or CIDR network";
    fn parse(text: &str) -> Result<Self, String> {
        Bypass::parse(text)
    }
}

/// A DNS server: an address, with the port when it is not 53.
#[derive(Debug, Clone, Copy)]
pub struct DnsServer(pub SocketAddr);

impl Leaf for DnsServer {
    const EXPECTED: &'static str = "a DNS server's address, such as 1.1.1.1 or 127.0.0.1:5353";
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(DnsServer(addr));
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>()
            .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
            .map_err(|_| {
                format!("'{text}' is not a DNS server's address such as 1.1.1.1 or [::1]:5353")
            })
    }
}

impl Leaf for Secret {
    const EXPECTED: &'static str = "a token";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret::new(text))
    }
}

impl Leaf for LogFormat {
    const EXPECTED: &'static str = "text or json";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}' is not text or json")),
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Clients' credentials go to the upstream token issuers.
    Passthrough,
    /// hubferry issues its own tokens and uses its own upstream accounts.
    Managed,
}

impl Leaf for AuthMode {
    const EXPECTED: &'static str = "passthrough or managed";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "passthrough" => Ok(AuthMode::Passthrough),
            "managed" => Ok(AuthMode::Managed),
            other => Err(format!("'{other}' is not passthrough or managed")),
        }
    }
}

/// `limits.max_streams` as written: `auto` (sized from the memory limit when the server is
/// configured, see `capacity`) or a number, 0 for no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStreams {
    Auto,
    Set(usize),
}

impl Leaf for MaxStreams {
    const EXPECTED: &'static str = "auto or a whole number";
    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Ok(MaxStreams::Auto);
        }
        text.trim()
            .parse()
            .map(MaxStreams::Set)
            .map_err(|_| format!("'{text}' is not auto or a whole number (0 for no cap)"))
    }
}

pub fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{text}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{text}' must not have a query or fragment"));
    }
    Ok(url)
}

/// An upstream base URL; a path is allowed (a registry behind a path prefix) and kept without
/// its trailing slash so request paths can be appended.
pub fn parse_upstream_url(text: &str) -> Result<Url, String> {
    let mut url = parse_http_url(text)?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml<T: for<'de> Deserialize<'de>>(value: &str) -> Result<T, String> {
        let text = format!("value = {value}\n");
        config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.get::<T>("value"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn native_toml_values_are_read_as_their_text() {
        assert_eq!(from_toml::<Count<1, USIZE>>("4").unwrap().0, 4);
        assert_eq!(from_toml::<Count<1, USIZE>>("\"4\"").unwrap().0, 4);
        assert!(from_toml::<Bool>("true").unwrap().0);
        assert!(!from_toml::<Bool>("\"FALSE\"").unwrap().0);
        let err = from_toml::<Count<1, 20>>("1.5").unwrap_err();
        assert!(
            err.contains("'1.5' is not a whole number from 1 to 20"),
            "{err}"
        );
        let err = from_toml::<Span>("10").unwrap_err();
        assert!(err.contains("'10' is not a duration"), "{err}");
        let err = from_toml::<Listen>("{ port = 1 }").unwrap_err();
        assert!(err.contains("an address like 0.0.0.0:5000"), "{err}");
    }

    #[test]
    fn bools_are_true_or_false_only() {
        for bad in ["yes", "1", "on", ""] {
            assert!(Bool::parse(bad).is_err(), "{bad}");
        }
        assert!(Bool::parse(" True ").unwrap().0);
    }

    #[test]
    fn counts_say_their_range() {
        type Hops = Count<1, 20>;
        type Workers = Count<1, USIZE>;
        type PerMinute = Count<0, U32>;
        assert_eq!(Hops::parse(" 20 ").unwrap().0, 20);
        assert!(Hops::parse("21").unwrap_err().contains("from 1 to 20"));
        assert!(Workers::parse("0").unwrap_err().contains("of at least 1"));
        assert!(PerMinute::parse("-1")
            .unwrap_err()
            .contains("0 for no limit"));
        let err = Count::<1, U32>::parse("4294967296").unwrap_err();
        assert!(err.contains("is more than 4294967295"), "{err}");
        assert_eq!(PerMinute::parse("4294967295").unwrap().u32(), u32::MAX);
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_text() {
        let list: List<Cidr> = from_toml("[\" 10.0.0.0/8 \", \"\", \"::1\"]").unwrap();
        assert_eq!(list.0.len(), 2);
        let list: List<Cidr> = from_toml("\"10.0.0.0/8, ,::1,\"").unwrap();
        assert_eq!(list.0.len(), 2);
        let err = from_toml::<List<Cidr>>("\"10.0.0.0/8,10.0.0.0/33\"").unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn empty_means_off_where_off_is_a_value() {
        assert!(Listen::parse("").unwrap().0.is_none());
        assert!(Listen::parse("OFF").unwrap().0.is_none());
        assert!(FilePath::parse("").unwrap().0.is_none());
        assert!(PublicUrl::parse("").unwrap().0.is_none());
        assert!(Span::parse("").is_err());
        assert!(Count::<0, U32>::parse("").is_err());
    }
}

/// A name an ACME CA is asked to certify: a DNS name, lower-cased. Not an address (RFC 8738's
/// IP identifiers are not offered by Let's Encrypt's default profile) and not a wildcard (that
/// needs the DNS-01 challenge, which hubferry cannot answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDomain(pub String);

impl Leaf for AcmeDomain {
    const EXPECTED: &'static str = "a DNS name such as mirror.example.com";
    fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.starts_with("*.") {
            return Err(format!(
                "'{text}' is a wildcard: that needs the DNS-01 challenge; name each host"
            ));
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("'{text}' is an address; a DNS name is needed"));
        }
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "'{text}' is not a DNS name (letters, digits and hyphens between dots)"
            ));
        }
        Ok(AcmeDomain(name))
    }
}

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `tls.acme.directory`: an RFC 8555 directory URL, or `letsencrypt` / `letsencrypt-staging`.
#[derive(Debug, Clone)]
pub struct AcmeDirectory(pub Url);

impl Leaf for AcmeDirectory {
    const EXPECTED: &'static str = "an https:// URL, letsencrypt or letsencrypt-staging";
    fn parse(text: &str) -> Result<Self, String> {
        let url = match text.trim() {
            "letsencrypt" => LETS_ENCRYPT,
            "letsencrypt-staging" => LETS_ENCRYPT_STAGING,
            other => other,
        };
        let url = Url::parse(url).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
        // RFC 8555 §6.1: ACME runs over HTTPS only.
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(format!(
                "'{text}' is not an https:// URL (ACME runs over HTTPS), letsencrypt or \
                 letsencrypt-staging"
            ));
        }
        Ok(AcmeDirectory(url))
    }
}

/// `tls.acme.challenge`: how the CA is shown the names are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 first; after a failed attempt, HTTP-01, and so on in turn (each needs its
    /// own port reachable from the CA: 443 and 80).
    Auto,
    /// RFC 8737, on the TLS listener (port 443 as the CA sees it).
    TlsAlpn01,
    /// RFC 8555 §8.3, on the plain listener (port 80 as the CA sees it).
    Http01,
}

impl Leaf for AcmeChallenge {
    const EXPECTED: &'static str = "auto, tls-alpn-01 or http-01";
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(AcmeChallenge::Auto),
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            "http-01" => Ok(AcmeChallenge::Http01),
            other => Err(format!("'{other}' is not auto, tls-alpn-01 or http-01")),
        }
    }
}
