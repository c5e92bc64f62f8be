#!/usr/bin/env bash
# The README's picture of the HTML report: the demo's works registered with
# their consent (`earmark demo --keep`), the sample submissions and one broken
# file scanned with `--html`, and a screenshot of the page with its first
# timeline open. Usage:
#   scripts/report-screenshot.sh [EARMARK_BINARY] [OUT.png]
# Leaves the page in ./report-demo/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-target/release/earmark}
OUT=${2:-docs/img/report.png}
rm -rf report-demo && mkdir -p report-demo
"$B" demo --keep report-demo/data >/dev/null
"$B" --data report-demo/data scan test-audio/submissions test-audio/formats/bad/text.wav \
  --report report-demo/report.jsonl --summary report-demo/summary.json \
  --html report-demo/report.html || [ $? -eq 3 ]
node tests/browser/report-page.mjs shot report-demo/report.html "$OUT" 1000 1400
echo "$OUT: $(stat -c %s "$OUT") bytes"
