#!/usr/bin/env bash
# The HTML report at scale: a generated scan report of ROWS rows is rendered
# by `earmark report --html`, then opened, filtered, searched and sorted in
# headless Chromium (tests/browser/report-page.mjs bench; scripts/setup.sh
# installs Chromium and the driver). Usage:
#   scripts/report-bench.sh [EARMARK_BINARY] [ROWS] [RUNS]
# Writes into ./report-bench/. Check `uptime` first: other jobs skew the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-target/release/earmark}
ROWS=${2:-100000}
RUNS=${3:-3}
# The search typed into the page: one work id of the generated catalogue.
QUERY=work-0107
mkdir -p report-bench
python3 - "$ROWS" report-bench/report.jsonl <<'PY'
"""A scan report shaped like a real corpus: mostly allowed items, some
blocked and flagged ones with 1-3 matches and per-match reasons, a few
unscreenable ones. Deterministic (fixed seed)."""
import hashlib, json, random, sys

rows, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(1)
WORKS = 400
PURPOSE = 'ai-training'

def clock(s):
    s = int(s)
    return f'{s // 60}:{s % 60:02d}'

def match(outcome, duration):
    w = rng.randrange(WORKS)
    start = rng.uniform(0, max(1.0, duration - 30))
    length = rng.uniform(5, 30)
    speed = rng.choice([1.0, 1.0, 1.0, 0.95, 1.05])
    return {
        'work_id': f'work-{w:04d}', 'title': f'Title of work {w}', 'isrc': None,
        'holder': f'Holder {w % 37}',
        'consent': 'opted-out' if outcome == 'block' else 'unknown',
        'consent_record': w + 1 if outcome == 'block' else None,
        'outcome': outcome, 'confident': True, 'score': round(rng.uniform(25, 120), 1),
        'start_s': round(start, 3), 'end_s': round(start + length, 3),
        'ref_start_s': round(rng.uniform(0, 120), 3), 'ref_end_s': 0.0,
        'speed_factor': speed, 'pitch_factor': speed,
    }

def reason(m):
    head = f"Work '{m['work_id']}' (\"{m['title']}\", holder {m['holder']})"
    matched = f"matched {clock(m['start_s'])}–{clock(m['end_s'] + 1)} of the submission with score {m['score']:.0f}"
    if m['outcome'] == 'block':
        return f"{head} is opted out of {PURPOSE} since 2026-01-01 (record #{m['consent_record']}, source registry); {matched}."
    return f"{head} has no consent for {PURPOSE} on record; {matched}; flagged for review (no consent on record)."

with open(out, 'w') as f:
    for i in range(rows):
        shard, n = divmod(i, 1000)
        item = f'/data/corpus/shard-{shard:05d}/sample-{i:07d}.flac'
        duration = round(rng.uniform(5, 600), 3)
        roll = rng.random()
        verdict = 'allow' if roll < 0.90 else 'block' if roll < 0.95 else 'flag' if roll < 0.98 else 'error'
        row = {'item': item, 'source': '/data/corpus', 'kind': 'file', 'position': None,
               'duration_s': duration, 'content_sha256': hashlib.sha256(item.encode()).hexdigest(),
               'verdict': verdict, 'matches': [], 'reasons': [], 'error': None}
        if verdict in ('block', 'flag'):
            row['matches'] = [match(verdict, duration) for _ in range(rng.randint(1, 3))]
            for m in row['matches']:
                m['ref_end_s'] = round(m['ref_start_s'] + (m['end_s'] - m['start_s']) * m['speed_factor'], 3)
            k = len(row['matches'])
            row['reasons'] = [
                f"Blocked for {PURPOSE}: {k} matched work{' is' if k == 1 else 's are'} opted out with a confident match."
                if verdict == 'block' else
                f"Flagged for human review before use for {PURPOSE}: {k} match{'' if k == 1 else 'es'} need{'s' if k == 1 else ''} review."
            ] + [reason(m) for m in row['matches']]
        elif verdict == 'allow':
            row['reasons'] = [f'Allowed for {PURPOSE}: no registered work was found in the submission.']
        else:
            row['duration_s'] = None
            row['content_sha256'] = None
            row['error'] = f'{item}: decoding failed: malformed stream'
            row['reasons'] = [f"not screened: {row['error']}"]
        f.write(json.dumps(row, ensure_ascii=False) + '\n')
PY
echo "report: $ROWS rows, $(du -h report-bench/report.jsonl | cut -f1) of JSON lines"
uptime
/usr/bin/time -f 'render: %e s wall, %M KB peak memory' \
  "$B" report report-bench/report.jsonl --html report-bench/report.html
echo "page: $(stat -c %s report-bench/report.html) bytes"
node tests/browser/report-page.mjs bench report-bench/report.html "$QUERY" "$RUNS"
uptime
