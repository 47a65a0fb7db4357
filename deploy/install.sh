#!/bin/sh
# Installs hubferry as a systemd service on this machine, from a release archive (make dist) or
# a local build (make build), and starts it. Run again to upgrade: the binary and the unit are
# replaced, the config is kept. See deploy/README.md.
#
#   sudo sh deploy/install.sh --domain mirror.example.com --email ops@example.com
#   sudo sh install.sh ...                  (from an unpacked release archive)
#   sudo sh deploy/install.sh --uninstall   (binary, unit, user; --purge: config and state too)
#
# DESTDIR=/some/root installs into that directory instead of /, and enables the service there
# without starting it (how the tests run it).
set -eu

usage() {
	cat <<'EOF'
usage: install.sh [options]

  --archive FILE        install from this release archive (hubferry-*.tar.gz)
  --binary FILE         install this binary (default: the archive's, or target/release/hubferry)
  --domain NAME         get a certificate for NAME from Let's Encrypt and serve HTTPS on 443
                        (repeat for more names; the first is the public address)
  --email ADDRESS       contact address for the certificate authority
  --acme-directory URL  another ACME CA (default: Let's Encrypt; letsencrypt-staging to try out)
  --acme-ca-file FILE   trust this CA for the ACME directory's HTTPS (a private CA)
  --public-url URL      no certificate here: hubferry serves plain HTTP on 127.0.0.1:5000
                        behind a TLS terminator that clients reach at URL
  --no-start            install and enable, but do not start (or restart) the service
  --uninstall           remove the binary, the unit and the user (the config and the
                        certificates in /var/lib/hubferry stay)
  --purge               with --uninstall: remove /etc/hubferry and /var/lib/hubferry too
  -h, --help            this text

Without --domain or --public-url, hubferry serves plain HTTP on port 5000: every client
then has to list the mirror as an insecure registry.
EOF
}

fail() {
	echo "install.sh: $*" >&2
	exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
archive= binary= domains= email= directory= acme_ca= public_url=
start=yes uninstall= purge=
while [ $# -gt 0 ]; do
	case $1 in
	--archive) archive=${2:?--archive needs a file}; shift ;;
	--binary) binary=${2:?--binary needs a file}; shift ;;
	--domain) domains="$domains ${2:?--domain needs a name}"; shift ;;
	--email) email=${2:?--email needs an address}; shift ;;
	--acme-directory) directory=${2:?--acme-directory needs a URL}; shift ;;
	--acme-ca-file) acme_ca=${2:?--acme-ca-file needs a file}; shift ;;
	--public-url) public_url=${2:?--public-url needs a URL}; shift ;;
	--no-start) start= ;;
	--uninstall) uninstall=yes ;;
	--purge) purge=yes ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; fail "unknown option: $1" ;;
	esac
	shift
done

root=${DESTDIR:-}
bin="$root/usr/local/bin/hubferry"
unit="$root/etc/systemd/system/hubferry.service"
sysusers="$root/etc/sysusers.d/hubferry.conf"
etc="$root/etc/hubferry"
config="$etc/hubferry.toml"
state="$root/var/lib/hubferry"

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
	fail "run as root (sudo), or set DESTDIR to install into a directory"
fi

# systemctl on the real system, or offline on DESTDIR (enable only: nothing runs there).
systemctl_() {
	if [ -n "$root" ]; then
		systemctl --root="$root" "$@"
	else
		systemctl "$@"
	fi
}

if [ -n "$uninstall" ]; then
	if [ -z "$root" ]; then
		systemctl stop hubferry.service 2>/dev/null || true
	fi
	systemctl_ disable hubferry.service 2>/dev/null || true
	rm -f "$bin" "$unit" "$sysusers"
	[ -z "$root" ] && systemctl daemon-reload
	if grep -q '^hubferry:' "$root/etc/passwd" 2>/dev/null; then
		userdel ${root:+--root "$root"} hubferry
	fi
	if grep -q '^hubferry:' "$root/etc/group" 2>/dev/null; then
		groupdel ${root:+--root "$root"} hubferry
	fi
	if [ -n "$purge" ]; then
		rm -rf "$etc" "$state" "$root/var/lib/private/hubferry"
		echo "hubferry removed, with its config and certificates"
	else
		echo "hubferry removed; kept $etc/ and $state/ (--purge removes them)"
	fi
	exit 0
fi

