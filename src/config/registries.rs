//! The registries mirrored: Docker Hub's from `[upstream]`, the built-in ones, and the
//! `[[upstreams]]` entries of the file, each checked with its problems named
//! `upstreams[<name>].<field>`; and each upstream's own account (managed auth).

use serde::Deserialize;
use url::Url;

use super::{
    invalid,
    values::{parse_http_url, parse_upstream_url, Bool, FilePath, Leaf, List},
    ConfigError, DockerHub, Problems,
};
use crate::{
    auth::users::{Credentials, Secret},
    net::origin::ServerName,
    proxy::target::is_name_component,
    upstream::{
        proxy::ProxyChoice,
        registries::{self, Registries, Registry, DOCKER_HUB},
    },
};

/// One `[[upstreams]]` entry. Docker Hub's is configured by `[upstream]`; an entry named
/// `docker.io` may only add `host_names` (and `library`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegistry {
    name: String,
    registry: Option<String>,
    /// A fixed token realm (full URL); unset, it is learned from the upstream's challenges.
    realm: Option<String>,
    library: Option<String>,
    host_names: List<String>,
    /// Passthrough mode: send clients' credentials here even when the request named this
    /// registry by path prefix or `?ns=` (see `credentials`).
    forward_credentials: Option<String>,
    /// hubferry's own account at this registry (managed auth only).
    username: Option<String>,
    password: Option<String>,
    password_file: FilePath,
    /// This registry's own egress proxy (its CDN redirects go the same way), or `none`.
    proxy: Option<String>,
    /// Its endpoints in order: `registry` (or, for docker.io, `upstream.registry`) first, then
    /// the ones a pull falls back on.
    endpoints: List<String>,
}

/// Docker Hub (from `[upstream]`), the built-in registries, then `[[upstreams]]`: an entry with
/// the name of an earlier one replaces its settings, any other is added.
pub fn registries(
    hub: &DockerHub,
    hub_library: Option<bool>,
    hub_credentials: Option<Credentials>,
    raw: Vec<RawRegistry>,
    default_upstream: &str,
) -> Result<Registries, ConfigError> {
    // The rule is Docker Hub's: another registry standing in as docker.io (a private registry,
    // another mirror, a test double) may have one-component names of its own.
    let hub_is_docker_hub = matches!(
        hub.registry.host_str(),
        Some("registry-1.docker.io" | "docker.io" | "index.docker.io")
    );
    let hub_library = hub_library.unwrap_or(hub_is_docker_hub);
    let hub_realm = Url::parse(&format!(
        "{}/token",
        hub.auth.as_str().trim_end_matches('/')
    ))
    .map_err(|e| invalid("upstream.auth", e))?;
    let mut list = vec![Registry {
        name: DOCKER_HUB.into(),
        registry: hub.registry.clone(),
        fallbacks: Vec::new(),
        realm: Some(hub_realm),
        library: hub_library,
        host_names: Vec::new(),
        forward_credentials: false,
        credentials: hub_credentials,
        proxy: None,
    }];
    for (name, url) in registries::BUILT_IN {
        list.push(Registry {
            name: name.into(),
            registry: Url::parse(url).expect("built-in URLs parse"),
            fallbacks: Vec::new(),
            realm: None,
            library: false,
            host_names: Vec::new(),
            forward_credentials: false,
            credentials: None,
            proxy: None,
        });
    }
    let mut problems = Problems::default();
    let mut listed = Vec::new();
    for entry in raw {
        let name = entry.name.trim().to_ascii_lowercase();
        // Names appear in paths (`/v2/<name>/...`, `/token/<name>`): one name component.
        if !is_name_component(&name) {
            problems.take::<()>(Err(invalid(
                "upstreams.name",
                format!(
                    "'{}' is not a registry name such as ghcr.io (lowercase letters, digits, . and -)",
                    entry.name
                ),
            )));
            continue;
        }
        if listed.contains(&name) {
            problems.take::<()>(Err(invalid(
                "upstreams.name",
                format!("'{name}' is listed twice"),
            )));
            continue;
        }
        listed.push(name.clone());
        let existing = list.iter().position(|u| u.name == name).map(|i| &list[i]);
        if let Some(registry) = problems.take(entry_registry(entry, name, existing)) {
            match list.iter().position(|u| u.name == registry.name) {
                Some(i) => list[i] = registry,
                None => list.push(registry),
            }
        }
    }
    let mut seen: Vec<(&ServerName, &str)> = Vec::new();
    for upstream in &list {
        for host in &upstream.host_names {
            if let Some((_, other)) = seen.iter().find(|(h, _)| *h == host) {
                problems.take::<()>(Err(invalid(
                    &format!("upstreams[{}].host_names", upstream.name),
                    format!("'{host}' already selects {other}"),
                )));
            } else {
                seen.push((host, &upstream.name));
            }
        }
    }
    let default_name = default_upstream.trim().to_ascii_lowercase();
    let default = problems.take(list.iter().position(|u| u.name == default_name).ok_or_else(
        || {
            invalid(
                "default_upstream",
                format!("'{default_upstream}' is not the name of an upstream"),
            )
        },
    ));
    let default = problems.finish(default)?;
    Ok(Registries::new(
        list,
        default.expect("no problem, so found"),
    ))
}

