#!/usr/bin/env bash
# Create .venv and install domainfm with every extra, plus the system packages it needs.
# Idempotent: the Makefile runs it only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)   # the evaluation sandbox
command -v git   >/dev/null 2>&1 || need_apt+=(git)          # reading git repositories in curation
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the report's browser test (tests/report)
# MultiPL-E runtimes (docs/evaluate.md, "MultiPL-E languages"): each language's compiler/interpreter plus the
# test library its translated tests use. Debian 12 packages, --no-install-recommends; on this machine kind
# (g++, a JDK, node and perl already present) they add about 1.0 GB installed, ~30 s to install here.
# Julia and Swift (no Debian 12 package) are reported as skipped.
multiple_apt=(nodejs g++ default-jdk-headless libjavatuples-java golang-go rustc lua5.4 lua-unit ruby
              ruby-test-unit php-cli perl libtest-deep-perl r-base-core node-typescript gdc scala)
need_multiple=()
for pkg in "${multiple_apt[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_multiple+=("$pkg")
done
if [ $(( ${#need_apt[@]} + ${#need_multiple[@]} )) -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing system packages: ${need_apt[*]} ${need_multiple[*]}"
    apt-get update -qq
    if [ ${#need_apt[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    if [ ${#need_multiple[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_multiple[@]}" >/dev/null
    fi
  else
    echo "bootstrap: warning: please install these system packages: ${need_apt[*]} ${need_multiple[*]}" >&2
  fi
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip wheel setuptools
fi
echo "bootstrap: installing domainfm[all,dev] (torch==2.14.1 / torchvision==0.29.1 are pinned)"
.venv/bin/python -m pip install -q -e '.[all,dev]'
