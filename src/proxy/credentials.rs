//! Whose credentials go where, in passthrough mode.
//!
//! A client's credentials are meant for the registry that the host name it sent them to stands
//! for (`Registries::home`): `docker login mirror.example.com` types a Docker Hub password when
//! that name mirrors Docker Hub. A request that names another registry by path prefix or
//! `?ns=` must not carry them there (nor to that registry's token issuer, whose realm the
//! registry itself chose): it goes anonymously, unless that registry's entry says
//! `forward_credentials = true`.
//!
//! Bearer tokens are the other half. Every token answer hubferry relays is marked with the
//! registry whose issuer minted it (`hf~<registry>~<token>`), and a marked token goes only to
//! that registry, unmarked. So a client that reuses one registry's token for another (containerd
//! keeps one token per host, and one mirror host serves many registries) cannot hand it over.
//! The mark is not a secret and needs no key: it only says where the client's own token may
//! go, and a client that forges it only misdirects its own token.

use actix_web::http::header::{self, HeaderMap, HeaderValue};

use crate::upstream::registries::Registry;

/// What starts a marked token; never part of a registry name, which is a single name component.
const MARK: &str = "hf~";

/// The token as handed to the client: marked with the registry whose issuer minted it.
pub fn mark(registry: &str, token: &str) -> String {
    format!("{MARK}{registry}~{token}")
}

/// A marked token's registry and the token itself; `None` for a token hubferry did not mark.
pub fn marked(token: &str) -> Option<(&str, &str)> {
    token.strip_prefix(MARK)?.split_once('~')
}

/// What a client's token means for `upstream`: the token itself when it may go there (marked
/// for it, or unmarked and the client's credentials may go there), else `None`.
pub fn token_for<'a>(token: &'a str, upstream: &Registry, trusted: bool) -> Option<&'a str> {
    match marked(token) {
        Some((registry, inner)) => (registry == upstream.name).then_some(inner),
        None => trusted.then_some(token),
    }
}

/// Whether the client's own credentials (a password, cookies, a token hubferry did not mark)
/// may go to `upstream`, for a request whose host name stands for `home`.
pub fn trusted(upstream: &Registry, home: &Registry) -> bool {
    upstream.name == home.name || upstream.forward_credentials
}

/// What a request sends upstream in place of the client's `Authorization` and `Cookie`.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    pub authorization: Option<HeaderValue>,
    /// The client's cookies go too.
    pub cookies: bool,
}

impl Carried {
    /// Nothing of the client's: an anonymous request.
    pub fn nothing() -> Carried {
        Carried::default()
    }

    /// hubferry's own `Authorization` (managed auth), never anything of the client's.
    pub fn ours(authorization: Option<HeaderValue>) -> Carried {
        Carried {
            authorization,
            cookies: false,
        }
    }

    /// What of the client's may go to `upstream` (see the module comment).
    pub fn client(headers: &HeaderMap, upstream: &Registry, home: &Registry) -> Carried {
        let trusted = trusted(upstream, home);
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| authorization_for(value, upstream, trusted));
        if authorization.is_none() && headers.contains_key(header::AUTHORIZATION) {
            log::debug!(
                "not sending the client's Authorization to {}: it was meant for {}",
                upstream.name,
                home.name
            );
        }
        Carried {
            authorization,
            cookies: trusted,
        }
    }

    /// Puts what is carried in `headers` (the client's headers on their way up), in place of
    /// the client's own.
    pub fn apply(&self, client: &HeaderMap, headers: &mut HeaderMap) {
        // Looked for first: removing an absent header costs more than the look, on every request.
        for name in [header::AUTHORIZATION, header::COOKIE] {
            if headers.contains_key(&name) {
                headers.remove(name);
            }
        }
        if let Some(authorization) = &self.authorization {
            let mut authorization = authorization.clone();
            authorization.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, authorization);
        }
        if self.cookies {
            for cookie in client.get_all(header::COOKIE) {
                headers.append(header::COOKIE, cookie.clone());
            }
        }
    }
}

/// The client's `Authorization` as it may go to `upstream`: a marked bearer token unmarked (or
/// dropped when marked for another registry), anything else only when `trusted`.
fn authorization_for(
    value: &HeaderValue,
    upstream: &Registry,
    trusted: bool,
) -> Option<HeaderValue> {
    match marked_bearer(value) {
        Some(token) => {
            let inner = token_for(token, upstream, trusted)?;
            HeaderValue::from_str(&format!("Bearer {inner}")).ok()
        }
        None => trusted.then(|| value.clone()),
    }
}