# Where the files come from: an archive, unpacked; the directory of an unpacked archive (this
# script beside the binary); or the source tree (deploy/install.sh, target/release/hubferry).
if [ -n "$archive" ]; then
	[ -f "$archive" ] || fail "no such archive: $archive"
	unpacked=$(mktemp -d)
	trap 'rm -rf "$unpacked"' EXIT
	tar -xzf "$archive" -C "$unpacked"
	src=$(find "$unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[ -f "$src/SHA256SUMS" ] || fail "$archive is not a hubferry release archive"
	(cd "$src" && sha256sum --quiet -c SHA256SUMS) || fail "$archive: a file does not match SHA256SUMS"
	unit_src="$src/hubferry.service" sysusers_src="$src/hubferry.sysusers"
	binary=${binary:-$src/hubferry}
elif [ -f "$here/hubferry.service" ]; then
	unit_src="$here/hubferry.service" sysusers_src="$here/hubferry.sysusers"
	binary=${binary:-$here/hubferry}
else
	unit_src="$here/systemd/hubferry.service" sysusers_src="$here/systemd/hubferry.sysusers"
	binary=${binary:-$here/../target/release/hubferry}
fi
[ -f "$binary" ] || fail "no binary at $binary: run make build, or give --archive or --binary"
[ -f "$unit_src" ] && [ -f "$sysusers_src" ] || fail "hubferry.service or hubferry.sysusers is missing beside $0"
"$binary" --version >/dev/null 2>&1 || fail "$binary does not run on this machine"
if [ -n "$domains" ] && [ -n "$public_url" ]; then
	fail "--domain (HTTPS here) and --public-url (HTTPS elsewhere) do not go together"
fi

# The user the service runs as, from the sysusers.d entry (systemd creates it again at boot if
# it goes missing).
install -D -m 0644 "$sysusers_src" "$sysusers"
mkdir -p "$root/etc"
systemd-sysusers ${root:+--root="$root"} "$sysusers"

install -D -m 0755 "$binary" "$bin.new"
mv -f "$bin.new" "$bin"
install -D -m 0644 "$unit_src" "$unit"

# The config: written once, from the options; kept on every later run (an upgrade).
if [ -f "$config" ]; then
	echo "keeping $config (an upgrade); edit it to change the settings"
else
	install -d -m 0755 "$etc"
	acme_ca_line=
	if [ -n "$acme_ca" ]; then
		[ -f "$acme_ca" ] || fail "no such file: $acme_ca"
		install -m 0644 "$acme_ca" "$etc/acme-ca.pem"
		acme_ca_line='ca_file = "/etc/hubferry/acme-ca.pem"'
	fi
	{
		echo "# Written by deploy/install.sh; later runs keep it. Every setting: README.md,"
		echo "# \"Configuration\". systemctl restart hubferry after a change."
		if [ -n "$domains" ]; then
			first=$(echo $domains | cut -d' ' -f1)
			list=$(for d in $domains; do printf '"%s", ' "$d"; done | sed 's/, $//')
			echo '# Plain HTTP on 80 answers the CA'"'"'s HTTP-01 challenge (and clients that want it).'
			echo 'listen = "0.0.0.0:80"'
			echo "public_url = \"https://$first\""
		elif [ -n "$public_url" ]; then
			echo '# Behind a TLS terminator (nginx, Caddy, a load balancer) that forwards to here.'
			echo 'listen = "127.0.0.1:5000"'
			echo "public_url = \"$public_url\""
		else
			echo '# Plain HTTP: clients must list this mirror under insecure-registries.'
			echo 'listen = "0.0.0.0:5000"'
		fi
		echo '# /healthz, /readyz and /metrics, from this machine only.'
		echo 'admin_listen = "127.0.0.1:5002"'
		echo '# Keep TimeoutStopSec in hubferry.service longer than this.'
		echo 'shutdown_grace = "30s"'
		if [ -n "$domains" ]; then
			echo
			echo '[tls]'
			echo 'listen = "0.0.0.0:443"'
			echo
			echo '[tls.acme]'
			echo "domains = [$list]"
			[ -n "$email" ] && echo "email = \"$email\""
			[ -n "$directory" ] && echo "directory = \"$directory\""
			[ -n "$acme_ca_line" ] && echo "$acme_ca_line"
			echo '# The service'"'"'s StateDirectory: kept across restarts and upgrades.'
			echo 'cache_dir = "/var/lib/hubferry/acme"'
		fi
	} >"$config.new"
	# Checked as the service will load it; a CA file is named where it is now (under DESTDIR).
	"$binary" --config "$config.new" ${acme_ca:+--acme-ca-file "$etc/acme-ca.pem"} --check >/dev/null \
		|| fail "the config written to $config.new does not load"
	chmod 0644 "$config.new"
	mv -f "$config.new" "$config"
	echo "wrote $config"
fi

systemctl_ enable hubferry.service >/dev/null 2>&1 || systemctl_ enable hubferry.service
if [ -n "$root" ]; then
	echo "installed into $root (enabled, not started)"
elif [ -n "$start" ]; then
	systemctl daemon-reload
	systemctl restart hubferry.service
	echo "hubferry is running: journalctl -u hubferry -f"
else
	systemctl daemon-reload
	echo "installed and enabled; start it with: systemctl start hubferry"
fi
