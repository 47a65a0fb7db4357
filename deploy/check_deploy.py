"""What schema validation cannot see in deploy/: hubferry's own TOML configs, settings that
must agree across files, and the admin listener (/healthz, /readyz, /metrics), which no
example may publish beyond loopback. Run by validate.sh with the rendered kustomize output as
argument.

"""

import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent

# Files whose examples are copied by readers: every command and address in them is checked.
DOCS = ["README.md", "README.zh-CN.md", "deploy/Dockerfile"]

DEFAULT_SHUTDOWN_GRACE = 30.0

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def seconds(text):
    """A duration as hubferry and systemd write them ("30s", "1m30s", "500ms"), in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*(ms|min|s|m|h)", text)
    if not parts or re.sub(r"(\d+)\s*(ms|min|s|m|h)|\s", "", text):
        raise ValueError(f"'{text}' is not a duration like 30s or 1m30s")
    return sum(int(n) * units[u] for n, u in parts)


def check_config(where, text):
    """Parses one hubferry TOML config and returns it (or None)."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(where, f"not valid TOML: {e}")
        return None
    # Whether hubferry accepts every key is checked by hubferry's own loader, in the unit
    # test `deploy_configs_load` (src/config/tests.rs): no second list of keys to keep in step here.
    try:
        seconds(str(config.get("shutdown_grace", "30s")))
    except ValueError as e:
        problem(where, f"shutdown_grace: {e}")
    return config


def shutdown_grace(config):
    try:
        return seconds(str(config.get("shutdown_grace", "30s")))
    except ValueError:
        return DEFAULT_SHUTDOWN_GRACE


def quantity(text):
    """A Kubernetes memory quantity ("512Mi", "1G", "268435456") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text).strip())
    if not match:
        raise ValueError(f"'{text}' is not a memory quantity like 512Mi")
    return int(match.group(1)) * units.get(match.group(2), 1)


def flag(args, name):
    """The value of --name=VALUE or --name VALUE in a container's command line."""
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def default_admin_listen():
    """hubferry's default admin address, read from where hubferry defines it, so this check and
    the binary cannot disagree."""
    found = re.findall(r'pub const DEFAULT_ADMIN_LISTEN: &str = "([^"]+)";',
                       (REPO / "src/config/mod.rs").read_text())
    if len(found) != 1:
        problem("src/config/mod.rs", "no DEFAULT_ADMIN_LISTEN, which check_deploy.py reads the "
                                 "default admin address from")
        return "127.0.0.1:0"
    return found[0]


def split_address(addr):
    """(host, port) of HOST:PORT or [V6]:PORT."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), port


def is_loopback(host):
    return host.startswith("127.") or host in ("localhost", "::1")


def logical_lines(text):
    """(number of its first line, text) of every line, backslash continuations joined, as a
    shell or a Dockerfile reads them."""
    joined, start = "", None
    for number, line in enumerate(text.splitlines(), 1):
        start = start or number
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        yield start, joined + line
        joined, start = "", None
    if start:
        yield start, joined


def dockerfile_instructions():
    """(instruction, arguments) of deploy/Dockerfile."""
    for _, line in logical_lines((DEPLOY / "Dockerfile").read_text()):
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def check_dockerfile(default_port):
    """The image binds the admin listener for probes and Prometheus on the container network,
    on the default port, set in the environment so that a --admin-listen a user adds after the
    image name overrides it (as a flag it would be given twice, which hubferry refuses).
    Returns the image's admin port."""
    where = "deploy/Dockerfile"
    env, exposed, commands = {}, set(), []
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in rest.split() if "=" in pair)
        elif word == "EXPOSE":
            exposed.update(port.split("/")[0] for port in rest.split())
        elif word in ("ENTRYPOINT", "CMD"):
            commands.append(rest)
    for command in commands:
        if "--admin-listen" in command:
            problem(where, "sets --admin-listen on the command line; set HUBFERRY_ADMIN_LISTEN "
                           "instead, so that `docker run IMAGE --admin-listen ADDR` works")
    admin = env.get("HUBFERRY_ADMIN_LISTEN")
    if admin is None:
        problem(where, "the image must set HUBFERRY_ADMIN_LISTEN (probes cannot reach the "
                       "loopback default)")
        return default_port
    host, port = split_address(admin)
    if is_loopback(host):
        problem(where, f"HUBFERRY_ADMIN_LISTEN={admin} is loopback-only: probes cannot reach it")
    if port != default_port:
        problem(where, f"HUBFERRY_ADMIN_LISTEN={admin}: use hubferry's default port "
                       f"{default_port}, which the docs name")
    if port not in exposed:
        problem(where, f"EXPOSE does not list the admin port {port}")
    return port


