#!/usr/bin/env bash
# One-time machine set-up for earmark: system packages the build and the tools need.
# Idempotent and quiet when everything is already there.
#   cmake      builds the bundled libopus (Ogg/Opus decoding, cargo feature `opus`)
#   ffmpeg sox espeak-ng   make the evaluation queries (degradations, speech negatives)
#   chromium, node + playwright-core (npm, tests/browser)   open the HTML report
#              in a headless browser (tests/report_html.rs, scripts/report-bench.sh)
#   postgresql (server binaries only; no cluster is created or started)   the
#              registry tests on PostgreSQL start their own throwaway cluster
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v sox >/dev/null 2>&1 || need+=(sox libsox-fmt-all)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
pg_bin() { ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -1; }
if [ -z "$(pg_bin)" ]; then
  need+=(postgresql)
  # Debian's package creates and starts a "main" cluster unless told not to;
  # the tests start their own.
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # (createcluster.conf includes this directory last; the package replaces
  # createcluster.conf itself.)
  $SUDO mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' |
    $SUDO tee /etc/postgresql-common/createcluster.d/earmark.conf >/dev/null
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The browser driver's npm packages, as pinned by tests/browser/package-lock.json.
browser=tests/browser
want=$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' "$browser/package.json")
have=$(sed -n 's/^  "version": "\(.*\)".*/\1/p' "$browser/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "setup: installing playwright-core $want in $browser" >&2
  npm ci --prefix "$browser" --silent --no-audit --no-fund >/dev/null
fi

# Python: a virtual environment (.venv, or $EARMARK_VENV) with the pinned packages
# the Python package's build, tests and benchmarks use (python/requirements-dev.txt:
# maturin, pytest, numpy, datasets, ray[data], pyarrow). Reinstalled only when that
# file changes. iproute2 gives `ip netns` for the Ray cluster tests.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${EARMARK_VENV:-$ROOT/.venv}"
REQUIREMENTS="$ROOT/python/requirements-dev.txt"
py_need=()
command -v ip >/dev/null 2>&1 || py_need+=(iproute2)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || py_need+=(python3-venv)
if [ "${#py_need[@]}" -gt 0 ]; then
  echo "setup: installing ${py_need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${py_need[@]}" >/dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.earmark-requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the Python packages into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" > "$stamp"
fi
