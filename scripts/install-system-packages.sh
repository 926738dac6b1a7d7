#!/usr/bin/env bash
# Installs the Debian packages autoprov runs on, only those that are missing. Safe to repeat.
# Extra package names as arguments are installed too (`make bench`: wrk, nginx, ...).
set -euo pipefail
packages=(
  kamailio kamailio-python3-modules kamailio-postgres-modules kamailio-tls-modules
  postgresql sip-tester python3-venv openssl "$@"
  # make test runs fail2ban-regex with the shipped filters on real log files.
  fail2ban
  # The web front on 1444, 1445 and 1446 (issue 19); its Server header on the files it serves.
  nginx libnginx-mod-http-headers-more-filter
  # The operators' pages are tested in a real browser (Playwright drives Debian's build).
  chromium
  # A real SIP user agent registers through the proxy and gets its check-sync in make test.
  baresip-core
  # The media relay calls use when rtpengine_socket is set (started by make run; tested).
  rtpengine-daemon
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts packaged daemons on install where it can; ours run under our own control.
for svc in kamailio postgresql nginx rtpengine-daemon; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $sudo systemctl disable --now "$svc" || true
  fi
done
