//! The token issuer and search index: the only fake part of the world (Docker Hub's
//! auth.docker.io and index.docker.io are not available offline), speaking their protocols.
//!
//! `GET /token` (Docker token auth), `POST /token` (OAuth2 password/refresh_token grants) and
//! `GET /v1/search` (answered from the registry's `/v2/_catalog`). Every request is recorded
//! so tests can check what a proxy forwarded.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use serde_json::json;

use super::http;
use super::token::{self, Access, Identity, Minter};

/// One request the issuer received, as it arrived.
#[derive(Clone, Debug)]
pub struct IssuerRecord {
    pub method: String,
    pub path: String,
    /// Raw query string, undecoded ("" when absent).
    pub query: String,
    pub host: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub x_real_ip: Option<String>,
    pub x_forwarded_proto: Option<String>,
    /// The `Authorization` header, verbatim; `None` when not sent.
    pub authorization: Option<String>,
    /// Who asked: a client's, forwarded by a passthrough mirror, or `hubferry/<version>` for
    /// the tokens hubferry fetches for itself in managed auth mode.
    pub user_agent: Option<String>,
    pub body: String,
}

impl IssuerRecord {
    /// Decoded query parameters in order (repeated keys kept).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// Every value of query parameter `key`.
    pub fn query_values(&self, key: &str) -> Vec<String> {
        self.query_pairs()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }
}

pub struct Issuer {
    pub minter: Minter,
    records: Mutex<Vec<IssuerRecord>>,
    /// Set once the registry is up (its port is only final then).
    pub registry_url: OnceLock<String>,
    /// CA trusted when fetching the catalog from a TLS registry.
    ca_file: Option<PathBuf>,
    refresh_tokens: Mutex<HashSet<String>>,
}

impl Issuer {
    pub fn new(minter: Minter, ca_file: Option<PathBuf>) -> Issuer {
        Issuer {
            minter,
            records: Mutex::new(Vec::new()),
            registry_url: OnceLock::new(),
            ca_file,
            refresh_tokens: Mutex::new(HashSet::new()),
        }
    }

    pub fn records(&self) -> Vec<IssuerRecord> {
        self.records.lock().unwrap().clone()
    }

    fn record(&self, req: &HttpRequest, body: &[u8]) {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        self.records.lock().unwrap().push(IssuerRecord {
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            host: header("host"),
            x_forwarded_for: header("x-forwarded-for"),
            x_real_ip: header("x-real-ip"),
            x_forwarded_proto: header("x-forwarded-proto"),
            authorization: header("authorization"),
            user_agent: header("user-agent"),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
}

/// Serve `issuer` on a fresh port from a thread with its own actix System, forever.
/// Returns the base URL.
pub fn start(issuer: Arc<Issuer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind issuer port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::Builder::new()
        .name("world-issuer".into())
        .spawn(move || {
            let data = web::Data::from(issuer);
            actix_rt::System::new().block_on(async move {
                HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .workers(2)
                .disable_signals()
                .listen(listener)
                .expect("issuer listen")
                .run()
                .await
                .expect("issuer server");
            })
        })
        .expect("start issuer thread");
    url
}

async fn handle(req: HttpRequest, body: web::Bytes, issuer: web::Data<Issuer>) -> HttpResponse {
    issuer.record(&req, &body);
    match (req.method().as_str(), req.path()) {
        ("GET", "/token") => get_token(&issuer, &req),
        ("POST", "/token") => post_token(&issuer, &body),
        ("GET", "/v1/search") => search(&issuer, &req).await,
        _ => HttpResponse::NotFound().json(json!({"message": "not found"})),
    }
}

/// Who `Authorization: Basic` names: anonymous when the header is absent or another scheme
/// (a Bearer token sent to the realm), `Err` when the credentials are wrong.
fn basic_identity(req: &HttpRequest) -> Result<Identity, ()> {
    let Some(value) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Identity::Anonymous);
    };
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(Identity::Anonymous);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (user, pass) = text.split_once(':').ok_or(())?;
    token::authenticate(user, pass).ok_or(())
}

fn subject(identity: &Identity) -> &str {
    match identity {
        Identity::Anonymous => "",
        Identity::User(u) => u,
    }
}

fn issued_at() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"details": "incorrect username or password"}))
}

