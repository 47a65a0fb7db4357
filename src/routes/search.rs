//! `/v1/search` (`docker search mirror.example.com/term`): forwarded to `upstream.index` with
//! the query rewritten as the nginx config hubferry replaces rewrote it.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{
    checked_query, client_credentials, forward, managed, upstream_url, Proxy, RoutePolicy,
};
use crate::{credentials::Carried, error::ProxyError, upstream::RequestBody};

pub async fn search(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> Result<HttpResponse, ProxyError> {
    // A mirror closed to anonymous clients is closed for search too.
    if let Some(managed) = proxy.managed.as_ref().filter(|m| !m.auth.anonymous) {
        managed::admit_search(&req, &proxy, managed).await?;
    }
    let query = search_query(checked_query(&req)?.unwrap_or_default());
    let url = upstream_url(&proxy.config.upstream.index, "/v1/search", Some(&query))?;
    // The index is Docker Hub's: the client's credentials go there only when they are
    // Docker Hub's (see `credentials`).
    let credentials = match &proxy.managed {
        Some(_) => Carried::nothing(),
        None => client_credentials(&req, &proxy.config, proxy.config.registries.docker_hub()),
    };
    let policy = RoutePolicy {
        upstream: "index",
        // Docker Hub's index: the only one `/v1/search` serves.
        registry: proxy.config.registries.docker_hub().label(),
        follow_redirects: false,
        rewrite_to_mirror: None,
        credentials,
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(&req, payload)?;
    forward(&req, body, &proxy, url, policy).await
}

/// The upstream query: `q` with a leading `library/` stripped (Docker strips it only for the
/// official index, and the client sees us as another registry; exactly `library/` becomes
/// `library`), `n` and `page` kept when non-empty, everything else dropped.
pub fn search_query(raw: &str) -> String {
    let first = |name: &str| {
        url::form_urlencoded::parse(raw.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let q = first("q");
    let q = match q.strip_prefix("library/") {
        Some("") => "library",
        Some(rest) => rest,
        None => q.as_str(),
    };
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    out.append_pair("q", q);
    for name in ["n", "page"] {
        let value = first(name);
        if !value.is_empty() {
            out.append_pair(name, &value);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::search_query;

    #[test]
    fn library_prefix_is_stripped() {
        assert_eq!(search_query("q=library/nginx"), "q=nginx");
        assert_eq!(search_query("q=library%2Fnginx&n=25"), "q=nginx&n=25");
        assert_eq!(search_query("q=library/"), "q=library");
        assert_eq!(search_query("q=bitnami/redis"), "q=bitnami%2Fredis");
        assert_eq!(search_query("q=nginx"), "q=nginx");
    }

    #[test]
    fn n_and_page_kept_when_non_empty_others_dropped() {
        assert_eq!(search_query("q=redis&n=&page=2&x=1"), "q=redis&page=2");
        assert_eq!(search_query("n=10&q=a+b&page=3"), "q=a+b&n=10&page=3");
        assert_eq!(search_query(""), "q=");
    }
}
