#!/usr/bin/env bash
# One-time machine set-up for earmark: system packages the build and the tools need.
# Idempotent and quiet when everything is already there.
#   cmake      builds the bundled libopus (Ogg/Opus decoding, cargo feature `opus`)
#   ffmpeg sox espeak-ng   make the evaluation queries (degradations, speech negatives)
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v sox >/dev/null 2>&1 || need+=(sox libsox-fmt-all)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