fn get_token(issuer: &Issuer, req: &HttpRequest) -> HttpResponse {
    let Ok(identity) = basic_identity(req) else {
        return unauthorized();
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    // The audience is whatever service the client named, so a proxy that mangles `service`
    // gets a token the registry rejects, as on Docker Hub.
    let service = param("service").unwrap_or(token::SERVICE);
    let scopes = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str());
    let access: Vec<Access> = token::grant(&identity, &token::parse_scopes(scopes));
    let jwt = issuer.minter.mint(subject(&identity), service, &access);
    let mut body = json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": token::EXPIRES_IN,
        "issued_at": issued_at(),
    });
    if param("offline_token") == Some("true") && identity != Identity::Anonymous {
        body["refresh_token"] = issuer.new_refresh_token(&identity).into();
    }
    HttpResponse::Ok().json(body)
}

impl Issuer {
    fn new_refresh_token(&self, identity: &Identity) -> String {
        let mut known = self.refresh_tokens.lock().unwrap();
        let token = format!("hubferry-refresh-{}-{}", subject(identity), known.len());
        known.insert(token.clone());
        token
    }
}

fn post_token(issuer: &Issuer, body: &[u8]) -> HttpResponse {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let identity = match field("grant_type") {
        Some("password") => {
            match token::authenticate(
                field("username").unwrap_or(""),
                field("password").unwrap_or(""),
            ) {
                Some(id) => id,
                None => return unauthorized(),
            }
        }
        Some("refresh_token") => {
            let known = issuer.refresh_tokens.lock().unwrap();
            match field("refresh_token") {
                Some(t) if known.contains(t) => Identity::User(token::USERNAME.to_string()),
                _ => return unauthorized(),
            }
        }
        _ => return HttpResponse::BadRequest().json(json!({"error": "unsupported_grant_type"})),
    };
    let service = field("service").unwrap_or(token::SERVICE);
    let scope = field("scope").unwrap_or("");
    let access = token::grant(&identity, &token::parse_scopes([scope]));
    let mut body = json!({
        "access_token": issuer.minter.mint(subject(&identity), service, &access),
        "scope": scope,
        "expires_in": token::EXPIRES_IN,
        "issued_at": issued_at(),
    });
    if field("grant_type") == Some("password") && field("access_type") == Some("offline") {
        body["refresh_token"] = issuer.new_refresh_token(&identity).into();
    }
    HttpResponse::Ok().json(body)
}

/// Docker Hub's v1 search, over the registry's catalog. Official images (`library/x`) are
/// listed as `x`, and `q` is matched against those listed names only, as on the Hub: a proxy
/// that forwards `q=library/alpine` untouched finds nothing.
async fn search(issuer: &Issuer, req: &HttpRequest) -> HttpResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let query = param("q").unwrap_or("").to_string();
    let (Ok(page_size), Ok(page)) = (
        param("n").unwrap_or("25").parse::<usize>(),
        param("page").unwrap_or("1").parse::<usize>(),
    ) else {
        return HttpResponse::BadRequest().json(json!({"message": "invalid n or page"}));
    };
    let (page_size, page) = (page_size.clamp(1, 100), page.max(1));
    let show_private = matches!(basic_identity(req), Ok(Identity::User(_)));

    let repos = match catalog(issuer).await {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadGateway().json(json!({"message": e})),
    };
    let needle = query.to_lowercase();
    let matches: Vec<serde_json::Value> = repos
        .iter()
        .filter(|r| show_private || !r.starts_with("private/"))
        .map(|r| {
            (
                r.strip_prefix("library/").unwrap_or(r),
                r.starts_with("library/"),
            )
        })
        .filter(|(name, _)| name.to_lowercase().contains(&needle))
        .map(|(name, official)| {
            json!({
                "name": name,
                "description": format!("hubferry test image {name}"),
                "star_count": name.len() * 10,
                "is_official": official,
                "is_automated": false,
            })
        })
        .collect();
    let num_results = matches.len();
    let results: Vec<_> = matches
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    HttpResponse::Ok().json(json!({
        "query": query,
        "num_results": num_results,
        "num_pages": num_results.div_ceil(page_size),
        "page": page,
        "page_size": page_size,
        "results": results,
    }))
}

async fn catalog(issuer: &Issuer) -> Result<Vec<String>, String> {
    let registry = issuer.registry_url.get().ok_or("registry not up yet")?;
    let access = [Access {
        kind: "registry".into(),
        name: "catalog".into(),
        actions: vec!["*".into()],
    }];
    let jwt = issuer.minter.mint(token::USERNAME, token::SERVICE, &access);
    let mut resp = http::client(issuer.ca_file.as_deref())
        .get(format!("{registry}/v2/_catalog?n=1000"))
        .bearer_auth(jwt)
        .send()
        .await
        .map_err(|e| format!("catalog request: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("catalog answered {}", resp.status()));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("catalog body: {e}"))?;
    Ok(body["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
