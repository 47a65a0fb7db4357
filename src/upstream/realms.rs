//! Token realms learned from upstream challenges. An upstream without a configured realm names
//! its own in every `WWW-Authenticate` (ghcr.io `https://ghcr.io/token`, quay.io
//! `https://quay.io/v2/auth` ...); the client is sent to `/token/<upstream>/<id>` on the mirror
//! instead, and that route forwards only to a realm this table holds for that upstream. So a
//! client can never make hubferry fetch a URL no upstream's challenge named.
//!
//! The `id` is a hash of the realm URL, not a counter: it is the same in every worker and every
//! replica behind a load balancer, and a worker or replica that has not seen the challenge yet
//! learns the realm by asking the upstream's `/v2/` (see `routes::token`). One table per process,
//! shared by every worker (a challenge is seen on one worker, the token request may land on
//! another).

use std::{collections::HashMap, sync::RwLock};

use url::Url;

/// Realms kept per upstream: a real registry names one; a hostile one must not grow the table
/// without bound.
const MAX_PER_UPSTREAM: usize = 8;

#[derive(Debug, Default)]
pub struct Realms {
    learned: RwLock<HashMap<String, Vec<Url>>>,
    /// The `service` each upstream's challenges name: a token request sent to another
    /// upstream's realm (see `routes::token`) must name it, or the token is for the wrong
    /// audience.
    services: RwLock<HashMap<String, String>>,
}

impl Realms {
    /// Remembers that `upstream` named `realm` and returns its id. A realm beyond the per-upstream
    /// limit is not remembered (its token requests then fail with 404) and is logged.
    pub fn learn(&self, upstream: &str, realm: &Url) -> String {
        let id = realm_id(realm);
        let known = |table: &HashMap<String, Vec<Url>>| {
            table.get(upstream).is_some_and(|list| list.contains(realm))
        };
        if known(&self.learned.read().unwrap_or_else(|e| e.into_inner())) {
            return id;
        }
        let mut table = self.learned.write().unwrap_or_else(|e| e.into_inner());
        if known(&table) {
            return id;
        }
        let list = table.entry(upstream.to_owned()).or_default();
        if list.len() < MAX_PER_UPSTREAM {
            log::info!("upstream {upstream} names token realm {realm}");
            list.push(realm.clone());
        } else {
            log::warn!(
                "upstream {upstream} named more than {MAX_PER_UPSTREAM} token realms; not remembering {realm}"
            );
        }
        id
    }

    /// Remembers the `service` an upstream's challenge named.
    pub fn learn_service(&self, upstream: &str, service: &str) {
        let current = self.services.read().unwrap_or_else(|e| e.into_inner());
        if current.get(upstream).is_some_and(|s| s == service) {
            return;
        }
        drop(current);
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        services.insert(upstream.to_owned(), service.to_owned());
    }

    pub fn service(&self, upstream: &str) -> Option<String> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        services.get(upstream).cloned()
    }

    /// The first realm `upstream` named.
    pub fn first(&self, upstream: &str) -> Option<Url> {
        let table = self.learned.read().unwrap_or_else(|e| e.into_inner());
        table.get(upstream)?.first().cloned()
    }

    /// The realm of `upstream` whose id is `id`, if that upstream has named it.
    pub fn find(&self, upstream: &str, id: &str) -> Option<Url> {
        let table = self.learned.read().unwrap_or_else(|e| e.into_inner());
        table
            .get(upstream)?
            .iter()
            .find(|realm| realm_id(realm) == id)
            .cloned()
    }
}

/// A short, stable name for a realm URL (64-bit FNV-1a, in hex). It only picks among the realms
/// one upstream named, so it needs to be stable, not secret.
pub fn realm_id(realm: &Url) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in realm.as_str().bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The realm a challenge names, when it is an http(s) URL with a host: the only kind hubferry
/// will call.
pub fn parse_realm(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none())
    .then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_found_only_for_the_upstream_that_named_them() {
        let realms = Realms::default();
        let ghcr = Url::parse("https://ghcr.io/token").unwrap();
        let id = realms.learn("ghcr.io", &ghcr);
        assert_eq!(id.len(), 16);
        assert_eq!(realms.learn("ghcr.io", &ghcr), id);
        assert_eq!(realms.find("ghcr.io", &id), Some(ghcr));
        assert_eq!(realms.find("quay.io", &id), None);
        assert_eq!(realms.find("ghcr.io", "0000000000000000"), None);
        assert_eq!(
            realms.first("ghcr.io").unwrap().as_str(),
            "https://ghcr.io/token"
        );
        assert_eq!(realms.service("ghcr.io"), None);
        realms.learn_service("ghcr.io", "ghcr.io");
        assert_eq!(realms.service("ghcr.io").as_deref(), Some("ghcr.io"));
    }

    #[test]
    fn the_table_per_upstream_is_bounded() {
        let realms = Realms::default();
        let ids: Vec<_> = (0..MAX_PER_UPSTREAM + 2)
            .map(|i| {
                let url = Url::parse(&format!("https://auth{i}.example/token")).unwrap();
                realms.learn("hostile", &url)
            })
            .collect();
        assert!(realms.find("hostile", &ids[0]).is_some());
        assert!(realms.find("hostile", &ids[MAX_PER_UPSTREAM]).is_none());
    }

    #[test]
    fn only_plain_http_urls_are_realms() {
        assert!(parse_realm("https://quay.io/v2/auth").is_some());
        assert!(parse_realm("http://127.0.0.1:5001/token?x=1").is_some());
        for bad in [
            "",
            "/token",
            "file:///etc/passwd",
            "https://user:pw@auth.example/token",
            "gopher://x",
        ] {
            assert!(parse_realm(bad).is_none(), "{bad}");
        }
    }
}
