#!/usr/bin/env bash
# Installs the Debian packages dyadlab needs beyond Python 3: venv support, a virtual X display
# for headless PsychoPy (Xvfb + xauth), libjack so that psychtoolbox imports (otherwise PsychoPy
# silently falls back to a different clock and keyboard), OpenGL/GTK runtime libraries for
# pyglet and Qt, fonts for text stimuli, xdotool for simulated key presses in tests, chromium for
# the tests' screenshots of the HTML reports and the dyad monitor's page tests (headless, driven
# by Playwright without its own browser download), espeak-ng for the spoken cues of the
# session console (dyadlab run works without it: cues are then shown only) and for the simulated
# voices of the conversation tests and benchmark (acquisition/voices.py), PulseAudio
# (pulseaudio, pulseaudio-utils) and ALSA's pulse plugin (libasound2-plugins) for the virtual
# microphones of the audio capture tests and benchmark (tests/acquisition/virtual_audio.py),
# strace for the XDF writer's failure tests (tests/acquisition/test_xdf_writer_exact.py: it makes
# fsync, ftruncate, close and writes of the recording fail as a failing disk would).
set -euo pipefail

packages=(
  make python3-venv xvfb xauth xdotool libjack-jackd2-0 fonts-dejavu-core
  libgl1 libglu1-mesa libegl1 libgtk-3-0 libxxf86vm1 libasound2 libportaudio2 libsndfile1
  libusb-1.0-0 libxkbcommon-x11-0 libxcb-cursor0 chromium espeak-ng
  pulseaudio pulseaudio-utils libasound2-plugins strace
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "dyadlab: installing system packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "dyadlab: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
