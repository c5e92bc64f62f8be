#!/usr/bin/env bash
# Fetch earmark's evaluation corpus (freely licensed game music from Debian packages)
# into a cache directory outside the repo. Idempotent: a package already unpacked
# (same version) is not downloaded again.
#
#   scripts/fetch-corpus.sh            # -> ${EARMARK_CORPUS:-$HOME/.cache/earmark/corpus}
#   scripts/fetch-corpus.sh --unseen   # also the "unseen" part (below)
#   EARMARK_CORPUS=/some/dir scripts/fetch-corpus.sh
#
# Layout of the cache:
#   debs/<pkg>_<ver>_all.deb           the downloaded packages
#   root/usr/share/...                 everything unpacked with `dpkg -x`
#   <pkg>.stamp                        marks a complete unpack (holds the version)
#
# Audio (all Ogg/Vorbis, 44.1 kHz stereo):
#   wesnoth-1.16-music (GPL-2+ ... see the copyright file):
#     root/usr/share/games/wesnoth/1.16/data/core/music/*.ogg      one full mix per file
#   fretsonfire-songs-muldjord / -sectoid (CC-BY-SA):
#     root/usr/share/games/fretsonfire/data/songs/<band>/<song>/song.ogg    FULL MIX (backing)
#     root/usr/share/games/fretsonfire/data/songs/<band>/<song>/guitar.ogg  guitar stem only
#   In the Frets on Fire format song.ogg is the backing track (everything but the lead
#   guitar) and guitar.ogg the lead-guitar stem the game fades in/out; song.ogg is what
#   make-eval-set.py treats as "the recording"; stems are never registered as references.
#
# Recorded speech (the voice-* conditions of make-eval-set.py: music under a
# human voice, where the speech-* conditions use espeak-ng):
#   codec2-examples (LGPL-2.1): root/usr/share/codec2/wav/*.wav   8 kHz mono test
#   recordings of several male and female speakers (about 4 min used)
#
# The unseen part (--unseen; about 3.5 h, Ogg/Vorbis): music from three more
# games, kept apart from tuning: accuracy on music never tuned on, and
# unregistered music for the false-positive runs.
#   colobot-common-sounds (GPL-3+):  root/usr/share/games/colobot/music/*.ogg
#   freedroidrpg-data (GPL-2+):      root/usr/share/freedroidrpg/data/sound/music/*.ogg
#   hedgewars-data (GPL-2 / CC-BY-SA-3.0, see copyright): root/usr/share/games/hedgewars/Data/Music/*.ogg
set -euo pipefail

PKGS=(wesnoth-1.16-music fretsonfire-songs-muldjord fretsonfire-songs-sectoid codec2-examples)
UNSEEN_PKGS=(colobot-common-sounds freedroidrpg-data hedgewars-data)
unseen=0
for arg in "$@"; do
  case "$arg" in
    --unseen) unseen=1; PKGS+=("${UNSEEN_PKGS[@]}") ;;
    *) echo "fetch-corpus: unknown argument $arg (known: --unseen)" >&2; exit 2 ;;
  esac
done
CORPUS="${EARMARK_CORPUS:-$HOME/.cache/earmark/corpus}"
mkdir -p "$CORPUS/debs" "$CORPUS/root"
CORPUS="$(cd "$CORPUS" && pwd)"

for cmd in apt-get dpkg-deb dpkg; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "fetch-corpus: needs $cmd (Debian/Ubuntu)" >&2; exit 1; }
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

for pkg in "${PKGS[@]}"; do
  stamp="$CORPUS/$pkg.stamp"
  if [ -s "$stamp" ] && ls "$CORPUS/debs/${pkg}_"*.deb >/dev/null 2>&1; then
    echo "fetch-corpus: $pkg $(cat "$stamp") already unpacked" >&2
    continue
  fi
  deb="$(ls "$CORPUS/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then
    echo "fetch-corpus: downloading $pkg" >&2
    # apt-get download writes into the current directory; run it where _apt can write
    # (else apt warns about unsandboxed download, harmless) and move the file after.
    tmp="$(mktemp -d)"
    chmod 777 "$tmp"
    if ! (cd "$tmp" && apt-get download -q "$pkg" 2>/dev/null); then
      echo "fetch-corpus: download failed; running apt-get update and retrying" >&2
      $SUDO apt-get update -qq
      (cd "$tmp" && apt-get download -q "$pkg")
    fi
    mv "$tmp"/*.deb "$CORPUS/debs/"
    rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"
    deb="$(ls "$CORPUS/debs/${pkg}_"*.deb | head -n1)"
  fi
  echo "fetch-corpus: unpacking $(basename "$deb")" >&2
  dpkg -x "$deb" "$CORPUS/root"
  dpkg-deb -f "$deb" Version > "$stamp"
done

WES="$CORPUS/root/usr/share/games/wesnoth/1.16/data/core/music"
FOF="$CORPUS/root/usr/share/games/fretsonfire/data/songs"
n_wes=$(find "$WES" -name '*.ogg' | wc -l)
n_fof=$(find "$FOF" -name 'song.ogg' | wc -l)
n_stem=$(find "$FOF" -name '*.ogg' ! -name 'song.ogg' | wc -l)
echo "corpus: $CORPUS"
echo "  wesnoth music (full mixes):       $WES/*.ogg  ($n_wes files)"
echo "  fretsonfire songs (full mixes):   $FOF/*/*/song.ogg  ($n_fof files)"
echo "  fretsonfire stems (not refs):     $FOF/*/*/guitar.ogg etc.  ($n_stem files)"
echo "  recorded speech (voice-*):        $CORPUS/root/usr/share/codec2/wav/*.wav  ($(find "$CORPUS/root/usr/share/codec2/wav" -name '*.wav' 2>/dev/null | wc -l) files)"
echo "  licences:                         $CORPUS/root/usr/share/doc/<pkg>/copyright"
if [ "$unseen" -eq 1 ]; then
  for d in usr/share/games/colobot/music usr/share/freedroidrpg/data/sound/music \
           usr/share/games/hedgewars/Data/Music; do
    echo "  unseen part:                      $CORPUS/root/$d/*.ogg  ($(find "$CORPUS/root/$d" -name '*.ogg' | wc -l) files)"
  done
fi
