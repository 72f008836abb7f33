#!/usr/bin/env bash
# Installs uniaudio-rt and everything its tests need on a fresh machine (CPU only).
# torch comes first and pinned: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PIP="python3 -m pip install -q --disable-pip-version-check"
$PIP torch==2.13.0
$PIP -r requirements.txt -r requirements-test.txt
$PIP --no-build-isolation -e .
python3 tests/real_audio.py   # real recordings for tests and the README example (Debian registry)
