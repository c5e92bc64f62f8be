#!/usr/bin/env bash
# One-time machine set-up for earmark: system packages the build and the tools need.
# Idempotent and quiet when everything is already there.
#   cmake      builds the bundled libopus (Ogg/Opus decoding, cargo feature `opus`)
#   ffmpeg sox espeak-ng   make the evaluation queries (degradations, speech negatives)
#   chromium, node + playwright-core (npm, tests/browser)   open the HTML report
#              in a headless browser (tests/report_html.rs, scripts/report-bench.sh)
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