/// One `[[upstreams]]` entry named `name` (checked), over the registry of that name it
/// overrides, if any. Every problem of the entry is reported, each by its key.
fn entry_registry(
    entry: RawRegistry,
    name: String,
    existing: Option<&Registry>,
) -> Result<Registry, ConfigError> {
    let key = |field: &str| format!("upstreams[{name}].{field}");
    let mut problems = Problems::default();
    if name == DOCKER_HUB && (entry.registry.is_some() || entry.realm.is_some()) {
        problems.take::<()>(Err(invalid(
            &key("registry"),
            "Docker Hub's registry and token issuer are upstream.registry and upstream.auth",
        )));
    }
    let own = problems
        .take(credentials(
            &format!("upstreams[{name}]"),
            &entry.username,
            &entry.password,
            &entry.password_file,
        ))
        .flatten();
    if name == DOCKER_HUB && own.is_some() {
        problems.take::<()>(Err(invalid(
            &key("username"),
            "Docker Hub's account is upstream.username and upstream.password",
        )));
    }
    let endpoints: Vec<Url> = entry
        .endpoints
        .0
        .iter()
        .filter_map(|text| {
            problems.take(parse_upstream_url(text).map_err(|e| invalid(&key("endpoints"), e)))
        })
        .collect();
    let registry = problems.take(match (&entry.registry, existing, endpoints.first()) {
        (Some(text), _, _) => parse_upstream_url(text).map_err(|e| invalid(&key("registry"), e)),
        (None, Some(existing), _) => Ok(existing.registry.clone()),
        (None, None, Some(first)) => Ok(first.clone()),
        (None, None, None) => Err(invalid(&key("registry"), "is required (or endpoints)")),
    });
    // The registry is the first endpoint, whether or not the list repeats it.
    let fallbacks = match (&registry, entry.endpoints.0.is_empty()) {
        (_, true) => existing.map(|e| e.fallbacks.clone()).unwrap_or_default(),
        (Some(registry), false) => endpoints
            .into_iter()
            .filter(|url| url != registry)
            .collect(),
        (None, false) => Vec::new(),
    };
    let realm = problems.take(match &entry.realm {
        Some(text) if !text.trim().is_empty() => parse_http_url(text.trim())
            .map(Some)
            .map_err(|e| invalid(&key("realm"), e)),
        _ => Ok(existing.and_then(|e| e.realm.clone())),
    });
    let library = problems.take(match &entry.library {
        Some(text) => bool_at(&key("library"), text),
        None => Ok(existing.is_some_and(|e| e.library)),
    });
    let host_names: Vec<ServerName> = entry
        .host_names
        .0
        .iter()
        .filter_map(|h| {
            problems.take(ServerName::parse(h).map_err(|e| invalid(&key("host_names"), e)))
        })
        .collect();
    let forward_credentials = problems.take(match &entry.forward_credentials {
        Some(text) => bool_at(&key("forward_credentials"), text),
        None => Ok(existing.is_some_and(|e| e.forward_credentials)),
    });
    let credentials = own.or_else(|| existing.and_then(|e| e.credentials.clone()));
    let proxy = problems.take(match &entry.proxy {
        Some(text) if !text.trim().is_empty() => ProxyChoice::parse(text)
            .map(Some)
            .map_err(|e| invalid(&key("proxy"), e)),
        _ => Ok(existing.and_then(|e| e.proxy.clone())),
    });
    problems.finish(())?;
    Ok(Registry {
        name,
        registry: registry.expect("no problem, so parsed"),
        fallbacks,
        realm: realm.expect("no problem, so parsed"),
        library: library.expect("no problem, so parsed"),
        host_names,
        forward_credentials: forward_credentials.expect("no problem, so parsed"),
        credentials,
        proxy: proxy.expect("no problem, so parsed"),
    })
}

/// An upstream's `username` with its `password` or `password_file` (`section` names the keys).
/// The file is read once, at start-up; one trailing newline is not part of the password.
pub fn credentials(
    section: &str,
    username: &Option<String>,
    password: &Option<String>,
    password_file: &FilePath,
) -> Result<Option<Credentials>, ConfigError> {
    let key = |field: &str| format!("{section}.{field}");
    let username = username.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let password = password.as_deref().filter(|p| !p.is_empty());
    let password_file = password_file.0.as_deref();
    let password = match (password, password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &key("password_file"),
                format!("give {} or this, not both", key("password")),
            ))
        }
        (Some(password), None) => Some(password.to_owned()),
        (None, Some(path)) => {
            Some(read_secret_file(path).map_err(|e| invalid(&key("password_file"), e))?)
        }
        (None, None) => None,
    };
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username: username.to_owned(),
            password: Secret::new(password),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            &key("password"),
            format!(
                "{} is set without a password or password_file",
                key("username")
            ),
        )),
        (None, Some(_)) => Err(invalid(
            &key("username"),
            "a password is set without a username",
        )),
    }
}

/// A password kept in a file, read once at start-up; one trailing newline is not part of it.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(text.to_owned())
}

/// A `true` or `false` inside an `[[upstreams]]` entry, its problem named by `key`.
fn bool_at(key: &str, text: &str) -> Result<bool, ConfigError> {
    Bool::parse(text).map(|b| b.0).map_err(|e| invalid(key, e))
}
