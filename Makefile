# hubferry's vocabulary. `make run` and `make test` are all a new machine needs.

CARGO ?= cargo
# Debian packages the integration tests drive for real: the upstream registry (distribution),
# nginx as the blob CDN, skopeo, containerd (ctr), curl and openssl (s_client) as clients,
# chromium (headless) to render the landing page; egress proxies (tinyproxy for HTTP, microsocks
# for SOCKS5), Pebble (Let's Encrypt's test CA, for ACME) and its DNS server (challtestsrv);
# systemd and passwd for deploy/install.sh (systemd-sysusers, systemctl --root, userdel,
# systemd-analyze verify); docker-compose to check deploy/compose.yaml; docker.io (dockerd)
# and musl-tools (musl-gcc, for the static binary) to build the container image, run it and pull
# through it. Test keys and certificates come from rcgen.
TEST_PACKAGES := docker-registry nginx-light skopeo containerd openssl curl ca-certificates chromium tinyproxy microsocks pebble systemd passwd docker-compose docker.io musl-tools
RUN_ARGS ?=
# What `make bench` adds: load generators (wrk, h2load) besides the test packages.
BENCH_PACKAGES := wrk nghttp2-client

.PHONY: build run test test-unit test-integration deps lint fmt clean validate-deploy bench fuzz soak dist image image-binary

build:
	$(CARGO) build --release --locked

run: build
	./target/release/hubferry $(RUN_ARGS)

# About two minutes warm (README). The integration run ends with its ten slowest tests, and stops,
# naming the test, when one that started a hubferry runs past its limit
# (tests/integration/hubferry.rs). cargo-nextest would kill a single test instead, but it runs
# each test in a process of its own, which builds the test world again for each: 314 s against
# 62 s measured.
# The image's binary is built first, not by the image test itself: a release build beside the
# other tests would starve them of both cores.
test: deps validate-deploy image-binary
	$(CARGO) test --locked --lib --bins --tests

# Seconds, rootless, no external tool: test keys and certificates come from rcgen.
test-unit:
	$(CARGO) test --locked --lib --bins

test-integration: deps
	$(CARGO) test --locked --test integration

# hubferry vs the nginx config it replaces vs wharf vs no proxy on the test world; report and
# chart in target/bench/ (docs/benchmarks.md). BENCH_QUICK=1 for one short repetition. 500 slow
# clients per proxy need file descriptors: raise the limit as far as allowed.
# wharf, a peer built from its own source and Cargo.lock into target/peers/wharf once (cargo
# does nothing when it is up to date); without its source the bench reports it as missing.
WHARF_DIR ?= ../shared/peers/wharf
bench:
	$(MAKE) deps TEST_PACKAGES="$(TEST_PACKAGES) $(BENCH_PACKAGES)"
	$(CARGO) build --release --locked
	@if [ -f "$(WHARF_DIR)/Cargo.toml" ]; then \
		$(CARGO) build --release --locked --manifest-path "$(WHARF_DIR)/Cargo.toml" --target-dir target/peers/wharf; \
	else \
		echo "no wharf source at $(WHARF_DIR): the bench reports wharf as missing"; \
	fi
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; \
	WHARF_DIR="$(abspath $(WHARF_DIR))" $(CARGO) bench --locked --bench compare

# libFuzzer on every target in fuzz/ (src/fuzzing.rs holds the checks), FUZZ_SECONDS each; a
# crash stops it and lands in fuzz/artifacts/<target>/. Not in CI: make test runs the same
# checks as property tests. cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 unlocks on a
# stable toolchain; the code is safe Rust, so no sanitizer (FUZZ_SANITIZER=address for one).
FUZZ_SECONDS ?= 60
FUZZ_SANITIZER ?= none
fuzz:
	$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	export RUSTC_BOOTSTRAP=1; \
	for target in $$($(CARGO) fuzz list); do \
		echo "fuzzing $$target for $(FUZZ_SECONDS)s"; \
		$(CARGO) fuzz run --sanitizer $(FUZZ_SANITIZER) $$target -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Not in CI: SOAK_MINUTES (default 10) of mixed load on a release hubferry in front of the test
# world; fails on any error, RSS growth or leaked descriptor. Report in target/soak/report.md.
# 50 slow readers and the pulls' connections need descriptors: raise the limit as for bench.
soak: deps
	$(CARGO) build --release --locked
	ulimit -n 65536 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; \
	$(CARGO) bench --locked --bench soak

# Offline checks of deploy/: Kubernetes manifests against the schemas, configs, Dockerfile,
# systemd unit. Installs its checkers from PyPI into target/deploy-tools on first use.
validate-deploy:
	bash deploy/validate.sh

# The container image, hubferry:latest (IMAGE sets the name), with the local Docker daemon
# (DOCKER_HOST chooses another): the static release binary on an empty base (deploy/Dockerfile),
# so the build needs the musl target and musl-gcc, and fetches nothing from any registry.
IMAGE ?= hubferry:latest
IMAGE_TARGET ?= x86_64-unknown-linux-musl
image-binary:
	$(CARGO) build --release --locked --target $(IMAGE_TARGET) || { \
		echo "building for $(IMAGE_TARGET) failed: the image needs that target and a C compiler for it" >&2; \
		echo "  (rustup target add $(IMAGE_TARGET); apt-get install musl-tools)" >&2; exit 1; }

image: image-binary
	rm -rf target/image && mkdir -p target/image/state
	install -m 0755 target/$(IMAGE_TARGET)/release/hubferry target/image/hubferry
	docker build -f deploy/Dockerfile -t $(IMAGE) target/image

# A release archive in dist/ (see deploy/dist.sh): a static binary (musl) when the toolchain has
# the target and musl-gcc is installed (rustup target add x86_64-unknown-linux-musl; apt-get
# install musl-tools), else one for this machine's glibc. DIST_TARGET chooses.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST_TARGET ?= $(shell if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl && command -v musl-gcc >/dev/null; then echo x86_64-unknown-linux-musl; else rustc -vV | sed -n 's/^host: //p'; fi)
dist:
	$(CARGO) build --release --locked --target $(DIST_TARGET)
	sh deploy/dist.sh target/$(DIST_TARGET)/release/hubferry $(VERSION) $(DIST_TARGET) dist

# Installs missing test packages when run as root (CI, fresh machines); otherwise says what is
# missing so the tests' own error makes sense.
deps:
	@missing=""; \
	for pkg in $(TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "missing Debian packages:$$missing (run 'make test' as root, or: sudo apt-get install$$missing)"; \
		fi; \
	fi
	@# The image's static binary (image-binary); rustup installs a target for this user, no root.
	@if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx $(IMAGE_TARGET); then \
		rustup target add $(IMAGE_TARGET); \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
