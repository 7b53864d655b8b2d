#!/usr/bin/env bash
# Builds the kvlab node image FROM scratch with a statically linked `kvlab-node`.
# Usage: kind-cluster/build-image.sh [TAG]      (default kvlab-node:latest)
#
# glibc is linked statically (`+crt-static`; the explicit --target is required for it),
# and rand reads the kernel's getrandom(2) directly, so the binary runs in an image
# without /dev/urandom. The binary is checked to be static before it goes in.
# Prints the image's name and size.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-kvlab-node:latest}"
target=x86_64-unknown-linux-gnu
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
cargo build --release --locked --target "$target" --bin kvlab-node
bin="target/$target/release/kvlab-node"
if command -v file >/dev/null && ! file -L "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    echo "build-image.sh: $bin is not statically linked:" >&2
    file -L "$bin" >&2
    exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/kvlab-node"
strip "$ctx/kvlab-node" 2>/dev/null || true
mkdir "$ctx/data"
cp kind-cluster/Dockerfile "$ctx/Dockerfile"
docker build --quiet --label "org.kvlab.image=node" -t "$tag" "$ctx" >/dev/null
docker image ls "$tag" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
