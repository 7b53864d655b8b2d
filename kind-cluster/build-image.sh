#!/usr/bin/env bash
# Builds the kvlab node image (`kvlab-node:latest`) FROM scratch with a statically
# linked binary. Usage: kind-cluster/build-image.sh [TAG]
#
# glibc is linked statically (`+crt-static`; the explicit --target is required for it),
# and rand reads the kernel's getrandom(2) directly, so the binary runs in an image
# without /dev/urandom.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-kvlab-node:latest}"
target=x86_64-unknown-linux-gnu
export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
cargo build --release --locked --target "$target" --bin kvlab-node
bin="target/$target/release/kvlab-node"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/kvlab-node"
strip "$ctx/kvlab-node" 2>/dev/null || true
cp kind-cluster/Dockerfile "$ctx/Dockerfile"
docker build --quiet --label "org.kvlab.image=node" -t "$tag" "$ctx" >/dev/null
docker image ls "$tag" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
