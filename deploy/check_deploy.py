"""What schema validation cannot see in deploy/: hubferry's own TOML configs, and settings that
must agree across files. Run by validate.sh with the rendered kustomize output as argument.

"""

import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parent

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
    # test `deploy_configs_load` (src/config.rs): no second list of keys to keep in step here.
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


def check_kubernetes(rendered):
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
    for kind in ["Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "Ingress"]:
        if len(by_kind.get(kind, [])) != 1:
            problem(where, f"expected one {kind}, found {len(by_kind.get(kind, []))}")
            missing = True
    if missing:
        return

    # The config as the pods get it (main() has checked its keys in hubferry.toml).
    try:
        config = tomllib.loads(by_kind["ConfigMap"][0].get("data", {}).get("hubferry.toml", ""))
    except tomllib.TOMLDecodeError:
        return

    pod = by_kind["Deployment"][0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    if flag(args, "config") != "/etc/hubferry/hubferry.toml":
        problem(where, "the container must run with --config /etc/hubferry/hubferry.toml")
    if flag(args, "workers") is None:
        problem(where, "the container args must set --workers (match it to the CPU limit)")

    # The probes and the scrape annotation reach the admin listener only on the port it binds.
    admin = flag(args, "admin-listen") or config.get("admin_listen", "127.0.0.1:9100")
    host, _, port = admin.rpartition(":")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if host.startswith("127.") or host == "[::1]":
        problem(where, f"admin listener {admin} is loopback-only: probes cannot reach it")
    if str(ports.get("admin")) != port:
        problem(where, f"container port 'admin' is {ports.get('admin')}, admin listener is {admin}")
    annotations = by_kind["Deployment"][0]["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != port:
        problem(where, "prometheus.io/port annotation is not the admin listener's port")

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
    # src/capacity.rs uses for "auto" (64 MiB reserve, 256 KiB per download); 0 is no cap.
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


def check_systemd():
    where = "deploy/systemd"
    config = check_config(f"{where}/hubferry.toml", (DEPLOY / "systemd/hubferry.toml").read_text())
    if config is None:
        return
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
    check_config("deploy/kubernetes/hubferry.toml",
                 (DEPLOY / "kubernetes/hubferry.toml").read_text())
    check_kubernetes(sys.argv[1])
    check_systemd()
    for line in problems:
        print(f"check_deploy: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
