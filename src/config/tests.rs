use clap::Parser;

use super::*;
use crate::config::capacity;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let flags = Flags::try_parse_from(std::iter::once("hubferry").chain(args.iter().copied()))
        .expect("flags parse");
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load_from(&flags, env)
}

/// The default admin port is none of the ports the Prometheus wiki's "Default port
/// allocations" list gives exporters and Prometheus' own components: 9090-9999 (all taken),
/// the listed ones outside that range, and 10000 onwards, where new exporters now go.
#[test]
fn the_default_admin_port_is_no_exporters() {
    let port: SocketAddr = DEFAULT_ADMIN_LISTEN.parse().unwrap();
    assert!(port.ip().is_loopback());
    let port = port.port();
    let outside_the_range = [
        3903, 7300, 8080, 8082, 8088, 8089, 8292, 8404, 9042, 9087, 9095, 9097, 9099, 16995, 19091,
        19999, 24231, 39100, 42004, 44322, 61091,
    ];
    assert!(!(9090..=9999).contains(&port) && !outside_the_range.contains(&port));
    assert!(port < 10_000);
    // Nor the mirror's own default, nor distribution's usual debug port.
    assert!(port != 5000 && port != 5001);
}

/// What Kubernetes puts in every pod of a namespace with a Service called `hubferry`.
#[test]
fn environment_variables_that_name_no_setting_are_left_out() {
    let config = load(
        &[],
        &[
            ("HUBFERRY_SERVICE_HOST", "10.96.0.12"),
            ("HUBFERRY_SERVICE_PORT", "5000"),
            ("HUBFERRY_PORT", "tcp://10.96.0.12:5000"),
            ("HUBFERRY_PORT_5000_TCP_ADDR", "10.96.0.12"),
            ("HUBFERRY_UPSTREAM", "x"),
            ("HUBFERRY_LISTEN", "127.0.0.1:5999"),
            ("HUBFERRY_LIMITS__KEEP_ALIVE", "5s"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen, Some("127.0.0.1:5999".parse().unwrap()));
    assert_eq!(config.limits.keep_alive, Duration::from_secs(5));
    assert_eq!(
        config.ignored_env,
        [
            "HUBFERRY_PORT",
            "HUBFERRY_PORT_5000_TCP_ADDR",
            "HUBFERRY_SERVICE_HOST",
            "HUBFERRY_SERVICE_PORT",
            "HUBFERRY_UPSTREAM"
        ]
    );
    for key in [
        "admin_listen",
        "auth.tokens",
        "upstream.password",
        "limits.max_streams",
    ] {
        assert!(settings::setting(key).is_some(), "{key}");
    }
}

#[test]
fn defaults_point_at_docker_hub() {
    let config = load(&[], &[]).unwrap();
    assert_eq!(config.listen, Some("0.0.0.0:5000".parse().unwrap()));
    assert_eq!(config.admin_listen, Some("127.0.0.1:5002".parse().unwrap()));
    assert!(config.tls.is_none());
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.limits.upstream_pool, 0);
    assert_eq!(
        config.docker_hub.registry.as_str(),
        "https://registry-1.docker.io/"
    );
    assert_eq!(config.docker_hub.auth.as_str(), "https://auth.docker.io/");
    assert_eq!(config.docker_hub.index.as_str(), "https://index.docker.io/");
    assert!(config.public_url.is_none());
    assert_eq!(config.timeouts.connect, Duration::from_secs(10));
    assert_eq!(config.redirect.max_hops, 5);
    assert!(!config.redirect.allow_private);
    assert!(config.workers.get() >= 1);
}

#[test]
fn flags_beat_environment_beats_file() {
    let dir = std::env::temp_dir().join(format!("hubferry-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hubferry.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\nworkers = 3\n[upstream]\nregistry = \"http://file.example\"\nindex = \"http://index.file.example\"\n[timeouts]\nconnect = \"3s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let env = [
        ("HUBFERRY_UPSTREAM__REGISTRY", "http://env.example"),
        ("HUBFERRY_WORKERS", "5"),
    ];
    let config = load(&["--config", file, "--workers", "7"], &env).unwrap();
    assert_eq!(config.workers.get(), 7);
    assert_eq!(config.listen, Some("127.0.0.1:7000".parse().unwrap()));
    assert_eq!(config.docker_hub.registry.as_str(), "http://env.example/");
    assert_eq!(
        config.docker_hub.index.as_str(),
        "http://index.file.example/"
    );
    assert_eq!(config.timeouts.connect, Duration::from_secs(3));
    let config = load(&["--config", file], &env).unwrap();
    assert_eq!(config.workers.get(), 5);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn allow_private_redirects_is_a_bool_from_file_env_or_flag() {
    let dir = tempfile_dir("allow-private");
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, "[redirect]\nallow_private = true\n").unwrap();
    let file = file.to_str().unwrap();
    assert!(
        load(&["--config", file], &[])
            .unwrap()
            .redirect
            .allow_private
    );
    let env = [("HUBFERRY_REDIRECT__ALLOW_PRIVATE", "false")];
    assert!(
        !load(&["--config", file], &env)
            .unwrap()
            .redirect
            .allow_private
    );
    let flag = ["--allow-private-redirects", "true"];
    assert!(load(&flag, &env).unwrap().redirect.allow_private);
    let err = load(&["--allow-private-redirects", "yes please"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("redirect.allow_private"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn zero_or_garbage_workers_are_refused_by_name() {
    let err = load(&["--workers", "0"], &[]).unwrap_err().to_string();
    assert!(err.contains("workers") && err.contains("'0'"), "{err}");
    let err = load(&[], &[("HUBFERRY_WORKERS", "lots")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("workers") && err.contains("lots"), "{err}");
}

#[test]
fn bad_urls_are_refused_by_name() {
    let err = load(&["--registry", "registry-1.docker.io"], &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.registry"), "{err}");
    let err = load(&["--auth", "ftp://auth.example"], &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.auth"), "{err}");
    let err = load(&["--public-url", "https://m.example/sub"], &[]).unwrap_err();
    assert!(err.to_string().contains("public_url"), "{err}");
}

/// A misspelt variable is named in the start-up warning (see
/// `environment_variables_that_name_no_setting_are_left_out`); a misspelt key in the file
/// is refused by name.
#[test]
fn unknown_keys_are_named() {
    let config = load(
        &[],
        &[
            ("HUBFERRY_LISTN", "1"),
            ("HUBFERRY_UPSTREAM__REGISTRI", "x"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.ignored_env,
        ["HUBFERRY_LISTN", "HUBFERRY_UPSTREAM__REGISTRI"]
    );
    let dir = std::env::temp_dir().join(format!("hubferry-unknown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, "[upstream]\nregistri = \"x\"\n").unwrap();
    let err = load(&["--config", file.to_str().unwrap()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("registri"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn durations_are_human_and_positive() {
    let config = load(
        &["--idle-timeout", "1m30s", "--response-timeout", "500ms"],
        &[],
    )
    .unwrap();
    assert_eq!(config.timeouts.body_idle, Duration::from_secs(90));
    assert_eq!(config.timeouts.response_headers, Duration::from_millis(500));
    let err = load(&["--connect-timeout", "soon"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeouts.connect"), "{err}");
    let err = load(&["--connect-timeout", "0s"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeouts.connect"), "{err}");
}

#[test]
fn public_url_and_upstream_paths_are_normalised() {
    let config = load(
        &[
            "--public-url",
            "https://mirror.example.com/",
            "--registry",
            "http://r.example/prefix/",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        config.public_url.unwrap().as_str(),
        "https://mirror.example.com/"
    );
    assert_eq!(
        config.docker_hub.registry.as_str(),
        "http://r.example/prefix"
    );
}

#[test]
fn listeners_can_be_switched_off_but_not_all() {
    let config = load(&["--admin-listen", "off"], &[]).unwrap();
    assert!(config.admin_listen.is_none());
    let err = load(&["--listen", "off"], &[]).unwrap_err().to_string();
    assert!(err.contains("listen"), "{err}");
    let err = load(&["--tls-listen", "127.0.0.1:5443"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.cert"), "{err}");
    let err = load(&["--log-format", "xml"], &[]).unwrap_err().to_string();
    assert!(err.contains("log_format"), "{err}");
    let err = load(&["--max-connections", "0"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_connections"), "{err}");
}

#[test]
fn the_readme_example_config_is_valid() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("An example `hubferry.toml`:")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has an example hubferry.toml");
    let dir = tempfile_dir("readme");
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, example).unwrap();
    let config = load(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(config.workers.get(), 4);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_readme_access_control_example_is_valid() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("### Access control and client limits")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has an access control example");
    let dir = tempfile_dir("readme-access");
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, example).unwrap();
    let config = load(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(config.access.allow.len(), 3);
    assert_eq!(config.limits.manifests_per_minute, 120);
    assert_eq!(config.limits.blob_streams_per_client, 8);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_readme_many_registry_example_is_valid() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("A many-registry `hubferry.toml`")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a many-registry example");
    let config = with_file("readme-many", example, &[]).unwrap();
    let ghcr = config.registries.get("ghcr.io").unwrap();
    assert_eq!(ghcr.host_names[0].to_string(), "ghcr.mirror.example.com");
    assert!(config.registries.get("harbor.example.com").is_some());
    // Host names that pick a registry are believed for the realm like server_names.
    let names: Vec<String> = config.server_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "mirror.example.com",
            "hub.mirror.example.com",
            "ghcr.mirror.example.com"
        ]
    );
}

/// The configs shipped in deploy/ load with the real loader (the systemd one's ACME
/// certificate needs no file to exist beforehand).
#[test]
fn deploy_configs_load() {
    let dir = tempfile_dir("deploy");
    for (name, text) in [
        (
            "kubernetes.toml",
            include_str!("../../deploy/kubernetes/hubferry.toml"),
        ),
        (
            "systemd.toml",
            include_str!("../../deploy/systemd/hubferry.toml"),
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let args = ["--config", file.to_str().unwrap()];
        if let Err(err) = load(&args, &[]) {
            panic!("deploy config {name} is refused: {err}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubferry-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn image_lists_come_from_flags_or_environment_and_bad_patterns_are_named() {
    let config = load(
        &[
            "--allow-image",
            "library/*,bitnami/**",
            "--deny-image",
            "nginx",
            "--denied-message",
            "no",
        ],
        &[],
    )
    .unwrap();
    assert!(config.images.check("docker.io", "library/alpine").is_ok());
    assert_eq!(
        config.images.check("docker.io", "library/nginx"),
        Err("no".into())
    );
    assert!(config.images.check("docker.io", "someorg/tool").is_err());
    let env = [("HUBFERRY_IMAGES__DENY", "private/**, someorg/*")];
    let config = load(&[], &env).unwrap();
    assert!(config.images.check("docker.io", "someorg/tool").is_err());
    assert!(config.images.check("docker.io", "library/alpine").is_ok());
    assert!(load(&[], &[]).unwrap().images.is_open());
    let err = load(&["--deny-image", "library/[x]"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("images.deny"), "{err}");
}

#[test]
fn server_names_come_from_file_environment_or_repeated_flags() {
    let shown = |config: Config| -> Vec<String> {
        config.server_names.iter().map(|n| n.to_string()).collect()
    };
    assert!(load(&[], &[]).unwrap().server_names.is_empty());
    let flags = [
        "--server-name",
        "Mirror.Example.com",
        "--server-name",
        "a.test:5000,b.test",
    ];
    assert_eq!(
        shown(load(&flags, &[]).unwrap()),
        ["mirror.example.com", "a.test:5000", "b.test"]
    );
    let env = [("HUBFERRY_SERVER_NAMES", "x.test, y.test:8080")];
    assert_eq!(shown(load(&[], &env).unwrap()), ["x.test", "y.test:8080"]);
    let dir = tempfile_dir("server-names");
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, "server_names = [\"f.test\", \"[::1]:5000\"]\n").unwrap();
    let config = load(&["--config", file.to_str().unwrap()], &[]).unwrap();
    assert_eq!(shown(config), ["f.test", "[::1]:5000"]);
    std::fs::remove_dir_all(dir).ok();
    let err = load(&["--server-name", "https://mirror.example.com"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("server_names"), "{err}");
}

fn with_file(name: &str, text: &str, args: &[&str]) -> Result<Config, ConfigError> {
    let dir = tempfile_dir(name);
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, text).unwrap();
    let mut all = vec!["--config", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let result = load(&all, &[]);
    std::fs::remove_dir_all(dir).ok();
    result
}

#[test]
fn upstreams_default_to_docker_hub_and_the_built_ins() {
    let config = load(&[], &[]).unwrap();
    let names: Vec<_> = config
        .registries
        .all()
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "docker.io",
            "ghcr.io",
            "quay.io",
            "gcr.io",
            "registry.k8s.io",
            "mcr.microsoft.com",
            "nvcr.io",
            "public.ecr.aws"
        ]
    );
    let hub = config.registries.default_upstream();
    assert_eq!(hub.name, "docker.io");
    assert!(hub.library, "Docker Hub gets library/ completion");
    assert_eq!(
        hub.realm.as_ref().unwrap().as_str(),
        "https://auth.docker.io/token"
    );
    assert!(config.registries.get("ghcr.io").unwrap().realm.is_none());
    // Another registry standing in for docker.io keeps its one-component names...
    let other = load(&["--registry", "http://127.0.0.1:5001"], &[]).unwrap();
    assert!(!other.registries.docker_hub().library);
    // ...unless told otherwise.
    let on = load(
        &["--registry", "http://127.0.0.1:5001", "--library", "true"],
        &[],
    )
    .unwrap();
    assert!(on.registries.docker_hub().library);
}

#[test]
fn upstreams_are_overridden_and_added_from_the_file() {
    let text = r#"
default_upstream = "ghcr.io"
[[upstreams]]
name = "ghcr.io"
registry = "http://127.0.0.1:6000/"
host_names = ["ghcr.mirror.test", "localhost"]
[[upstreams]]
name = "harbor.example.com"
registry = "https://harbor.example.com"
realm = "https://harbor.example.com/service/token"
library = true
[[upstreams]]
name = "docker.io"
host_names = ["hub.mirror.test"]
"#;
    let config = with_file("upstreams", text, &[]).unwrap();
    let ghcr = config.registries.get("ghcr.io").unwrap();
    assert_eq!(ghcr.registry.as_str(), "http://127.0.0.1:6000/");
    assert_eq!(ghcr.host_names.len(), 2);
    assert_eq!(config.registries.default_upstream().name, "ghcr.io");
    let harbor = config.registries.get("harbor.example.com").unwrap();
    assert!(harbor.library);
    assert_eq!(harbor.token_path(), "/token/harbor.example.com");
    let hub = config.registries.docker_hub();
    assert_eq!(hub.registry.as_str(), "https://registry-1.docker.io/");
    assert_eq!(hub.host_names[0].to_string(), "hub.mirror.test");
}

#[test]
fn bad_upstreams_are_refused_by_name() {
    for (text, key) in [
        ("[[upstreams]]\nname = \"Bad Name\"\nregistry = \"https://x\"\n", "upstreams.name"),
        ("[[upstreams]]\nname = \"new.example\"\n", "upstreams[new.example].registry"),
        ("[[upstreams]]\nname = \"quay.io\"\nregistry = \"quay.io\"\n", "upstreams[quay.io].registry"),
        ("[[upstreams]]\nname = \"docker.io\"\nregistry = \"https://x\"\n", "upstreams[docker.io].registry"),
        ("[[upstreams]]\nname = \"quay.io\"\n[[upstreams]]\nname = \"quay.io\"\n", "upstreams.name"),
        ("[[upstreams]]\nname = \"quay.io\"\nhost_names = [\"a.test\"]\n[[upstreams]]\nname = \"gcr.io\"\nhost_names = [\"a.test\"]\n", "upstreams[gcr.io].host_names"),
        ("[[upstreams]]\nname = \"quay.io\"\nlibrary = \"maybe\"\n", "upstreams[quay.io].library"),
        ("[[upstreams]]\nname = \"quay.io\"\nsurprise = 1\n", "surprise"),
        ("default_upstream = \"nowhere.example\"\n", "default_upstream"),
    ] {
        let err = with_file("bad-upstreams", text, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn ca_file_must_hold_certificates() {
    let err = load(&["--ca-file", "/nonexistent/ca.pem"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("upstream.ca_file"), "{err}");
}

#[test]
fn access_lists_and_client_limits_come_from_file_environment_or_flags() {
    let config = load(&[], &[]).unwrap();
    assert!(config.access.allow.is_empty() && config.access.deny.is_empty());
    assert_eq!(config.limits.manifests_per_minute, 0);
    assert_eq!(config.limits.blob_streams_per_client, 0);
    let dir = tempfile_dir("access");
    let file = dir.join("hubferry.toml");
    std::fs::write(
        &file,
        "[access]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ntrusted_proxies = [\"127.0.0.1\"]\n[limits]\nmanifests_per_minute = 60\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let config = load(&["--config", file], &[]).unwrap();
    let shown = |list: &[Cidr]| list.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(shown(&config.access.allow), ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(shown(&config.access.trusted_proxies), ["127.0.0.1/32"]);
    assert_eq!(config.limits.manifests_per_minute, 60);
    let env = [
        ("HUBFERRY_ACCESS__DENY", "10.1.0.0/16, 10.2.0.0/16"),
        ("HUBFERRY_LIMITS__BLOB_STREAMS_PER_CLIENT", "4"),
    ];
    let config = load(
        &[
            "--config",
            file,
            "--deny",
            "10.3.0.0/16",
            "--deny",
            "10.4.0.0/16",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(shown(&config.access.deny), ["10.3.0.0/16", "10.4.0.0/16"]);
    assert_eq!(config.limits.blob_streams_per_client, 4);
    let config = load(&["--config", file], &env).unwrap();
    assert_eq!(shown(&config.access.deny), ["10.1.0.0/16", "10.2.0.0/16"]);
    std::fs::remove_dir_all(dir).ok();
    let err = load(&["--allow", "10.0.0.0/33"], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("access.allow") && err.contains("10.0.0.0/33"),
        "{err}"
    );
    let err = load(&["--trusted-proxy", "proxy.local"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("access.trusted_proxies"), "{err}");
    let err = load(&["--manifests-per-minute", "lots"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.manifests_per_minute"), "{err}");
}

#[test]
fn the_http2_stream_limit_defaults_to_100_and_is_at_least_1() {
    assert_eq!(load(&[], &[]).unwrap().limits.h2_max_streams, 100);
    let config = load(&["--h2-max-streams", "250"], &[]).unwrap();
    assert_eq!(config.limits.h2_max_streams, 250);
    let config = load(&[], &[("HUBFERRY_LIMITS__H2_MAX_STREAMS", "32")]).unwrap();
    assert_eq!(config.limits.h2_max_streams, 32);
    for bad in ["0", "many", "4294967296"] {
        let err = load(&["--h2-max-streams", bad], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.h2_max_streams"), "{bad}: {err}");
    }
}

#[test]
fn the_download_cap_is_derived_set_or_off() {
    let derived = load(&[], &[]).unwrap().limits.max_streams;
    let memory_limit = capacity::memory_limit();
    assert_eq!(
        derived,
        StreamCap::Derived {
            max: capacity::max_streams_for(memory_limit),
            memory_limit,
        }
    );
    let config = load(&["--max-streams", "AUTO"], &[]).unwrap();
    assert_eq!(config.limits.max_streams, derived);
    let config = load(&["--max-streams", "500"], &[]).unwrap();
    assert_eq!(config.limits.max_streams, StreamCap::Set(500));
    assert_eq!(config.limits.max_streams.max(), 500);
    let config = load(&[], &[("HUBFERRY_LIMITS__MAX_STREAMS", "0")]).unwrap();
    assert_eq!(config.limits.max_streams.max(), 0);
    for bad in ["many", "-3", "1.5"] {
        let err = load(&[], &[("HUBFERRY_LIMITS__MAX_STREAMS", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_streams"), "{bad}: {err}");
    }
}

#[test]
fn auth_defaults_to_passthrough_and_refuses_settings_it_would_ignore() {
    let config = load(&[], &[]).unwrap();
    assert!(config.managed.is_none());
    assert!(config
        .registries
        .all()
        .iter()
        .all(|u| u.credentials.is_none()));
    let err = load(
        &["--upstream-username", "me"],
        &[("HUBFERRY_UPSTREAM__PASSWORD", "pw")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("upstream.username"), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
    let err = load(&["--htpasswd", "/nonexistent"], &[]).unwrap_err();
    assert!(err.to_string().contains("auth.htpasswd"), "{err}");
    let err = load(&["--auth-mode", "magic"], &[]).unwrap_err();
    assert!(err.to_string().contains("auth.mode"), "{err}");
}

#[test]
fn managed_auth_reads_users_credentials_and_keys() {
    let dir = tempfile_dir("managed-auth");
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let password_file = dir.join("password");
    std::fs::write(&password_file, "hub-secret\n").unwrap();
    let config = load(
        &[
            "--auth-mode",
            "managed",
            "--htpasswd",
            htpasswd.to_str().unwrap(),
            "--anonymous",
            "false",
            "--upstream-username",
            "hubuser",
            "--upstream-password-file",
            password_file.to_str().unwrap(),
        ],
        &[("HUBFERRY_AUTH__TOKENS", "t1,t2")],
    )
    .unwrap();
    let managed = config.managed.as_ref().unwrap();
    assert!(!managed.anonymous);
    assert_eq!(managed.token_ttl, Duration::from_secs(300));
    assert!(managed.users.verify_password("alice", "pw").is_some());
    assert!(managed.users.static_token("t2").is_some());
    let hub = config.registries.docker_hub().credentials.clone().unwrap();
    assert_eq!(hub.username, "hubuser");
    assert_eq!(hub.password.expose(), "hub-secret");
    assert!(!format!("{config:?}").contains("hub-secret"));

    // Other registries' accounts come from [[upstreams]].
    let config = with_file(
        "managed-upstreams",
        "[auth]\nmode = \"managed\"\n[[upstreams]]\nname = \"ghcr.io\"\n\
         username = \"bot\"\npassword = \"ghp\"\n",
        &[],
    )
    .unwrap();
    let ghcr = config.registries.get("ghcr.io").unwrap();
    assert_eq!(ghcr.credentials.as_ref().unwrap().username, "bot");
    assert_eq!(ghcr.registry.as_str(), "https://ghcr.io/");

    let bad = dir.join("md5");
    std::fs::write(&bad, "bob:$apr1$x$abcdefghijklmnopqrstuv\n").unwrap();
    for (args, env, key) in [
        (
            vec!["--htpasswd", bad.to_str().unwrap()],
            vec![],
            "auth.htpasswd",
        ),
        (vec!["--anonymous", "false"], vec![], "auth.anonymous"),
        (vec!["--token-ttl", "1s"], vec![], "auth.token_ttl"),
        (
            vec!["--upstream-username", "u"],
            vec![],
            "upstream.password",
        ),
        (
            vec!["--upstream-password-file", password_file.to_str().unwrap()],
            vec![("HUBFERRY_UPSTREAM__PASSWORD", "x")],
            "upstream.password_file",
        ),
        (
            vec!["--token-key-file", password_file.to_str().unwrap()],
            vec![],
            "auth.token_key_file",
        ),
    ] {
        let mut all = vec!["--auth-mode", "managed"];
        all.extend(args);
        let err = load(&all, &env).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(!err.contains("hub-secret"), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_readme_managed_auth_example_is_valid() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("### Managed auth")
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has a managed auth example");
    let dir = tempfile_dir("readme-managed");
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut text = example.to_owned();
    for (name, content) in [
        ("htpasswd", format!("alice:{hash}\n")),
        ("dockerhub-token", "dckr_pat_x\n".to_owned()),
        ("ghcr-token", "ghp_x\n".to_owned()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        text = text.replace(
            &format!("/etc/hubferry/{name}\""),
            &format!("{}\"", path.display()),
        );
    }
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, text).unwrap();
    let config = load(&["--config", file.to_str().unwrap()], &[]).unwrap();
    let managed = config.managed.as_ref().unwrap();
    assert!(managed.anonymous);
    assert!(managed.users.verify_password("alice", "pw").is_some());
    let hub = config.registries.docker_hub().credentials.as_ref().unwrap();
    assert_eq!(hub.password.expose(), "dckr_pat_x");
    let ghcr = config.registries.get("ghcr.io").unwrap();
    assert_eq!(
        ghcr.credentials.as_ref().unwrap().password.expose(),
        "ghp_x"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Three bad values, one from each layer, and two bad relations between settings: each is
/// named, in one error, rather than the first alone (a fix, a restart, the next error).
#[test]
fn every_invalid_setting_is_reported_at_once() {
    let dir = tempfile_dir("all-at-once");
    let file = dir.join("hubferry.toml");
    std::fs::write(&file, "[timeouts]\nconnect = \"soon\"\n").unwrap();
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--workers",
        "0",
        "--allow",
        "10.0.0.0/33",
    ];
    let err = load(&args, &[("HUBFERRY_LOG_FORMAT", "xml")]).unwrap_err();
    std::fs::remove_dir_all(dir).ok();
    let problems = err.problems();
    for key in ["workers", "timeouts.connect", "log_format", "access.allow"] {
        let named = problems
            .iter()
            .filter(|p| p.starts_with(&format!("{key}: ")));
        assert_eq!(named.count(), 1, "{key} in {problems:?}");
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with("invalid configuration, 4 problems: "),
        "{line}"
    );

    // Once every value parses, the checks between settings are reported together too.
    let err = load(
        &[
            "--tls-listen",
            "127.0.0.1:5443",
            "--ca-file",
            "/nonexistent/ca.pem",
            "--default-upstream",
            "nowhere.example",
        ],
        &[],
    )
    .unwrap_err();
    for key in [
        "tls.cert",
        "tls.key",
        "upstream.ca_file",
        "default_upstream",
    ] {
        assert!(
            err.problems()
                .iter()
                .any(|p| p.starts_with(&format!("{key}: "))),
            "{key} in {err}"
        );
    }
}

/// Every row of README.md's configuration table is a declared setting, with the declaration's
/// flag, environment variable and default; every declared setting has its row.
/// (README.zh-CN.md's table is kept in step with this one by `tests/readme_sync.rs`.)
#[test]
fn the_readme_table_matches_the_declarations() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration section");
    let mut rows = std::collections::BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`');
        let row = [cells[2], cells[3], cells[4]].map(str::to_owned);
        assert!(rows.insert(key, row).is_none(), "{key} has two rows");
    }
    let code = |text: String| format!("`{text}`");
    let mut wrong = Vec::new();
    for setting in SETTINGS {
        let flag = match setting.flag {
            Some(_) => code(setting.flag_text()),
            None => setting.flag_text(),
        };
        let env = setting.env().map_or("none".to_owned(), code);
        let expected = [flag, env, setting.default_text()];
        match rows.remove(setting.key) {
            Some(row) if row == expected => {}
            found => wrong.push(format!(
                "{}: README has {found:?}, the declaration says | `{}` | {} |",
                setting.key,
                setting.key,
                expected.join(" | ")
            )),
        }
    }
    for key in rows.keys() {
        wrong.push(format!("{key}: in the README, but declared nowhere"));
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// One setting of each value type, given in each layer in turn: the default, then the file,
/// then the environment, then a flag decides. TOML's native numbers and booleans count as the
/// same value written as text.
#[test]
fn each_type_is_layered_defaults_file_environment_flags() {
    struct Case<'a> {
        file: &'a str,
        env: (&'a str, &'a str),
        flag: &'a [&'a str],
        shown: fn(&Config) -> String,
        /// What `shown` gives with the default, the file, the environment, the flag.
        expected: [&'static str; 4],
    }
    let dir = tempfile_dir("layers-per-type");
    let pem = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, "").unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (file_cert, env_cert, flag_cert) = (pem("file.pem"), pem("env.pem"), pem("flag.pem"));
    let key_file = pem("key.pem");
    let tls_file = format!(
        "[tls]\nlisten = \"127.0.0.1:5443\"\ncert = \"{file_cert}\"\nkey = \"{key_file}\"\n"
    );
    let cases = [
        Case {
            // an address
            file: "listen = \"127.0.0.1:7001\"\n",
            env: ("HUBFERRY_LISTEN", "127.0.0.1:7002"),
            flag: &["--listen", "127.0.0.1:7003"],
            shown: |c| format!("{:?}", c.listen.unwrap()),
            expected: [
                "0.0.0.0:5000",
                "127.0.0.1:7001",
                "127.0.0.1:7002",
                "127.0.0.1:7003",
            ],
        },
        Case {
            // a count, native in the file
            file: "[limits]\nh2_max_streams = 101\n",
            env: ("HUBFERRY_LIMITS__H2_MAX_STREAMS", "102"),
            flag: &["--h2-max-streams", "103"],
            shown: |c| c.limits.h2_max_streams.to_string(),
            expected: ["100", "101", "102", "103"],
        },
        Case {
            // a bool, native in the file
            file: "[redirect]\nallow_private = true\n",
            env: ("HUBFERRY_REDIRECT__ALLOW_PRIVATE", "false"),
            flag: &["--allow-private-redirects", "TRUE"],
            shown: |c| c.redirect.allow_private.to_string(),
            expected: ["false", "true", "false", "true"],
        },
        Case {
            // a duration
            file: "[timeouts]\nconnect = \"3s\"\n",
            env: ("HUBFERRY_TIMEOUTS__CONNECT", "4s"),
            flag: &["--connect-timeout", "1m"],
            shown: |c| format!("{:?}", c.timeouts.connect),
            expected: ["10s", "3s", "4s", "60s"],
        },
        Case {
            // a URL
            file: "[upstream]\nindex = \"http://file.example\"\n",
            env: ("HUBFERRY_UPSTREAM__INDEX", "http://env.example/"),
            flag: &["--index", "https://flag.example/path/"],
            shown: |c| c.docker_hub.index.to_string(),
            expected: [
                "https://index.docker.io/",
                "http://file.example/",
                "http://env.example/",
                "https://flag.example/path",
            ],
        },
        Case {
            // a list: a TOML array, comma-separated text, a repeated flag
            file: "[access]\ndeny = [\"10.1.0.0/16\", \"10.2.0.0/16\"]\n",
            env: ("HUBFERRY_ACCESS__DENY", "10.3.0.0/16,10.4.0.0/16"),
            flag: &["--deny", "10.5.0.0/16", "--deny", "10.6.0.0/16,10.7.0.0/16"],
            shown: |c| {
                let shown: Vec<String> = c.access.deny.iter().map(|n| n.to_string()).collect();
                shown.join(" ")
            },
            expected: [
                "",
                "10.1.0.0/16 10.2.0.0/16",
                "10.3.0.0/16 10.4.0.0/16",
                "10.5.0.0/16 10.6.0.0/16 10.7.0.0/16",
            ],
        },
        Case {
            // a choice
            file: "log_format = \"json\"\n",
            env: ("HUBFERRY_LOG_FORMAT", "text"),
            flag: &["--log-format", "json"],
            shown: |c| format!("{:?}", c.log_format),
            expected: ["Text", "Json", "Text", "Json"],
        },
        Case {
            // text
            file: "[images]\ndenied_message = \"from the file\"\n",
            env: ("HUBFERRY_IMAGES__DENIED_MESSAGE", "from the environment"),
            flag: &["--denied-message", "from a flag"],
            shown: |c| c.images.message.clone(),
            expected: [
                "this image is not served by this mirror",
                "from the file",
                "from the environment",
                "from a flag",
            ],
        },
        Case {
            // a number or a word
            file: "[limits]\nmax_streams = 7\n",
            env: ("HUBFERRY_LIMITS__MAX_STREAMS", "0"),
            flag: &["--max-streams", "9"],
            shown: |c| match c.limits.max_streams {
                StreamCap::Set(n) => n.to_string(),
                StreamCap::Derived { .. } => "auto".into(),
            },
            expected: ["auto", "7", "0", "9"],
        },
        Case {
            // a path (TLS on in the file, so that the certificate is read)
            file: &tls_file,
            env: ("HUBFERRY_TLS__CERT", &env_cert),
            flag: &["--tls-cert", &flag_cert],
            shown: |c| match &c.tls {
                Some(tls) => tls.cert.file_name().unwrap().to_string_lossy().into_owned(),
                None => "off".into(),
            },
            expected: ["off", "file.pem", "env.pem", "flag.pem"],
        },
    ];
    let file = dir.join("hubferry.toml");
    let config_flag = ["--config", file.to_str().unwrap()];
    for case in cases {
        std::fs::write(&file, case.file).unwrap();
        let with_flag: Vec<&str> = config_flag.iter().chain(case.flag).copied().collect();
        let layered = [
            load(&[], &[]),
            load(&config_flag, &[]),
            load(&config_flag, &[case.env]),
            load(&with_flag, &[case.env]),
        ];
        let shown: Vec<String> = layered
            .iter()
            .map(|config| (case.shown)(config.as_ref().unwrap()))
            .collect();
        assert_eq!(shown, case.expected, "{}", case.env.0);
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Inside `[[upstreams]]` and `[auth]` too, every problem is named, not the first one found.
#[test]
fn every_problem_of_the_registry_list_and_of_auth_is_reported() {
    let err = with_file(
        "upstreams-all",
        r#"
default_upstream = "nowhere.example"

[[upstreams]]
name = "Bad Name"
registry = "https://bad.example"

[[upstreams]]
name = "one.example"
registry = "ftp://one.example"
library = "maybe"
host_names = ["a.example", "not a host"]

[[upstreams]]
name = "two.example"

[[upstreams]]
name = "three.example"
registry = "https://three.example"
host_names = ["a.example"]
"#,
        &[],
    )
    .unwrap_err();
    assert_names(
        &err,
        &[
            "upstreams.name",
            "upstreams[one.example].registry",
            "upstreams[one.example].library",
            "upstreams[one.example].host_names",
            "upstreams[two.example].registry",
            "default_upstream",
        ],
    );

    let err = with_file(
        "auth-all",
        "[auth]\ntokens = [\"ci:sometoken\"]\ntoken_key_file = \"/nonexistent/key\"\n\
         [upstream]\nusername = \"me\"\npassword = \"secret\"\n",
        &["--htpasswd", "/nonexistent/htpasswd"],
    )
    .unwrap_err();
    assert_names(
        &err,
        &[
            "auth.htpasswd",
            "auth.tokens",
            "auth.token_key_file",
            "upstream.username",
        ],
    );

    let err = load(
        &[
            "--auth-mode",
            "managed",
            "--anonymous",
            "false",
            "--token-ttl",
            "2s",
            "--token-key-file",
            "/nonexistent/key",
        ],
        &[],
    )
    .unwrap_err();
    assert_names(
        &err,
        &["auth.anonymous", "auth.token_ttl", "auth.token_key_file"],
    );
}

/// Asserts that `err` names each of `keys` (`key: problem`).
fn assert_names(err: &ConfigError, keys: &[&str]) {
    for key in keys {
        assert!(
            err.problems()
                .iter()
                .any(|p| p.starts_with(&format!("{key}: "))),
            "{key} in {:?}",
            err.problems()
        );
    }
}

#[test]
fn the_egress_proxy_comes_from_the_setting_or_the_conventional_variables() {
    use crate::upstream::proxy::ProxyKind;
    // The setting wins over the variables; no_proxy falls back to the variable.
    let config = load(
        &["--egress-proxy", "socks5h://127.0.0.1:1080"],
        &[("https_proxy", "http://env:3128"), ("NO_PROXY", ".corp")],
    )
    .unwrap();
    let route = &config.egress.route;
    assert_eq!(route.https.as_ref().unwrap().kind, ProxyKind::Socks5h);
    assert_eq!(route.http, route.https);
    assert_eq!(route.bypass.len(), 1);
    // The variables, per scheme, when the setting is unset.
    let config = load(
        &["--no-proxy", "10.0.0.0/8,registry.corp"],
        &[("HTTPS_PROXY", "http://env:3128"), ("no_proxy", "ignored")],
    )
    .unwrap();
    let route = &config.egress.route;
    assert_eq!(route.https.as_ref().unwrap().host, "env");
    assert!(route.http.is_none());
    assert_eq!(route.bypass.len(), 2);
    // `none`: the variables are ignored.
    let config = load(
        &["--egress-proxy", "none"],
        &[("https_proxy", "http://env:3128")],
    )
    .unwrap();
    assert!(config.egress.route.is_direct());
    // Bad values are named by where they came from; no password is shown.
    let err = load(&[], &[("http_proxy", "ftp://u:secret@x:1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("environment variable http_proxy"), "{err}");
    assert!(!err.contains("secret"), "{err}");
    let err = load(&["--egress-proxy", "https://p:1"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("egress.proxy"), "{err}");
    let err = load(&["--dns", "resolver.example"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("egress.dns"), "{err}");
    let config = load(&["--dns", "1.1.1.1,127.0.0.1:5353,[::1]:53"], &[]).unwrap();
    assert_eq!(
        config.egress.dns,
        ["1.1.1.1:53", "127.0.0.1:5353", "[::1]:53"].map(|a| a.parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn the_egress_proxy_password_can_come_from_a_file() {
    let dir = tempfile_dir("proxy-password");
    let file = dir.join("password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let path = file.to_str().unwrap();
    let config = load(
        &[
            "--egress-proxy",
            "http://mirror@proxy:3128",
            "--egress-proxy-password-file",
            path,
        ],
        &[],
    )
    .unwrap();
    let login = config
        .egress
        .route
        .https
        .as_ref()
        .unwrap()
        .login
        .clone()
        .unwrap();
    assert_eq!(
        (login.user.as_str(), login.password.as_str()),
        ("mirror", "s3cret")
    );
    let err = load(
        &[
            "--egress-proxy",
            "http://proxy:3128",
            "--egress-proxy-password-file",
            path,
        ],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("names no user"), "{err}");
    let err = load(&["--egress-proxy-password-file", path], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("egress.proxy is not"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_upstream_has_its_own_proxy_and_every_proxy_is_trusted() {
    use crate::upstream::proxy::ProxyChoice;
    let config = with_file(
        "upstream-proxy",
        "[egress]\nproxy = \"http://10.1.2.3:3128\"\nno_proxy = [\".corp\"]\n\n\
         [[upstreams]]\nname = \"docker.io\"\nproxy = \"none\"\n\n\
         [[upstreams]]\nname = \"ghcr.io\"\nproxy = \"socks5h://10.9.9.9:1080\"\n",
        &[],
    )
    .unwrap();
    let hub = config.registries.docker_hub();
    assert_eq!(hub.proxy, Some(ProxyChoice::Direct));
    assert!(config.egress.route_of(hub.proxy.as_ref()).is_direct());
    let ghcr = config.registries.get("ghcr.io").unwrap();
    let route = config.egress.route_of(ghcr.proxy.as_ref());
    assert_eq!(route.https.as_ref().unwrap().host, "10.9.9.9");
    // The default's no_proxy still applies.
    assert!(route.proxy_for(true, "registry.corp", 443).is_none());
    let quay = config.registries.get("quay.io").unwrap();
    assert_eq!(
        config.egress.route_of(quay.proxy.as_ref()),
        config.egress.route
    );
    // Configured proxies may be on private addresses, as configured upstreams may.
    let policy = config.egress_policy();
    assert!(policy.trusts("10.1.2.3", 3128));
    assert!(policy.trusts("10.9.9.9", 1080));
    assert!(!policy.trusts("10.9.9.9", 80));
    let err = with_file(
        "upstream-proxy-bad",
        "[[upstreams]]\nname = \"ghcr.io\"\nproxy = \"gopher://x\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("upstreams[ghcr.io].proxy"), "{err}");
}

#[test]
fn endpoints_put_the_registry_first_and_the_rest_after() {
    let config = with_file(
        "endpoints",
        "[[upstreams]]\nname = \"docker.io\"\n\
         endpoints = [\"https://registry-1.docker.io\", \"https://mirror.gcr.io\"]\n\n\
         [[upstreams]]\nname = \"quay.io\"\nendpoints = [\"https://mirror.quay.example\"]\n\n\
         [[upstreams]]\nname = \"private.example\"\n\
         endpoints = [\"https://a.private.example\", \"http://10.0.0.9:5000\"]\n",
        &[],
    )
    .unwrap();
    let urls = |name: &str| -> Vec<String> {
        config
            .registries
            .get(name)
            .unwrap()
            .endpoints()
            .map(|u| u.as_str().to_owned())
            .collect()
    };
    assert_eq!(
        urls("docker.io"),
        ["https://registry-1.docker.io/", "https://mirror.gcr.io/"]
    );
    // A built-in registry keeps its address first.
    assert_eq!(
        urls("quay.io"),
        ["https://quay.io/", "https://mirror.quay.example/"]
    );
    assert_eq!(
        urls("private.example"),
        ["https://a.private.example/", "http://10.0.0.9:5000/"]
    );
    // Configured endpoints may be private, as configured registries may.
    assert!(config.egress_policy().trusts("10.0.0.9", 5000));
    // --registry stays docker.io's first endpoint.
    let config = load(&["--registry", "http://127.0.0.1:5001"], &[]).unwrap();
    assert!(config.registries.docker_hub().fallbacks.is_empty());
    let err = with_file(
        "endpoints-bad",
        "[[upstreams]]\nname = \"ghcr.io\"\nendpoints = [\"ftp://x\"]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("upstreams[ghcr.io].endpoints"), "{err}");
    let config = load(
        &["--breaker-failures", "5", "--breaker-cooldown", "2m"],
        &[],
    )
    .unwrap();
    assert_eq!(config.breaker.failures, 5);
    assert_eq!(config.breaker.cooldown, Duration::from_secs(120));
}

/// The README's egress and failover examples load as written (the password file aside, which
/// names a path on the reader's server).
#[test]
fn the_readme_egress_and_failover_examples_are_valid() {
    let readme = include_str!("../../README.md");
    let dir = tempfile_dir("readme-egress");
    let password = dir.join("proxy-password");
    std::fs::write(&password, "secret\n").unwrap();
    let mut loaded = 0;
    for section in [
        "### Reaching the upstream through a proxy",
        "### Several endpoints per registry",
    ] {
        let text = readme
            .split(section)
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .expect("README has the section");
        for block in text.split("```toml\n").skip(1) {
            let example = block
                .split("```")
                .next()
                .unwrap()
                .replace("/etc/hubferry/proxy-password", password.to_str().unwrap());
            let config = with_file("readme-egress-example", &example, &[])
                .unwrap_or_else(|e| panic!("{e}\n{example}"));
            assert!(
                !config.egress.route.is_direct()
                    || !config.registries.docker_hub().fallbacks.is_empty()
            );
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn acme_settings_make_the_tls_listener_serve_files_in_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let config = load(
        &[
            "--tls-listen",
            "127.0.0.1:5443",
            "--acme-domain",
            "Mirror.Example.com.,mirror.example.com",
            "--acme-domain",
            "hub.example.com",
            "--acme-cache-dir",
            dir,
        ],
        &[("HUBFERRY_TLS__ACME__EMAIL", "ops@example.com")],
    )
    .unwrap();
    let tls = config.tls.unwrap();
    let acme = tls.acme.clone().unwrap();
    assert_eq!(acme.domains, ["mirror.example.com", "hub.example.com"]);
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.directory.as_str(), values::LETS_ENCRYPT);
    assert_eq!(acme.challenge, AcmeChallenge::Auto);
    assert_eq!(acme.retry, Duration::from_secs(60));
    assert!(tls.cert.starts_with(cache.path()) && tls.key.starts_with(cache.path()));
    let name = tls.cert.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("mirror.example.com-") && name.ends_with(".crt"),
        "{name}"
    );
    assert!(acme.account_file().starts_with(cache.path()));

    // Another CA: other files (its certificate is not this one's), and another account.
    let staging = load(
        &[
            "--tls-listen",
            "127.0.0.1:5443",
            "--acme-domain",
            "mirror.example.com,hub.example.com",
            "--acme-cache-dir",
            dir,
            "--acme-directory",
            "letsencrypt-staging",
        ],
        &[],
    )
    .unwrap();
    let staging_tls = staging.tls.unwrap();
    let staging_acme = staging_tls.acme.as_ref().unwrap();
    assert_eq!(
        staging_acme.directory.as_str(),
        values::LETS_ENCRYPT_STAGING
    );
    assert_ne!(staging_tls.cert, tls.cert);
    assert_ne!(staging_acme.account_file(), acme.account_file());
}

#[test]
fn acme_mistakes_are_named() {
    let problem = |args: &[&str]| load(args, &[]).unwrap_err().to_string();
    let err = problem(&["--acme-domain", "mirror.example.com"]);
    assert!(err.contains("tls.acme.domains: needs tls.listen"), "{err}");
    let err = problem(&[
        "--tls-listen",
        "127.0.0.1:5443",
        "--acme-domain",
        "mirror.example.com",
        "--tls-cert",
        "/etc/hubferry/tls.crt",
        "--acme-email",
        "not-an-address",
        "--acme-challenge",
        "http-01",
        "--listen",
        "off",
    ]);
    for expected in [
        "tls.cert: is set with tls.acme.domains",
        "tls.acme.email: 'not-an-address' is not an e-mail address",
        "tls.acme.challenge: is http-01",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    for (value, expected) in [
        ("*.example.com", "wildcard"),
        ("192.0.2.1", "an address"),
        ("mirror_example.com", "not a DNS name"),
        ("-x.example.com", "not a DNS name"),
    ] {
        let flag = format!("--acme-domain={value}");
        let err = problem(&["--tls-listen", "127.0.0.1:5443", &flag]);
        assert!(
            err.contains("tls.acme.domains") && err.contains(expected),
            "{value}: {err}"
        );
    }
    let err = problem(&[
        "--tls-listen",
        "127.0.0.1:5443",
        "--acme-domain",
        "mirror.example.com",
        "--acme-directory",
        "http://ca.example.com/directory",
    ]);
    assert!(
        err.contains("tls.acme.directory") && err.contains("HTTPS"),
        "{err}"
    );
}
