#!/usr/bin/env bash
# Builds and runs the gateway with the embedded defaults of examples/quickstart.yaml: the
# connection "demo" proxies to the local PostgreSQL (127.0.0.1:5432, database postgres, user
# postgres). Installs the build dependencies first on a fresh Debian machine. Extra arguments
# go to `gatehouse serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/build-deps.sh
apt_install $(missing_build_deps)
exec cargo run --release --locked -p gatehouse -- serve --config examples/quickstart.yaml "$@"