/// The token of `Bearer <token>` when hubferry marked it. Looked at as bytes up to the mark
/// first: most values are a registry's token of a kilobyte or so, and checking all of it for
/// text on every request cost more than the rest of this module.
fn marked_bearer(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at(bytes.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.trim_ascii().starts_with(MARK.as_bytes()) {
        return None;
    }
    // A value that is not text is left as it came, marked or not.
    let (_, token) = value.to_str().ok()?.split_once(' ')?;
    Some(token.trim())
}

/// An OAuth2 token form (`grant_type=password` or `refresh_token`) as it may go to
/// `upstream`'s issuer: with a refresh token marked for it unmarked; `None` when it carries a
/// credential that may not go there (a password, or a refresh token of another registry's), so
/// the request must go anonymously instead (see [`anonymous_query`]).
pub fn token_form(form: &str, upstream: &Registry, trusted: bool) -> Option<String> {
    let field = |name: &str| {
        url::form_urlencoded::parse(form.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if field("password").is_some() && !trusted {
        return None;
    }
    match field("refresh_token") {
        Some(refresh) => {
            let inner = token_for(&refresh, upstream, trusted)?.to_owned();
            Some(
                crate::proxy::scope::map_form_values(form, "refresh_token", |_| inner.clone())
                    .into_owned(),
            )
        }
        None => Some(form.to_owned()),
    }
}

/// The query of an anonymous token request made in place of a client's: only what says which
/// token is wanted (`service` and every `scope`, from the query and the form), nothing that
/// names the client (`account`, `client_id`) or proves who it is.
pub fn anonymous_query<'a>(sources: impl IntoIterator<Item = &'a str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut service = false;
    for source in sources {
        for (key, value) in url::form_urlencoded::parse(source.as_bytes()) {
            match key.as_ref() {
                "service" if !service => {
                    service = true;
                    query.append_pair("service", &value);
                }
                "scope" => {
                    query.append_pair("scope", &value);
                }
                _ => {}
            }
        }
    }
    query.finish()
}

/// A token issuer's JSON answer with every token in it marked for `registry`: `token`,
/// `access_token` and `refresh_token` (a refresh token is a credential for that issuer only).
/// `None` when the answer is not a JSON object holding one of them: it then goes to the client
/// as it came (an error, say).
pub fn mark_answer(body: &[u8], registry: &str) -> Option<Vec<u8>> {
    let mut answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = answer.as_object_mut()?;
    let mut marked_any = false;
    for field in ["token", "access_token", "refresh_token"] {
        if let Some(serde_json::Value::String(token)) = object.get_mut(field) {
            *token = mark(registry, token);
            marked_any = true;
        }
    }
    marked_any.then(|| answer.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, forward_credentials: bool) -> Registry {
        Registry {
            name: name.into(),
            registry: url::Url::parse(&format!("https://{name}")).unwrap(),
            fallbacks: Vec::new(),
            realm: None,
            library: false,
            host_names: Vec::new(),
            forward_credentials,
            credentials: None,
            proxy: None,
        }
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers.insert(header::COOKIE, "session=1".parse().unwrap());
        headers
    }

    fn sent(carried: &Carried) -> Option<&str> {
        carried.authorization.as_ref().map(|v| v.to_str().unwrap())
    }

    #[test]
    fn marks_round_trip_and_registry_names_cannot_break_them() {
        let token = mark("ghcr.io", "abc~def==");
        assert_eq!(token, "hf~ghcr.io~abc~def==");
        assert_eq!(marked(&token), Some(("ghcr.io", "abc~def==")));
        assert_eq!(marked("eyJhbGciOi.x.y"), None);
        assert_eq!(marked("hf~no-second-tilde"), None);
    }

    #[test]
    fn the_home_registry_gets_the_clients_credentials_others_do_not() {
        let hub = upstream("docker.io", false);
        let ghcr = upstream("ghcr.io", false);
        let basic = with_authorization("Basic dXNlcjpwdw==");
        let home = Carried::client(&basic, &hub, &hub);
        assert_eq!(sent(&home), Some("Basic dXNlcjpwdw=="));
        assert!(home.cookies);
        let other = Carried::client(&basic, &ghcr, &hub);
        assert_eq!(sent(&other), None);
        assert!(!other.cookies);
        // Unless that registry's entry asks for them.
        let trusting = upstream("ghcr.io", true);
        assert_eq!(
            sent(&Carried::client(&basic, &trusting, &hub)),
            Some("Basic dXNlcjpwdw==")
        );
    }

    #[test]
    fn a_marked_token_goes_only_to_the_registry_that_minted_it() {
        let hub = upstream("docker.io", false);
        let ghcr = upstream("ghcr.io", true);
        let hub_token = with_authorization(&format!("Bearer {}", mark("docker.io", "HUB")));
        assert_eq!(
            sent(&Carried::client(&hub_token, &hub, &hub)),
            Some("Bearer HUB")
        );
        // Not even to a registry that takes the client's credentials: the token is Docker Hub's.
        assert_eq!(sent(&Carried::client(&hub_token, &ghcr, &hub)), None);
        let ghcr_token = with_authorization(&format!("bearer {}", mark("ghcr.io", "GH")));
        // Reached by prefix from Docker Hub's host name: its own token still goes.
        assert_eq!(
            sent(&Carried::client(
                &ghcr_token,
                &upstream("ghcr.io", false),
                &hub
            )),
            Some("Bearer GH")
        );
        assert_eq!(sent(&Carried::client(&ghcr_token, &hub, &hub)), None);
        // A token hubferry did not mark counts as the client's own credentials.
        let plain = with_authorization("Bearer RAW");
        assert_eq!(
            sent(&Carried::client(&plain, &hub, &hub)),
            Some("Bearer RAW")
        );
        assert_eq!(
            sent(&Carried::client(&plain, &upstream("ghcr.io", false), &hub)),
            None
        );
    }

    #[test]
    fn a_marked_token_is_found_however_the_header_is_spaced() {
        let hub = upstream("docker.io", false);
        let ghcr = upstream("ghcr.io", false);
        let spaced = with_authorization(&format!("BEARER   {}\t", mark("docker.io", "HUB")));
        assert_eq!(
            sent(&Carried::client(&spaced, &hub, &hub)),
            Some("Bearer HUB")
        );
        // A value that is not text is passed on as it came only where the client's own
        // credentials may go, marked or not: it cannot be unmarked.
        let mut headers = HeaderMap::new();
        let raw = HeaderValue::from_bytes(b"Bearer hf~docker.io~\xff").unwrap();
        headers.insert(header::AUTHORIZATION, raw.clone());
        let carried = Carried::client(&headers, &hub, &hub);
        assert_eq!(carried.authorization, Some(raw));
        assert_eq!(Carried::client(&headers, &ghcr, &hub).authorization, None);
        // Neither a scheme without a token nor another scheme is a marked token.
        for value in ["Bearer", "Basic hf~docker.io~x", "Bearerhf~docker.io~x"] {
            let carried = Carried::client(&with_authorization(value), &hub, &hub);
            assert_eq!(sent(&carried), Some(value));
        }
    }

    #[test]
    fn applying_replaces_the_clients_headers() {
        let client = with_authorization("Basic x");
        let mut headers = client.clone();
        Carried::nothing().apply(&client, &mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_none());
        assert!(headers.get(header::COOKIE).is_none());
        let ours = Carried::ours(Some("Bearer ours".parse().unwrap()));
        ours.apply(&client, &mut headers);
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Bearer ours");
        assert!(headers.get(header::AUTHORIZATION).unwrap().is_sensitive());
        assert!(headers.get(header::COOKIE).is_none());
        let hub = upstream("docker.io", false);
        Carried::client(&client, &hub, &hub).apply(&client, &mut headers);
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Basic x");
        assert_eq!(headers.get(header::COOKIE).unwrap(), "session=1");
    }

    #[test]
    fn token_forms_keep_credentials_for_their_own_registry_only() {
        let ghcr = upstream("ghcr.io", false);
        let password = "grant_type=password&username=u&password=p&service=s&scope=x";
        assert_eq!(token_form(password, &ghcr, true).as_deref(), Some(password));
        assert_eq!(token_form(password, &ghcr, false), None);
        let refresh = format!(
            "grant_type=refresh_token&refresh_token={}&service=s",
            mark("ghcr.io", "R")
        );
        assert_eq!(
            token_form(&refresh, &ghcr, false).as_deref(),
            Some("grant_type=refresh_token&refresh_token=R&service=s")
        );
        let foreign = format!(
            "grant_type=refresh_token&refresh_token={}",
            mark("docker.io", "R")
        );
        assert_eq!(token_form(&foreign, &ghcr, true), None);
        let unmarked = "grant_type=refresh_token&refresh_token=R";
        assert_eq!(token_form(unmarked, &ghcr, false), None);
        assert_eq!(token_form(unmarked, &ghcr, true).as_deref(), Some(unmarked));
        assert_eq!(
            token_form("service=s&scope=x", &ghcr, false).as_deref(),
            Some("service=s&scope=x")
        );
    }

    #[test]
    fn anonymous_token_requests_say_only_what_token_is_wanted() {
        assert_eq!(
            anonymous_query([
                "service=s&scope=repository%3Aa%3Apull&account=alice",
                "grant_type=password&username=alice&password=pw&service=t&scope=repository:b:pull&client_id=docker"
            ]),
            "service=s&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull"
        );
        assert_eq!(anonymous_query([""]), "");
    }

    #[test]
    fn token_answers_are_marked_field_by_field() {
        let body = br#"{"token":"T","access_token":"A","refresh_token":"R","expires_in":300}"#;
        let marked: serde_json::Value =
            serde_json::from_slice(&mark_answer(body, "ghcr.io").unwrap()).unwrap();
        assert_eq!(marked["token"], "hf~ghcr.io~T");
        assert_eq!(marked["access_token"], "hf~ghcr.io~A");
        assert_eq!(marked["refresh_token"], "hf~ghcr.io~R");
        assert_eq!(marked["expires_in"], 300);
        assert!(mark_answer(br#"{"errors":[]}"#, "x").is_none());
        assert!(mark_answer(b"not json", "x").is_none());
        assert!(mark_answer(br#"["token"]"#, "x").is_none());
    }
}
