#!/usr/bin/env bash
# Real human speech with transcripts, for `parley bench stt` and the multilingual speech tests, fetched once into
# the speech cache (PARLEY_SPEECH_DIR, default ~/.cache/parley/speech). Nothing is installed on the system:
# - Debian's Asterisk prompts, 16 kHz G.722: US English (Allison Smith) and Canadian French (June Wallack), with
#   their texts (core-sounds-<lang>.txt): apt-get download + dpkg-deb -x.
# - pocketsphinx's test recordings (LibriVox "Sense and Sensibility" reader, the "cards" speaker), with
#   transcripts, from its source package on PyPI: pip download.
# Re-running is cheap: each source has a stamp.
set -euo pipefail
dest="${PARLEY_SPEECH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/speech}"
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

if [ ! -f "$dest/asterisk/.done" ]; then
  debs=(asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-fr asterisk-core-sounds-fr-g722)
  if ! (cd "$work" && apt-get download "${debs[@]}" >/dev/null 2>&1); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    (cd "$work" && apt-get download "${debs[@]}")
  fi
  rm -rf "$dest/asterisk"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest/asterisk"; done
  touch "$dest/asterisk/.done"
  echo "speech: Asterisk prompts (en, fr) in $dest/asterisk"
fi

if [ ! -f "$dest/pocketsphinx/.done" ]; then
  "$python" -m pip download --quiet --no-deps --no-binary :all: -d "$work" pocketsphinx==5.1.1
  tar -xzf "$work"/pocketsphinx-5.1.1.tar.gz -C "$work" \
    pocketsphinx-5.1.1/test/data/librivox pocketsphinx-5.1.1/test/data/cards
  rm -rf "$dest/pocketsphinx"
  mkdir -p "$dest/pocketsphinx"
  cp -r "$work"/pocketsphinx-5.1.1/test/data/librivox "$work"/pocketsphinx-5.1.1/test/data/cards "$dest/pocketsphinx/"
  touch "$dest/pocketsphinx/.done"
  echo "speech: pocketsphinx test recordings in $dest/pocketsphinx"
fi