def published_ports(command):
    """(host address or None, container port) of every -p/--publish of a docker or podman
    command line."""
    for spec in re.findall(r"(?:^|\s)(?:-p|--publish)(?:=|\s+)(\S+)", command):
        spec = spec.strip("'\"").split("/")[0]
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]:")
            yield host, rest.rpartition(":")[2]
            continue
        parts = spec.split(":")
        yield (parts[0] if len(parts) == 3 else None), parts[-1]


def check_docs(admin_ports):
    """No example publishes the admin port beyond loopback (`-p 5002:5002` reaches it from
    everywhere the host is reachable), and every example that asks it for /metrics, /healthz or
    /readyz uses its port."""
    files = [REPO / name for name in DOCS] + sorted(DEPLOY.rglob("*.md"))
    for path in files:
        where = path.relative_to(REPO)
        for number, line in logical_lines(path.read_text()):
            if re.search(r"\b(docker|podman|nerdctl)\s+(run|create|container\s+run)\b", line):
                for host, port in published_ports(line):
                    if port in admin_ports and not (host and is_loopback(host.strip("[]"))):
                        problem(f"{where}:{number}", f"publishes the admin port {port} to every "
                                                     f"interface; leave it unpublished or bind "
                                                     f"it to 127.0.0.1")
            for port in re.findall(r"(?:localhost|127\.0\.0\.1|\[::1\]):(\d+)/"
                                   r"(?:metrics|healthz|readyz)\b", line):
                if port not in admin_ports:
                    problem(f"{where}:{number}", f"asks port {port} for an admin endpoint; the "
                                                f"admin listener is on {', '.join(sorted(admin_ports))}")


