//! `/v1/search` (`docker search mirror.example.com/term`): forwarded to `upstream.index` with
//! the query rewritten as the nginx config hubferry replaces rewrote it.

use actix_web::{web, HttpRequest, HttpResponse};

use super::forward::{checked_query, client_credentials, forward, upstream_url, RoutePolicy};
use crate::{
    error::ProxyError, proxy::credentials::Carried, upstream::client::RequestBody, worker::Worker,
};

/// `/v1/search` in passthrough mode. The index is Docker Hub's: the client's credentials go
/// there only when they are Docker Hub's (see `proxy::credentials`).
pub async fn search(
    req: HttpRequest,
    payload: web::Payload,
    worker: web::Data<Worker>,
) -> Result<HttpResponse, ProxyError> {
    let credentials =
        client_credentials(&req, &worker.config, worker.config.registries.docker_hub());
    forward_search(&req, payload, &worker, credentials).await
}

pub(super) async fn forward_search(
    req: &HttpRequest,
    payload: web::Payload,
    worker: &Worker,
    credentials: Carried,
) -> Result<HttpResponse, ProxyError> {
    let query = search_query(checked_query(req)?.unwrap_or_default());
    let url = upstream_url(&worker.config.docker_hub.index, "/v1/search", Some(&query))?;
    let policy = RoutePolicy {
        upstream: "index",
        // Docker Hub's index: the only one `/v1/search` serves.
        registry: worker.config.registries.docker_hub().label(),
        follow_redirects: false,
        rewrite_to_mirror: None,
        credentials,
        method: None,
        plain_answer: false,
    };
    let body = RequestBody::from_client(req, payload)?;
    forward(req, body, worker, url, policy).await
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
