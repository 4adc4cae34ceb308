#!/usr/bin/env bash
# Installs the Debian packages that meshward's tests (and, with --bench, its benchmarks) run
# against, when they are missing. Tests use real peers (openssl, curl, nginx, haproxy, Redis,
# PostgreSQL, promtool, Chromium) and never skip because one is absent, so this runs before
# every `npm test` (the `pretest` script) and on CI. It also installs the tools `npm ci` needs to
# build better-sqlite3 from source when no prebuilt binary can be fetched for this Node release
# and platform (python3, make, g++; README.md says so): run it before `npm ci` on a bare machine.
set -euo pipefail

# command-to-check  debian-package
test_deps=(
  "openssl openssl"
  "curl curl"
  "nginx nginx"
  "haproxy haproxy"
  "redis-server redis-server"
  "pg_ctl postgresql"
  "promtool prometheus"
  "chromium chromium"
  # test/security runs these as real apps behind the sidecar, under Debian's python3.
  "py:gunicorn python3-gunicorn"
  "py:uvicorn python3-uvicorn"
  # ... and lighttpd, whose CGI-style environment reads any non-alphanumeric header-name character as '_'.
  "file:/usr/sbin/lighttpd lighttpd"
  # test/security/method-override-body: frameworks that read _method from POST bodies (Rack, Symfony).
  "rb:rack ruby-rack"
  "rb:webrick ruby-webrick"
  "php php-cli"
  "file:/usr/share/php/Symfony/Component/HttpFoundation/Request.php php-symfony-http-foundation"
  "kubectl kubectl"
  "go golang-go"
  # node-gyp, when npm ci builds better-sqlite3 from source (and scripts/node-compat.sh always)
  "python3 python3"
  "make make"
  "g++ g++"
)
bench_deps=(
  "wrk wrk"
  "cfssl golang-cfssl"
  # bench/proxy/instructions.ts: callgrind and callgrind_control
  "valgrind valgrind"
)

deps=("${test_deps[@]}")
if [[ "${1:-}" == "--bench" ]]; then deps+=("${bench_deps[@]}"); fi

have() {
  # "py:MODULE": a module Debian's /usr/bin/python3 must import.
  if [[ "$1" == py:* ]]; then /usr/bin/python3 -c "import ${1#py:}" >/dev/null 2>&1; return; fi
  # "rb:LIBRARY": a library Debian's /usr/bin/ruby must require (the package brings ruby with it).
  if [[ "$1" == rb:* ]]; then /usr/bin/ruby -e "require '${1#rb:}'" >/dev/null 2>&1; return; fi
  if [[ "$1" == file:* ]]; then [[ -e "${1#file:}" ]]; return; fi
  command -v "$1" >/dev/null 2>&1 && return 0
  # PostgreSQL's server tools live outside PATH on Debian.
  compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null 2>&1
}

missing=()
for dep in "${deps[@]}"; do
  read -r cmd pkg <<<"$dep"
  have "$cmd" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

echo "meshward: installing Debian packages the tests need: ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else
    echo "meshward: run as root or install them yourself: apt-get install ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=()
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts some of these as system services on install; tests run their own instances.
for svc in nginx haproxy redis-server postgresql; do
  "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
