#!/bin/sh
# Packs a release archive: OUT/hubferry-VERSION-TARGET.tar.gz holding the binary, the systemd
# unit with its sysusers.d entry, install.sh, an example config, LICENSE, both READMEs and
# SHA256SUMS of them, with
# OUT/hubferry-VERSION-TARGET.tar.gz.sha256 beside it. `make dist` builds the binary and calls
# this; the tests call it with any binary.
#
#   sh deploy/dist.sh BINARY VERSION TARGET [OUT]
set -eu

if [ $# -lt 3 ]; then
	echo "usage: $0 BINARY VERSION TARGET [OUT]" >&2
	exit 2
fi
binary=$1
version=$2
target=$3
out=${4:-dist}
name="hubferry-$version-$target"
root=$(cd "$(dirname "$0")/.." && pwd)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir"
install -m 0755 "$binary" "$dir/hubferry"
install -m 0755 "$root/deploy/install.sh" "$dir/install.sh"
install -m 0644 "$root/deploy/systemd/hubferry.service" "$dir/hubferry.service"
install -m 0644 "$root/deploy/systemd/hubferry.sysusers" "$dir/hubferry.sysusers"
install -m 0644 "$root/deploy/systemd/hubferry.toml" "$dir/hubferry.toml.example"
install -m 0644 "$root/LICENSE" "$root/README.md" "$root/README.zh-CN.md" "$dir/"
(cd "$dir" && sha256sum hubferry install.sh hubferry.service hubferry.sysusers \
	hubferry.toml.example LICENSE README.md README.zh-CN.md >SHA256SUMS)

mkdir -p "$out"
# Owned by root and dated by the commit, so the same tree packs to the same bytes.
mtime=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
	-cf - "$name" | gzip -9n >"$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "$out/$name.tar.gz"
