#!/bin/bash
# Scan throughput vs decode-only, and peak memory at 1x / 10x, on the
# evaluation corpus (scripts/fetch-corpus.sh). Usage:
#   scripts/scan-bench.sh [EARMARK_BINARY] [N_FILES]
# Writes into ./scan-bench/. Check `uptime` first: other jobs skew the figures.
set -euo pipefail
B=${1:-target/release/earmark}
N=${2:-1000}
CORPUS=${EARMARK_CORPUS:-$HOME/.cache/earmark/corpus}
REFS=${EARMARK_EVAL:-$HOME/.cache/earmark/eval}/refs.jsonl
mkdir -p scan-bench && cd scan-bench
find "$CORPUS" -name '*.ogg' | sort | head -n "$N" > files.txt
python3 - "$REFS" <<'PY'
import json, sys
fs = [l.rstrip('\n') for l in open('files.txt')]
with open('m1.jsonl', 'w') as m1:
    m1.writelines(json.dumps({'path': f}) + '\n' for f in fs)
with open('m10.jsonl', 'w') as m10:
    m10.writelines(json.dumps({'path': f, 'copy': i}) + '\n' for i in range(10) for f in fs)
with open('catalog.jsonl', 'w') as cat:
    for i, l in enumerate(open(sys.argv[1])):
        r = json.loads(l)
        cat.write(json.dumps({'id': r['work_id'], 'file': r['path'], 'title': r['work_id'],
            'holder': 'eval', 'consent': 'opted-out' if i % 2 == 0 else 'opted-in',
            'scope': 'ai-training'}) + '\n')
PY
[ -d data ] || "$B" --data data works import catalog.jsonl
uptime
mapfile -t FILES < files.txt
for round in 1 2; do
  "$B" bench decode "${FILES[@]}" --jobs 2 --json
  rm -f s.jsonl s.jsonl.earmark-scan.json
  "$B" --data data scan m1.jsonl --jobs 2 --quiet --report s.jsonl --summary s.json || true
  python3 -c "import json; print(json.dumps(json.load(open('s.json'))['throughput']))"
  uptime
done
for m in m1 m10; do
  rm -f "mem-$m.jsonl" "mem-$m.jsonl.earmark-scan.json"
  /usr/bin/time -v "$B" --data data scan "$m.jsonl" --jobs 2 --quiet --report "mem-$m.jsonl" 2> "mem-$m.time" || true
  echo "$m: $(grep 'Maximum resident' "mem-$m.time")"
done
