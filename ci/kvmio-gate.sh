#!/usr/bin/env bash
# Run the kvmio suites, write JUnit + JSON + Allure results (and the HTML report when the Allure CLI
# is available), and exit with the gate's code. GitLab CI, GitHub Actions and Jenkins all call this.
#
# Environment (all optional):
#   KVMIO_HOST        hypervisor(s) to check, e.g. hv01 or "hv01,hv02" (default: local)
#   KVMIO_DOMAIN_XML  lint these domain XML files/dirs offline instead of checking a host
#   KVMIO_WAIVERS     waivers file (read by the plugin itself)
#   KVMIO_SUITES      suites to run (default: suites/)
#   KVMIO_OUT         output directory (default: kvmio-out): junit.xml, verdicts.json, allure-results/, allure-report/
#   KVMIO_PYTEST_ARGS extra pytest arguments, split on whitespace (no shell quoting), e.g. "-x --fio-repeat 5"
#   KVMIO_PYTEST_ARGS_FILE  more extra pytest arguments, one per line, each taken whole: for arguments with
#                     spaces, e.g. the two lines `-k` and `not perf or randread-4k-qd32x4` (relative to the repo)
#   KVMIO_INSTALL=1   pip install the package first (pip install ".[charts]")
#   KVMIO_ALLURE      Allure CLI command (default: npx in .kvmio/node, then `allure` on PATH; skipped when absent)
#   KVMIO_ALLURE_CONFIG  Allure 3 config (default: ci/allurerc.yaml: report name, tree grouped by rule level →
#                     rule → host, kvmio categories); not passed to an Allure 2 CLI, which reads categories.json
# Exit code: pytest's, as gated by kvmio (0 = no unwaived failure; 5 = nothing was checked; 4 = bad input).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${KVMIO_OUT:-kvmio-out}
suites=${KVMIO_SUITES:-suites/}
mkdir -p "$out"
rm -rf "$out/allure-results" "$out/allure-report"

if [[ ${KVMIO_INSTALL:-0} == 1 ]]; then
  python3 -m pip install -q --disable-pip-version-check ".[charts]" || exit 3
fi

read -ra suite_list <<<"$suites"
args=("${suite_list[@]}" -p no:cacheprovider -o junit_family=xunit1
      "--junitxml=$out/junit.xml" "--kvmio-json=$out/verdicts.json" "--alluredir=$out/allure-results")
if [[ -n ${KVMIO_DOMAIN_XML:-} ]]; then
  for path in $KVMIO_DOMAIN_XML; do args+=("--domain-xml=$path"); done
elif [[ -n ${KVMIO_HOST:-} ]]; then
  args+=("--host=$KVMIO_HOST")
fi
# shellcheck disable=SC2206  # word-splitting of extra arguments is intended
[[ -n ${KVMIO_PYTEST_ARGS:-} ]] && args+=($KVMIO_PYTEST_ARGS)
if [[ -n ${KVMIO_PYTEST_ARGS_FILE:-} ]]; then
  mapfile -t file_args <"$KVMIO_PYTEST_ARGS_FILE" || exit 4
  args+=("${file_args[@]}")
fi

python3 -m pytest "${args[@]}"
status=$?

allure=${KVMIO_ALLURE:-}
if [[ -z $allure ]]; then
  if [[ -x .kvmio/node/node_modules/.bin/allure ]]; then allure=.kvmio/node/node_modules/.bin/allure
  elif command -v allure >/dev/null; then allure=allure
  fi
fi
if [[ -n $allure && -d $out/allure-results ]]; then
  generate=(generate "$out/allure-results" -o "$out/allure-report")
  # Allure 3 ignores categories.json and groups its tree by file unless given our config; Allure 2's
  # --config means something else, so only a 3.x (or later) CLI gets it.
  allure_version=$($allure --version 2>/dev/null | tail -n1)
  if [[ $allure_version =~ ^([3-9]|[1-9][0-9]+)\. ]]; then
    generate+=(--config "${KVMIO_ALLURE_CONFIG:-ci/allurerc.yaml}")
  fi
  if $allure "${generate[@]}" >"$out/allure-generate.log" 2>&1; then
    echo "kvmio-gate: Allure report in $out/allure-report/index.html"
  else
    echo "kvmio-gate: allure generate failed (see $out/allure-generate.log); the gate is unaffected" >&2
  fi
else
  echo "kvmio-gate: no Allure CLI (npm install allure@3); results stay in $out/allure-results"
fi
echo "kvmio-gate: exit $status"
exit "$status"
