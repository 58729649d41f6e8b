#!/usr/bin/env bash
# The main job: make this machine a lab hypervisor, run the suites against it, print the Allure report.
# Fresh Debian 12 machine, as root: apt and pip installs included (scripts/setup.sh).
#   KVMIO_MAIN_ARGS  extra pytest arguments (default: the lab's performance profiles, shortened for TCG)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
kvmio lab up
out=${KVMIO_OUT:-kvmio-out}
set +e
KVMIO_HOST=local KVMIO_OUT="$out" \
  KVMIO_PYTEST_ARGS="--domain=kvmio-lab-* ${KVMIO_MAIN_ARGS:---fio-runtime 3 --fio-ramp-time 1}" \
  bash ci/kvmio-gate.sh
status=$?
set -e
cat <<TXT

The lab seeds misconfigurations on purpose (see 'kvmio lab status'), so this run reports failures:
each one is a finding listed in the lab's manifest. Verdicts: $PWD/$out/verdicts.json
Allure report: $PWD/$out/allure-report/index.html
TXT
exit "$status"
