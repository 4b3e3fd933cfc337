# Sourced by the scripts that build the gateway. pg_query (PostgreSQL's own parser) generates
# its bindings with bindgen at build time, which loads libclang; its C sources need cc and make.
missing_build_deps() {
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' || echo libclang-dev
  command -v cc >/dev/null || echo gcc
  command -v make >/dev/null || echo make
}

apt_install() {
  [ $# -gt 0 ] || return 0
  echo "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}
