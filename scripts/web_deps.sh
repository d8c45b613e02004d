#!/usr/bin/env bash
# Install what the web export's browser tests and `gantool bench --backends web` need:
#   Debian's chromium (apt-get), and the pinned npm packages onnxruntime-web + playwright-core
#   (gantool/export/web_assets/package.json and its lock file) into a cache folder,
#   $GANTOOL_WEB_CACHE or .cache/web in this repo (git-ignored).
# Nothing downloads a browser build of its own: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, and gantool
# points playwright at /usr/bin/chromium. Safe to re-run: it does nothing when all is in place.
# Exit 0 when everything is installed; otherwise one line on stderr saying what is missing, exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${GANTOOL_WEB_CACHE:-$PWD/.cache/web}"
PINS="gantool/export/web_assets"
CHROMIUM="${GANTOOL_CHROMIUM:-/usr/bin/chromium}"

fail() { echo "web_deps: $*" >&2; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
    command -v apt-get >/dev/null || fail "no $CHROMIUM and no apt-get to install Debian's chromium"
    as_root=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null || fail "no $CHROMIUM; installing it needs root (apt-get install chromium)"
        as_root=(sudo -n)
    fi
    echo "web_deps: installing Debian's chromium (apt-get)" >&2
    "${as_root[@]}" apt-get update -q >/dev/null || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || fail "apt-get install chromium failed"
fi

command -v node >/dev/null && command -v npm >/dev/null || fail "Node.js and npm are needed (Debian: apt-get install nodejs npm)"

mkdir -p "$CACHE"
if ! cmp -s "$PINS/package-lock.json" "$CACHE/package-lock.json" || [ ! -d "$CACHE/node_modules/playwright-core" ] \
        || [ ! -d "$CACHE/node_modules/onnxruntime-web/dist" ]; then
    echo "web_deps: installing onnxruntime-web and playwright-core into $CACHE (npm ci)" >&2
    cp "$PINS/package.json" "$PINS/package-lock.json" "$CACHE/"
    (cd "$CACHE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
        || fail "npm ci in $CACHE failed (is the npm registry reachable?)"
fi
echo "web_deps: ready: $("$CHROMIUM" --version 2>/dev/null | head -1), node $(node --version), $CACHE"
