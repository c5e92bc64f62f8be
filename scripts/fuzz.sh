#!/usr/bin/env bash
# Runs earmark's fuzz targets (fuzz/, cargo-fuzz + libFuzzer, nightly) one at
# a time, each for SECONDS, and prints executions and findings per target.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target)
#
# One libFuzzer process at a time (libFuzzer's default: one in-process worker,
# as -jobs=1 -workers=1 would give, without the extra supervisor process);
# every input is bounded
# by -rss_limit_mb (FUZZ_RSS_MB, default 2048) and -timeout (FUZZ_TIMEOUT_S,
# default 10 s). The corpus grows in fuzz/corpus/TARGET (seeded from
# fuzz/src/lib.rs, short ffmpeg clips of every format and test-audio/formats);
# crashes, OOMs and timeouts land in fuzz/artifacts/TARGET. A finding becomes
# a regression test by copying it to fuzz/regressions/TARGET/ (run on stable
# by `cargo test --test fuzz_regressions`).
#
# Sanitizer: FUZZ_SANITIZER (default none: earmark's code is safe Rust apart
# from the segment memory map, and the instrumented build runs ~2x faster
# without ASan; use FUZZ_SANITIZER=address for a run with it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
all=(decode fpfile index catalog scan_manifest scan_tar scan_parquet proto service)
targets=("${@:-${all[@]}}")
rss_mb=${FUZZ_RSS_MB:-2048}
timeout_s=${FUZZ_TIMEOUT_S:-10}
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
(cd fuzz && cargo +nightly fuzz build -O -s "$sanitizer") >&2
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release

# Short clips of every container and codec the decoder accepts, prefixed with
# the decode target's extension-hint selector.
seed_decode() {
  local dir=fuzz/corpus/decode tmp
  mkdir -p "$dir"
  command -v ffmpeg >/dev/null 2>&1 || return 0
  tmp=$(mktemp -d)
  local -a formats=(
    "1:wav:-c:a pcm_s16le" "2:mp3:-c:a libmp3lame" "3:ogg:-c:a libvorbis"
    "4:flac:-c:a flac" "5:m4a:-c:a aac" "6:aac:-c:a aac -f adts" "7:mkv:-c:a libvorbis"
    "8:opus:-c:a libopus" "9:caf:-c:a pcm_s16le" "10:aiff:-c:a pcm_s16be"
    "11:webm:-c:a libopus" "5:alac.m4a:-c:a alac"
  )
  for f in "${formats[@]}"; do
    IFS=: read -r selector ext args <<<"$f"
    # shellcheck disable=SC2086
    if ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:duration=0.3" \
      -ac 1 -ar 16000 $args "$tmp/clip.$ext" 2>/dev/null; then
      { printf "\\x$(printf %02x "$selector")"; cat "$tmp/clip.$ext"; } >"$dir/ffmpeg-$ext"
    fi
  done
  for bad in test-audio/formats/bad/*; do
    [ -s "$bad" ] || continue
    head -c 65536 "$bad" | { printf '\x00'; cat; } >"$dir/bad-$(basename "$bad")"
  done
  rm -rf "$tmp"
}
seed_decode

printf '%-14s %12s %9s %9s %s\n' target executions seconds findings status
total_runs=0
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  before=$(find "$artifacts" -type f | wc -l)
  log=fuzz/artifacts/$t.log
  max_len=8192
  case $t in
    decode | scan_parquet) max_len=32768 ;;
    service) max_len=16384 ;;
  esac
  start=$(date +%s)
  set +e
  EARMARK_FUZZ_SEEDS=$corpus "$bin_dir/$t" "$corpus" \
    -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout_s" \
    -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$(($(date +%s) - start))
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1)
  runs=${runs:-$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')}
  runs=${runs:-0}
  total_runs=$((total_runs + runs))
  after=$(find "$artifacts" -type f | wc -l)
  status=ok
  [ "$rc" -eq 0 ] || status="stopped (exit $rc, see $log)"
  printf '%-14s %12s %9s %9s %s\n' "$t" "$runs" "$elapsed" "$((after - before))" "$status"
done
echo "total executions: $total_runs"
