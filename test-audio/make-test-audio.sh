#!/usr/bin/env bash
# Regenerate earmark's committed test audio (test-audio/) from the Debian music corpus.
#
#   test-audio/make-test-audio.sh
#
# Needs ffmpeg, sox, espeak-ng (scripts/setup.sh) and python3; fetches the corpus with
# scripts/fetch-corpus.sh into ${EARMARK_CORPUS:-~/.cache/earmark/corpus} if needed.
# Deterministic: sox runs with -R, ffmpeg with bitexact flags, pseudo-random bytes come
# from a fixed seed. Cut points and ground truth live in the variables below and are
# written to submissions/EXPECTED.json; PROVENANCE.md documents them for people.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CORPUS="${EARMARK_CORPUS:-$HOME/.cache/earmark/corpus}"
"$REPO/scripts/fetch-corpus.sh" >/dev/null
ROOT="$CORPUS/root"
WES="$ROOT/usr/share/games/wesnoth/1.16/data/core/music"
FOF="$ROOT/usr/share/games/fretsonfire/data/songs"

# ---- the four reference clips: id | source | start s | length s ----------------------
REF_LEN=28
R1=wesnoth-heroes-rite;        R1_SRC="$WES/heroes_rite.ogg";             R1_AT=80
R2=wesnoth-northerners;        R2_SRC="$WES/northerners.ogg";             R2_AT=40
R3=fof-muldjord-armygeddon;    R3_SRC="$FOF/muldjord/armygeddon/song.ogg"; R3_AT=40
R4=fof-sectoid-war-of-freedom; R4_SRC="$FOF/sectoid/War of freedom/song.ogg"; R4_AT=60
# held-out material (never registered; all three are also held out by make-eval-set.py)
H1_SRC="$WES/siege_of_laurelmor.ogg"               # unrelated.ogg
H2_SRC="$WES/into_the_shadows.ogg"                 # filler in mix-two-works
H3_SRC="$FOF/sectoid/Metal madness/song.ogg"       # filler in mix-two-works

OUT="$HERE"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT/refs" "$OUT/submissions" "$OUT/formats/bad"

SOX="sox -R -D -V1"
# enc IN OUT CODEC-ARGS... : encode with ffmpeg, no tags, bit-exact muxing
enc() {
  local in="$1" out="$2"; shift 2
  ffmpeg -v error -nostdin -y -i "$in" -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$@" "$out"
}

# cut SRC START LEN OUT.wav [RATE] [CHANNELS] : sample-accurate cut (sox trim), to 16-bit WAV
cut() {
  local src="$1" start="$2" len="$3" out="$4" rate="${5:-22050}" ch="${6:-1}"
  local mix=(remix -); [ "$ch" = 2 ] && mix=()
  $SOX "$src" -b 16 "$out" trim "$start" "$len" "${mix[@]}" rate -v "$rate"
}
vorbis() { enc "$1" "$2" -c:a libvorbis -q:a 3; }  # vorbis IN.wav OUT.ogg
rms_db() { sox "$1" -n stats 2>&1 | awk '/RMS lev dB/{print $4}'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a+b}'; }

echo "make-test-audio: refs" >&2
for i in 1 2 3 4; do
  id="R$i"; src="${id}_SRC"; at="${id}_AT"
  cut "${!src}" "${!at}" "$REF_LEN" "$TMP/ref$i.wav"
  vorbis "$TMP/ref$i.wav" "$OUT/refs/${!id}.ogg"
done

echo "make-test-audio: submissions" >&2
S="$OUT/submissions"
# (a) 10 s of ref 1 (clip 10-20 s), white noise at exactly 10 dB SNR, MP3 64 kb/s
A_REF=10; A_LEN=10
cut "$R1_SRC" "$(add "$R1_AT" $A_REF)" $A_LEN "$TMP/a.wav" 44100
$SOX -n -r 44100 -c 1 -b 16 "$TMP/noise.wav" synth $A_LEN whitenoise vol 0.5
g=$(awk -v s="$(rms_db "$TMP/a.wav")" -v n="$(rms_db "$TMP/noise.wav")" 'BEGIN{printf "%.6f", 10^((s-10-n)/20)}')
$SOX -m -v 1 "$TMP/a.wav" -v "$g" "$TMP/noise.wav" "$TMP/a-noisy.wav"
enc "$TMP/a-noisy.wav" "$S/excerpt-mp3.mp3" -c:a libmp3lame -b:a 64k

# (b) 60 s: held-out music, ref 2 at 5-15 s, speech, held-out music, ref 3 at 40-50 s, held-out music
B_R2_REF=8;  B_R2_AT=5
B_R3_REF=12; B_R3_AT=40
cut "$H2_SRC" 40 5 "$TMP/b0.wav"
cut "$R2_SRC" "$(add "$R2_AT" $B_R2_REF)" 10 "$TMP/b1.wav"
espeak-ng -v en-us -s 165 -w "$TMP/b2raw.wav" \
  "Welcome back to the show. Before the next song, a few words about the weather: \
   cold in the morning, clearing up by the afternoon, and rain again tonight."
