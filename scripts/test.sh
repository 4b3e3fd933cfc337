#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what the tests need (PostgreSQL server
# binaries and clients, Node.js for the OIDC test issuer, OpenSSL, libclang for PostgreSQL's
# parser, rsyslog for the SIEM sink tests), then formats, lints and runs the whole workspace test
# suite against real servers and clients.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/build-deps.sh
need_apt=($(missing_build_deps))
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
[ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ] || need_apt+=(postgresql)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v runuser >/dev/null || need_apt+=(util-linux)
# The syslog sink tests start a private rsyslogd (never the system's) on a loopback port.
[ -x /usr/sbin/rsyslogd ] || command -v rsyslogd >/dev/null || need_apt+=(rsyslog)
apt_install "${need_apt[@]}"
# initdb and pg_ctl live outside PATH on Debian.
export PATH="$(pg_bindir):$PATH"

# The OIDC integration tests run a real OpenID provider (npm package oidc-provider).
npm ci --prefix tests/oidc-issuer --no-audit --no-fund --loglevel=error

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
