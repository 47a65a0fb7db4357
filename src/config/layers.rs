//! The layers settings come from, in rising precedence: the defaults of the settings table, the
//! TOML file, `HUBFERRY_*` environment variables, the flags. The `config` crate merges them;
//! each setting is then read on its own with its type ([`read`]), so that every invalid one is
//! reported, not just the first.

use config::{Map, Value, ValueKind};
use serde::de::DeserializeOwned;

use super::{
    flags::{Flags, Override},
    invalid,
    settings::{setting, SETTINGS},
    ConfigError,
};

/// The merged layers, and the names of the `HUBFERRY_` variables left out.
pub fn merge(
    flags: &Flags,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(config::Config, Vec<String>), ConfigError> {
    let mut builder = config::Config::builder();
    for setting in SETTINGS {
        if let Some(default) = setting.default {
            builder = builder
                .set_default(setting.key, default)
                .map_err(|e| invalid(setting.key, e))?;
        }
    }
    if let Some(file) = &flags.config {
        if !file.is_file() {
            return Err(invalid(
                "--config",
                format!("no such file: {}", file.display()),
            ));
        }
        builder =
            builder.add_source(config::File::from(file.as_path()).format(config::FileFormat::Toml));
    }
    let (env, ignored_env) = settings_in_env(env);
    builder = builder.add_source(
        config::Environment::with_prefix("HUBFERRY")
            .prefix_separator("_")
            .separator("__")
            .source(Some(env)),
    );
    for (key, value) in flags.overrides() {
        let value = match value {
            Override::One(text) => Value::from(text.as_str()),
            Override::Many(items) => Value::from(items.clone()),
        };
        builder = builder
            .set_override(*key, value)
            .map_err(|e| invalid(key, e))?;
    }
    // A file that is not TOML: the `config` crate's message names the file and the line.
    let layers = builder
        .build()
        .map_err(|e| ConfigError::one(e.to_string()))?;
    Ok((layers, ignored_env))
}

/// The `HUBFERRY_` variables of `env` that name a setting, and the names of those that do not.
/// Those are left out rather than refused: Kubernetes gives every pod `HUBFERRY_SERVICE_HOST`,
/// `HUBFERRY_PORT` and more when a Service is called `hubferry`, and none of them is ours. (An
/// unknown key in the file is still an error: that one was written for hubferry.)
fn settings_in_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> (Map<String, String>, Vec<String>) {
    let mut settings = Map::new();
    let mut ignored = Vec::new();
    for (name, value) in env {
        let upper = name.to_ascii_uppercase();
        let known = name.starts_with("HUBFERRY_")
            && SETTINGS.iter().any(|s| s.env().as_deref() == Some(&upper));
        if known {
            settings.insert(name, value);
        } else {
            ignored.push(name);
        }
    }
    ignored.sort();
    (settings, ignored)
}

/// The setting `key` with its type; unset (no default, nothing given) reads as nothing, which
/// an `Option` takes for `None` and the other types as their empty value.
pub fn read<T: DeserializeOwned>(layers: &config::Config, key: &str) -> Result<T, String> {
    let value = match layers.get::<Value>(key) {
        Ok(value) => value,
        Err(config::ConfigError::NotFound(_)) => Value::new(None, ValueKind::Nil),
        Err(e) => return Err(e.to_string()),
    };
    T::deserialize(value).map_err(|e| e.to_string())
}

/// A problem for each key in `layers` that is no setting (only the file can hold one: the
/// environment and the flags are read by the table).
pub fn unknown_keys(layers: &config::Config) -> Vec<String> {
    let mut problems = Vec::new();
    match layers.clone().try_deserialize::<Map<String, Value>>() {
        Ok(table) => walk("", table, &mut problems),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

fn walk(prefix: &str, table: Map<String, Value>, problems: &mut Vec<String>) {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        if setting(&key).is_some() {
            continue;
        }
        let section = format!("{key}.");
        let is_section = SETTINGS.iter().any(|s| s.key.starts_with(&section));
        match value.kind {
            ValueKind::Table(table) if is_section => walk(&section, table, problems),
            _ if is_section => problems.push(format!("{key}: is a table of settings, not a value")),
            _ => {
                let known: Vec<&str> = SETTINGS
                    .iter()
                    .filter_map(|s| s.key.strip_prefix(prefix))
                    .filter(|rest| !prefix.is_empty() && !rest.contains('.'))
                    .collect();
                let problem = if known.is_empty() {
                    format!("{key}: is not a setting")
                } else {
                    let table = prefix.trim_end_matches('.');
                    format!(
                        "{key}: is not a setting; [{table}] holds {}",
                        known.join(", ")
                    )
                };
                problems.push(problem);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_environment_variable_made_from_the_table_is_taken() {
        let env = SETTINGS
            .iter()
            .filter_map(|s| s.env())
            .map(|env| (env, "x".to_owned()));
        let (taken, ignored) = settings_in_env(env);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(
            taken.len(),
            SETTINGS.len() - 1,
            "all but upstreams (file only)"
        );
        let (_, ignored) = settings_in_env([("HUBFERRY_UPSTREAMS".to_owned(), "x".to_owned())]);
        assert_eq!(ignored, ["HUBFERRY_UPSTREAMS"]);
    }
}
