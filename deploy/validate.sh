#!/usr/bin/env bash
# Offline checks of everything in deploy/, run by `make validate-deploy` (part of `make test`):
#   - the kustomize base builds, and every resource it renders is valid against the Kubernetes
#     schemas (strict: unknown fields are errors) of the oldest and newest versions checked;
#   - hubferry's TOML configs use only known keys, settings that must agree across files do, and
#     no example publishes the admin listener beyond loopback (check_deploy.py);
#   - the Dockerfile passes hadolint; compose.yaml passes `docker-compose config`; the systemd unit
#     passes `systemd-analyze verify`.
# The tools come from PyPI into a venv under target/ on first use; after that nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions to validate against: the oldest this base supports (the preStop sleep
# action is on by default from 1.30) and the newest the schemas package knows.
K8S_VERSIONS="1.30.0 1.37.0"

tools=target/deploy-tools
out=target/deploy-check
req=deploy/requirements.txt

# (Re)build the venv when requirements.txt changed since it was made.
if ! cmp -s "$req" "$tools/requirements.txt" 2>/dev/null; then
	echo "validate-deploy: installing checkers into $tools"
	rm -rf "$tools"
	python3 -m venv "$tools"
	"$tools/bin/pip" install --quiet --disable-pip-version-check -r "$req"
	cp "$req" "$tools/requirements.txt"
fi
mkdir -p "$out"

failed=0
fail() {
	echo "validate-deploy: FAILED: $*" >&2
	failed=1
}

# Validates the resources in $1 against every version's schemas; $2 names them in a failure.
# --quiet prints only problems. kubernetes-validate exits 0 on a kind or apiVersion it has no
# schema for (a typo, a removed API) and only warns: any output is a failure.
validate_resources() {
	for version in $K8S_VERSIONS; do
		if ! report=$("$tools/bin/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "$1" 2>&1) \
			|| [ -n "$report" ]; then
			echo "$report" >&2
			fail "$2 against Kubernetes $version (rendered: $1)"
		fi
	done
}

# kustomize build, with the kubectl from the venv (real kustomize: generators, name references
# and image rewrites are applied exactly as `kubectl apply -k` would).
rendered="$out/kubernetes.yaml"
if "$tools/bin/kubectl" kustomize deploy/kubernetes >"$rendered"; then
	validate_resources "$rendered" deploy/kubernetes
else
	fail "kustomize build deploy/kubernetes"
fi

# The base with every optional component (deploy/examples/kubernetes-complete), validated the
# same way; the ServiceMonitor is a CRD the schemas do not know, so check_deploy.py checks it
# against the Service it selects instead.
complete="$out/kubernetes-complete.yaml"
builtin="$out/kubernetes-complete-builtin.yaml"
if "$tools/bin/kubectl" kustomize deploy/examples/kubernetes-complete >"$complete"; then
	"$tools/bin/python" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
builtin = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(builtin, open(sys.argv[2], "w"))
' "$complete" "$builtin"
	validate_resources "$builtin" deploy/examples/kubernetes-complete
else
	fail "kustomize build deploy/examples/kubernetes-complete"
fi

"$tools/bin/python" deploy/check_deploy.py "$rendered" "$complete" || fail "deploy/check_deploy.py"

"$tools/bin/hadolint" deploy/Dockerfile || fail "hadolint deploy/Dockerfile"

# docker-compose (Debian's) checks compose.yaml against the compose file schema and resolves its
# variables, offline; the mandatory domain is given as a user would.
if command -v docker-compose >/dev/null; then
	HUBFERRY_DOMAIN=mirror.example.com docker-compose -f deploy/compose.yaml config -q \
		|| fail "docker-compose config deploy/compose.yaml"
else
	echo "validate-deploy: docker-compose not found; deploy/compose.yaml not checked against the schema" >&2
fi

# systemd-analyze verifies offline, without systemd running. It insists that ExecStart's binary
# exists, so it checks a copy whose ExecStart names one that does; everything else is as written.
# It only warns on unknown or misspelt settings: any output is a failure.
if command -v systemd-analyze >/dev/null; then
	unit="$out/systemd/hubferry.service"
	mkdir -p "$(dirname "$unit")"
	sed 's#^ExecStart=/usr/local/bin/hubferry #ExecStart=/bin/true #' deploy/systemd/hubferry.service >"$unit"
	grep -q '^ExecStart=/bin/true ' "$unit" || fail "hubferry.service: ExecStart no longer starts with /usr/local/bin/hubferry"
	if ! report=$(systemd-analyze --man=no verify "$unit" 2>&1) || [ -n "$report" ]; then
		echo "$report" >&2
		fail "systemd-analyze verify deploy/systemd/hubferry.service"
	fi
else
	echo "validate-deploy: systemd-analyze not found; deploy/systemd/hubferry.service not verified" >&2
fi

if [ "$failed" != 0 ]; then
	exit 1
fi
echo "validate-deploy: deploy/ is valid (Kubernetes $K8S_VERSIONS, configs, Dockerfile, compose.yaml, systemd unit)"
