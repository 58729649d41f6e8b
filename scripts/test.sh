#!/usr/bin/env bash
# The test command: set the machine up, then run the plugin's own tests (unit, pytester, live libvirtd, lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p test-results
exec python3 -m pytest tests/ -p no:cacheprovider -ra --junitxml=test-results/junit.xml "$@"
