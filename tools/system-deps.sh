#!/usr/bin/env bash
# Debian packages some tools and tests need (`make system-deps`). espeak-ng synthesizes the
# labeled data, and its MBROLA voices (mbrola + one database per voice, Debian contrib and
# non-free) add human diphones to the training data; festival, FreeTTS and flite read the
# cross-synthesizer evaluation stores; sox and ffmpeg run training augmentations; headless
# Chromium loads the jobs status page in the platform tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="espeak-ng festival festvox-kdlpc16k festvox-us-slt-hts freetts flite sox ffmpeg chromium"
# The MBROLA package list and the check that every database is installed live in one place,
# tools/synthesize/voices.py, which the training data reads too.
VOICES='import sys; sys.path.insert(0, "."); import tools.synthesize.voices as v'
MBROLA="$(python3 -c "$VOICES; print(' '.join(v.MBROLA_PACKAGES))")"

present() {
  command -v espeak-ng && command -v chromium && command -v festival && command -v sox \
    && command -v ffmpeg && command -v flite && command -v mbrola \
    && test -f /usr/share/java/freetts.jar \
    && test -d /usr/share/festival/voices/english/ked_diphone \
    && test -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts \
    && python3 -c "$VOICES; v.mbrola_voices()"
}
present >/dev/null 2>&1 && exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
# The MBROLA packages live in Debian's contrib and non-free components; enable them for this
# release when the machine's sources carry main only.
if ! apt-cache policy mbrola 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
  . /etc/os-release
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/asr-contrib-non-free.sources >/dev/null
  $SUDO apt-get update -qq
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq $PACKAGES $MBROLA >/dev/null
