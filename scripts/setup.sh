#!/usr/bin/env bash
# Make a fresh Debian 12 machine ready for pytest-kvmio: packages, the package itself, libvirt daemons.
# Safe to run again: installs only what is missing and leaves running daemons alone.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients   # the hypervisor
  libvirt-dev pkg-config gcc python3-dev                              # build libvirt-python
  fio busybox-static cpio kmod                                        # the lab guest
  e2fsprogs dosfstools                                                # filesystems the scratch-disk checks must refuse
  openssh-server openssh-client                                       # the remote path on loopback
  libxml2-utils                                                       # virt-xml-validate
  virtinst                                                            # virt-xml: kvmio fix prints its commands; tests apply them
  postgresql                                                          # the results history's shared store: tests start a throwaway cluster
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # --force-confnew: a qemu.conf left from an earlier install would otherwise stop dpkg at a prompt.
  apt-get install -y -q -o Dpkg::Options::=--force-confnew "${missing[@]}"
fi

echo "setup: pip install -e .[dev]"
python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" || true

# The build requirement (pyproject: setuptools>=68; from 70.1 it builds wheels without `wheel`; 81 drops pkg_resources) where
# `pip install --no-build-isolation .` finds it: tests/test_lint_command.py installs kvmio into a fresh venv offline.
if ! python3 -c "import setuptools.command.bdist_wheel" 2>/dev/null; then
  echo "setup: pip install setuptools>=70.1,<81"
  python3 -m pip install -q --disable-pip-version-check 'setuptools>=70.1,<81' 2>&1 | grep -v -e "Running pip as the 'root' user" || true
fi

echo "setup: libvirt daemons"
python3 -c "from pytest_kvmio.lab import daemons; started = daemons.ensure_running(); daemons.connect(); print('setup: started ' + (', '.join(started) or 'nothing (already running)'))"

# Report tooling (issue 6): Chromium for the Allure report browser test, the Allure 3 CLI (npm, no Java),
# matplotlib for perf charts. Installed only when missing.
if ! command -v chromium >/dev/null; then
  echo "setup: apt-get install chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
if [[ ! -x .kvmio/node/node_modules/.bin/allure ]] && command -v npm >/dev/null; then
  echo "setup: npm install allure@3 into .kvmio/node"
  npm install --prefix .kvmio/node --no-audit --no-fund --silent allure@3 >/dev/null
fi
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check -e '.[charts]' 2>&1 \
  | grep -v -e "Running pip as the 'root' user" -e "^WARNING: Location" || true