$SOX "$TMP/b2raw.wav" -b 16 "$TMP/b2.wav" rate -v 22050 gain -n -6 pad 0 12 trim 0 12
cut "$H3_SRC" 20 13 "$TMP/b3.wav"
cut "$R3_SRC" "$(add "$R3_AT" $B_R3_REF)" 10 "$TMP/b4.wav"
cut "$H2_SRC" 45 10 "$TMP/b5.wav"
parts=()
for k in 0 1 2 3 4 5; do  # 20 ms fades at every joint; lengths unchanged
  $SOX "$TMP/b$k.wav" "$TMP/bf$k.wav" fade t 0.02 -0 0.02
  parts+=("$TMP/bf$k.wav")
done
$SOX "${parts[@]}" "$TMP/b.wav"
vorbis "$TMP/b.wav" "$S/mix-two-works.ogg"

# (c) 10 s of ref 4 (clip 5-15 s) pitched up one semitone, tempo kept
C_REF=5; C_LEN=10
cut "$R4_SRC" "$(add "$R4_AT" $C_REF)" $C_LEN "$TMP/c.wav"
$SOX -G "$TMP/c.wav" "$TMP/c-p.wav" pitch 100 rate -v 22050
vorbis "$TMP/c-p.wav" "$S/pitched.ogg"

# (d) 8 s of ref 1 (clip 2-10 s) sped up 5 % (pitch and tempo), 16-bit mono 11025 Hz WAV
D_REF=2; D_LEN=8
cut "$R1_SRC" "$(add "$R1_AT" $D_REF)" $D_LEN "$TMP/d.wav" 44100
$SOX -G "$TMP/d.wav" -r 11025 -b 16 "$S/speed.wav" speed 1.05 rate -v 11025

# (e) 15 s of a held-out track (true negative)
cut "$H1_SRC" 100 15 "$TMP/e.wav"
vorbis "$TMP/e.wav" "$S/unrelated.ogg"

# (f) speech only (true negative)
espeak-ng -v en -s 150 -w "$TMP/f.wav" \
  "This is a spoken message with no music in it. The consent gate should find no \
   registered recording here, and report the submission as clean."
$SOX "$TMP/f.wav" -b 16 "$TMP/f2.wav" rate -v 22050 gain -n -3
vorbis "$TMP/f2.wav" "$S/speech.ogg"

echo "make-test-audio: formats" >&2
F="$OUT/formats"
F_REF=4; F_LEN=3   # ref 1 clip 4-7 s, from the original 44.1 kHz stereo audio
cut "$R1_SRC" "$(add "$R1_AT" $F_REF)" $F_LEN "$TMP/f-st.wav" 44100 2
cut "$R1_SRC" "$(add "$R1_AT" $F_REF)" $F_LEN "$TMP/f-mono22.wav" 22050 1
cut "$R1_SRC" "$(add "$R1_AT" $F_REF)" $F_LEN "$TMP/f-mono44.wav" 44100 1
enc "$TMP/f-st.wav" "$F/clip.wav" -c:a pcm_s16le
enc "$TMP/f-st.wav" "$F/clip.flac" -c:a flac
enc "$TMP/f-st.wav" "$F/clip.mp3" -c:a libmp3lame -b:a 128k
enc "$TMP/f-st.wav" "$F/clip-aac.m4a" -c:a aac -b:a 128k
enc "$TMP/f-st.wav" "$F/clip.aac" -c:a aac -b:a 128k -f adts
enc "$TMP/f-mono44.wav" "$F/clip-alac.m4a" -c:a alac
enc "$TMP/f-mono22.wav" "$F/clip.aiff" -c:a pcm_s16be
enc "$TMP/f-st.wav" "$F/clip-vorbis.mkv" -c:a libvorbis -q:a 3
enc "$TMP/f-st.wav" "$F/clip-opus.webm" -c:a libopus -b:a 64k
enc "$TMP/f-st.wav" "$F/clip.opus" -c:a libopus -b:a 64k

# hostile inputs
B="$F/bad"
: > "$B/empty.wav"
head -c 3000 "$OUT/refs/$R1.ogg" > "$B/truncated.ogg"
python3 - "$B" <<'EOF'
import random, struct, sys
d = sys.argv[1]
r = random.Random(1)
open(d + "/random.mp3", "wb").write(bytes(r.getrandbits(8) for _ in range(8192)))
open(d + "/text.wav", "w").write("This is a text file, not a WAV file.\n")
# RIFF/WAVE header whose RIFF and data sizes claim ~2 GiB, followed by 1 KiB of samples
fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 22050, 44100, 2, 16)
data = bytes(r.getrandbits(8) for _ in range(1024))
hdr = struct.pack("<4sI4s", b"RIFF", 0xFFFFFFF0, b"WAVE") + fmt + struct.pack("<4sI", b"data", 0x7FFFFFF0)
open(d + "/huge-header.wav", "wb").write(hdr + data)
EOF

