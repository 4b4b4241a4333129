#!/usr/bin/env bash
# Set up everything CareWatch needs on a Debian machine: system packages (as root, via
# apt-get) and a virtualenv in .venv with the project installed. Idempotent.
# Usage: scripts/bootstrap.sh [--with-browser]   (--with-browser: what the tests need too)
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=0
[ "${1:-}" = "--with-browser" ] && want_browser=1

need_pkgs=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_pkgs+=(mosquitto-clients)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ "$want_browser" = 1 ]; then  # what the test suite needs beyond the demo
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
  # a CJK font, so the console's Chinese labels render in screenshots
  fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || need_pkgs+=(fonts-wqy-microhei)
  # PostgreSQL: the shared alert store's backend (tests start their own server on loopback)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
  command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)  # the test CA for TLS tests
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_pkgs[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: CareWatch needs these system packages: ${need_pkgs[*]}" >&2
    echo "bootstrap: install them as root, e.g.: sudo apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