def check_kubernetes(rendered, default_admin):
    base = DEPLOY / "kubernetes"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    # A manifest that kustomization.yaml does not list would escape the schema check.
    listed = set(kustomization.get("resources", []))
    for path in sorted(base.glob("*.y*ml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            problem(path.relative_to(DEPLOY.parent), "not listed in kustomization.yaml resources")

    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    where = "deploy/kubernetes"
    missing = False
    # Two Services: the mirror's, and hubferry-metrics with the admin port alone.
    expected = {"Deployment": 1, "Service": 2, "ConfigMap": 1, "HorizontalPodAutoscaler": 1,
                "PodDisruptionBudget": 1, "Ingress": 1, "NetworkPolicy": 1}
    for kind, count in expected.items():
        if len(by_kind.get(kind, [])) != count:
            problem(where, f"expected {count} {kind}, found {len(by_kind.get(kind, []))}")
            missing = True
    if missing:
        return None

    # The config as the pods get it (main() has checked its keys in hubferry.toml).
    try:
        config = tomllib.loads(by_kind["ConfigMap"][0].get("data", {}).get("hubferry.toml", ""))
    except tomllib.TOMLDecodeError:
        return None

    pod = by_kind["Deployment"][0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    if flag(args, "config") != "/etc/hubferry/hubferry.toml":
        problem(where, "the container must run with --config /etc/hubferry/hubferry.toml")
    if flag(args, "workers") is None:
        problem(where, "the container args must set --workers (match it to the CPU limit)")

    # The probes and the scrape annotation reach the admin listener only on the port it binds.
    admin = flag(args, "admin-listen") or config.get("admin_listen", default_admin)
    host, port = split_address(admin)
    ports = {p.get("name"): p for p in container.get("ports", [])}
    if is_loopback(host):
        problem(where, f"admin listener {admin} is loopback-only: probes cannot reach it")
    admin_port = ports.get("admin", {})
    if str(admin_port.get("containerPort")) != port:
        problem(where, f"container port 'admin' is {admin_port.get('containerPort')}, admin "
                       f"listener is {admin}")
    annotations = by_kind["Deployment"][0]["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != port:
        problem(where, "prometheus.io/port annotation is not the admin listener's port")

    # The admin port stays inside the cluster: no hostPort (the node's address), no Service that
    # reaches it from outside, no Ingress route to it.
    if "hostPort" in admin_port:
        problem(where, "the admin container port has a hostPort: it would be reachable on the "
                       "node's address")
    for service in by_kind["Service"]:
        kind = service["spec"].get("type", "ClusterIP")
        for p in service["spec"].get("ports", []):
            admin_target = (str(p.get("targetPort")) in ("admin", port)
                            or str(p.get("port")) == port)
            if admin_target and (kind != "ClusterIP" or "nodePort" in p):
                problem(where, f"Service {service['metadata']['name']} exposes the admin port "
                               f"as {kind}: keep it ClusterIP")
    for ingress in by_kind["Ingress"]:
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path.get("backend", {}).get("service", {}).get("port", {})
                if backend.get("name") == "admin" or str(backend.get("number")) == port:
                    problem(where, f"Ingress {ingress['metadata']['name']} routes "
                                   f"{path.get('path')} to the admin port")

    # The kubelet kills the container after terminationGracePeriodSeconds, preStop included:
    # shorter than preStop + shutdown_grace would cut off the downloads hubferry is finishing.
    grace = shutdown_grace(config)
    pre_stop = (container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
                .get("seconds", 0))
    period = pod.get("terminationGracePeriodSeconds", 30)
    if period <= pre_stop + grace:
        problem(where, f"terminationGracePeriodSeconds {period} is not longer than preStop "
                       f"{pre_stop}s + shutdown_grace {grace:g}s")

    # A download cap set by hand must fit the container's memory limit, at the budget
    # src/config/capacity.rs uses for "auto" (64 MiB reserve, 256 KiB per download); 0 is no cap.
    cap = config.get("limits", {}).get("max_streams", "auto")
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory is None:
        problem(where, "the container needs a memory limit (limits.max_streams is sized from it)")
    elif str(cap).strip().lower() != "auto":
        need = 64 * 2**20 + int(cap) * 256 * 2**10
        if int(cap) == 0 or need > quantity(memory):
            problem(where, f"limits.max_streams = {cap} does not fit the memory limit {memory}: "
                           f"use \"auto\" or at most "
                           f"{max(0, quantity(memory) - 64 * 2**20) // (256 * 2**10)}")

    # Clients get token realms built from public_url: it has to be the Ingress's address.
    public = urlsplit(config.get("public_url", ""))
    hosts = {rule.get("host") for rule in by_kind["Ingress"][0]["spec"].get("rules", [])}
    if public.scheme != "https" or public.hostname not in hosts:
        problem(where, f"public_url '{config.get('public_url')}' is not https:// on an Ingress "
                       f"host ({', '.join(sorted(h for h in hosts if h))})")
    return port


def check_compose(image_admin_port):
    """deploy/compose.yaml: the admin listener is not published (the image binds it on all of
    the container's interfaces), the health check asks it, and the ACME cache is on a volume
    (without one every re-creation orders a new certificate, and Let's Encrypt allows 5 a week)."""
    where = "deploy/compose.yaml"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose.get("services", {}).get("hubferry")
    if service is None:
        problem(where, "no hubferry service")
        return
    for spec in service.get("ports", []):
        container = str(spec).split("/")[0].rpartition(":")[2]
        if container == image_admin_port:
            problem(where, f"publishes the admin port {image_admin_port}; the health check "
                           f"reaches it from inside the container")
    test = service.get("healthcheck", {}).get("test", [])
    if "--healthcheck" not in test:
        problem(where, "the health check must run hubferry --healthcheck (the image has no curl)")
    env = service.get("environment", {})
    cache = env.get("HUBFERRY_TLS__ACME__CACHE_DIR", "/var/lib/hubferry/acme")
    mounts = [str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)]
    if not any(cache == m or cache.startswith(m.rstrip("/") + "/") for m in mounts):
        problem(where, f"tls.acme.cache_dir {cache} is not on a volume")
    grace = shutdown_grace({})
    if seconds(service.get("stop_grace_period", "10s")) <= grace:
        problem(where, f"stop_grace_period must be longer than shutdown_grace ({grace:g}s)")


def check_complete(rendered):
    """The base with every component: the ServiceMonitor selects the metrics Service and names
    its admin port; the managed-auth component's variables are settings the README lists; the
    main Service carries no admin port."""
    where = "deploy/examples/kubernetes-complete"
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for monitor in by_kind.get("ServiceMonitor", []):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services.values()
                  if wanted.items() <= s["metadata"].get("labels", {}).items()]
        if [s["metadata"]["name"] for s in chosen] != ["hubferry-metrics"]:
            problem(where, f"ServiceMonitor selects {[s['metadata']['name'] for s in chosen]}, "
                           f"not hubferry-metrics alone")
        ports = {p.get("name") for s in chosen for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in ports:
                problem(where, f"ServiceMonitor port {endpoint.get('port')} is not on "
                               f"hubferry-metrics")
    if not by_kind.get("ServiceMonitor"):
        problem(where, "no ServiceMonitor rendered")
    if any(p.get("name") == "admin" for p in services["hubferry"]["spec"]["ports"]):
        problem(where, "the hubferry Service carries the admin port; it belongs on hubferry-metrics")
    readme = (REPO / "README.md").read_text()
    container = by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    for var in container.get("env", []):
        if var["name"].startswith("HUBFERRY_") and f"`{var['name']}`" not in readme:
            problem(where, f"{var['name']} names no setting in README.md's table")


def check_systemd(default_admin):
    where = "deploy/systemd"
    config = check_config(f"{where}/hubferry.toml", (DEPLOY / "systemd/hubferry.toml").read_text())
    if config is None:
        return
    # A single server has nothing in front of it: the admin listener stays on loopback.
    admin = str(config.get("admin_listen", default_admin))
    if admin != "off" and not is_loopback(split_address(admin)[0]):
        problem(f"{where}/hubferry.toml", f"admin_listen {admin} is reachable from the network; "
                                          f"keep it on 127.0.0.1")
    unit = (DEPLOY / "systemd/hubferry.service").read_text()
    timeout = re.search(r"^TimeoutStopSec=(.+)$", unit, re.M)
    grace = shutdown_grace(config)
    # systemd also takes bare seconds, which hubferry does not.
    value = timeout.group(1).strip() if timeout else "0"
    value = f"{value}s" if value.isdigit() else value
    if seconds(value) <= grace:
        problem(f"{where}/hubferry.service", f"TimeoutStopSec must be longer than shutdown_grace "
                                             f"({grace:g}s)")


def main():
    default_admin = default_admin_listen()
    check_config("deploy/kubernetes/hubferry.toml",
                 (DEPLOY / "kubernetes/hubferry.toml").read_text())
    kubernetes_port = check_kubernetes(sys.argv[1], default_admin)
    check_complete(sys.argv[2])
    check_systemd(default_admin)
    default_port = split_address(default_admin)[1]
    image_port = check_dockerfile(default_port)
    check_compose(image_port)
    check_docs({default_port, image_port, kubernetes_port} - {None})
    for line in problems:
        print(f"check_deploy: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