echo "make-test-audio: EXPECTED.json" >&2
SEMI=$(awk 'BEGIN{printf "%.6f", 2^(1/12)}')
D_QEND=$(awk -v l=$D_LEN 'BEGIN{printf "%.4f", l/1.05}')
m() {  # m WORK QSTART QEND RSTART REND SPEED PITCH -> one match object
  printf '{"work_id": "%s", "query_start_s": %s, "query_end_s": %s, "ref_start_s": %s, "ref_end_s": %s, "speed_factor": %s, "pitch_factor": %s}' "$@"
}
ref_entry() {  # ref_entry ID SRC AT
  local rel="${2#"$ROOT"}"
  printf '    "%s": {"file": "refs/%s.ogg", "source": "%s", "source_start_s": %s, "duration_s": %s}' \
    "$1" "$1" "$rel" "$3" "$REF_LEN"
}
fmt_entry() { printf '    "formats/%s": {"negative": false, "matches": [%s]}' "$1" "$(m "$R1" 0 $F_LEN $F_REF $((F_REF + F_LEN)) 1.0 1.0)"; }
{
cat <<EOF
{
  "about": "Ground truth for test-audio/. Keys: submissions/<name>, formats/<name>, formats/bad/<name> relative to test-audio/. Times in seconds. ref_start_s/ref_end_s are positions in the reference CLIP refs/<work_id>.ogg (what the tests register), not in the original track; source_start_s maps clip time 0 to the original track. speed_factor = reference seconds per query second; pitch_factor = query frequency / reference frequency. Negatives have negative=true and no matches. Fades at segment joints are 20 ms.",
  "refs": {
$(ref_entry "$R1" "$R1_SRC" "$R1_AT"),
$(ref_entry "$R2" "$R2_SRC" "$R2_AT"),
$(ref_entry "$R3" "$R3_SRC" "$R3_AT"),
$(ref_entry "$R4" "$R4_SRC" "$R4_AT")
  },
  "submissions": {
    "submissions/excerpt-mp3.mp3": {"negative": false, "condition": "white noise 10 dB SNR + MP3 64 kb/s", "matches": [$(m "$R1" 0 $A_LEN $A_REF $((A_REF + A_LEN)) 1.0 1.0)]},
    "submissions/mix-two-works.ogg": {"negative": false, "condition": "two works embedded in 60 s of held-out music and speech", "duration_s": 60, "matches": [$(m "$R2" $B_R2_AT $((B_R2_AT + 10)) $B_R2_REF $((B_R2_REF + 10)) 1.0 1.0), $(m "$R3" $B_R3_AT $((B_R3_AT + 10)) $B_R3_REF $((B_R3_REF + 10)) 1.0 1.0)]},
    "submissions/pitched.ogg": {"negative": false, "condition": "pitch +1 semitone (sox pitch 100), tempo kept", "matches": [$(m "$R4" 0 $C_LEN $C_REF $((C_REF + C_LEN)) 1.0 "$SEMI")]},
    "submissions/speed.wav": {"negative": false, "condition": "speed +5 % (sox speed 1.05: pitch and tempo), 11025 Hz", "matches": [$(m "$R1" 0 "$D_QEND" $D_REF $((D_REF + D_LEN)) 1.05 1.05)]},
    "submissions/unrelated.ogg": {"negative": true, "condition": "held-out music, not registered", "matches": []},
    "submissions/speech.ogg": {"negative": true, "condition": "espeak-ng speech", "matches": []}
  },
  "formats": {
$(fmt_entry clip.wav),
$(fmt_entry clip.flac),
$(fmt_entry clip.mp3),
$(fmt_entry clip-aac.m4a),
$(fmt_entry clip.aac),
$(fmt_entry clip-alac.m4a),
$(fmt_entry clip.aiff),
$(fmt_entry clip-vorbis.mkv),
$(fmt_entry clip-opus.webm),
$(fmt_entry clip.opus)
  },
  "bad": {
    "formats/bad/empty.wav": "empty file (0 bytes)",
    "formats/bad/truncated.ogg": "first 3000 bytes of refs/$R1.ogg (headers, then cut mid-stream)",
    "formats/bad/random.mp3": "8192 pseudo-random bytes with an .mp3 extension",
    "formats/bad/text.wav": "a text file named .wav",
    "formats/bad/huge-header.wav": "RIFF/WAVE header claiming ~2 GiB (RIFF and data sizes), then 1 KiB of data"
  }
}
EOF
} > "$S/EXPECTED.json"
python3 -m json.tool "$S/EXPECTED.json" >/dev/null

echo "make-test-audio: done" >&2
find "$OUT" -type f ! -name '*.md' ! -name '*.sh' -printf '%8s  %P\n' | sort -k2
du -sh --apparent-size "$OUT"
