#!/usr/bin/env bash
# `make install [DESTDIR=DIR]`: autoprov as systemd services (docs/install.md).
#
# Builds a virtualenv from Debian's /usr/bin/python3 (the interpreter Kamailio embeds) at
# /usr/lib/autoprov/venv with a non-editable install of this checkout, links /usr/bin/autoprov to
# its script, and installs the units, sysusers/tmpfiles entries and /etc/autoprov/autoprov.toml
# (never over an existing one). Everything goes under DESTDIR when it is set, as for a package;
# with an empty DESTDIR the user autoprov is created and systemd is told about the units.
#
# The venv is built in a staging folder beside its final place and then renamed into it, with
# every path written inside it rewritten to the final one (as dh-virtualenv does): a DESTDIR
# build runs from its final path, and a reinstall swaps the old venv for the new one at once.
set -euo pipefail
# The venv must be readable by the services' user whatever the caller's umask.
umask 022

src="$(cd "$(dirname "$0")/.." && pwd)"
destdir="${DESTDIR:-}"
destdir="${destdir%/}"
if [ -n "$destdir" ]; then
  mkdir -p "$destdir"
  destdir="$(cd "$destdir" && pwd)"
fi
python=/usr/bin/python3
venv=/usr/lib/autoprov/venv
staging="$destdir$venv.new"
config="$destdir/etc/autoprov/autoprov.toml"

build="$(mktemp -d)"
trap 'rm -rf "$build" "$staging"' EXIT

# A copy of what the wheel is built from, so pip's build leaves nothing in the checkout.
tar -C "$src" --exclude=__pycache__ -cf - pyproject.toml README.md kamailio.cfg sql \
  autoprov kemi provisioning_wsgi | tar -C "$build" -xf -

rm -rf "$staging"
mkdir -p "$(dirname "$staging")"
"$python" -m venv "$staging"
"$staging/bin/python" -m pip install -q --no-compile --no-warn-script-location "$build"

# Paths written inside the venv name the staging folder: scripts' shebangs, activate scripts,
# pyvenv.cfg. Bytecode is compiled afresh, naming the final path (tracebacks).
find "$staging" -name __pycache__ -type d -prune -exec rm -rf {} +
pattern="$(printf '%s' "$staging" | sed 's/[][\\.*^$|]/\\&/g')"
grep -rlIZF -- "$staging" "$staging" | xargs -0 -r sed -i "s|$pattern|$venv|g"
"$staging/bin/python" -m compileall -q -j 0 -s "$staging" -p "$venv" "$staging/lib"
if grep -rqF -- "$staging" "$staging"; then
  echo "install-service: $staging still named in: $(grep -rlF -- "$staging" "$staging")" >&2
  exit 1
fi
rm -rf "$destdir$venv.old"
if [ -e "$destdir$venv" ]; then
  mv "$destdir$venv" "$destdir$venv.old"
fi
mv "$staging" "$destdir$venv"
rm -rf "$destdir$venv.old"

install -d "$destdir/usr/bin"
ln -sfn "$venv/bin/autoprov" "$destdir/usr/bin/autoprov"

install -d "$destdir/lib/systemd/system" "$destdir/usr/lib/sysusers.d" \
  "$destdir/usr/lib/tmpfiles.d" "$destdir/usr/share/doc/autoprov" "$destdir/etc/autoprov"
install -m 0644 "$src"/contrib/systemd/*.service "$destdir/lib/systemd/system/"
install -m 0644 "$src/contrib/systemd/sysusers.conf" "$destdir/usr/lib/sysusers.d/autoprov.conf"
install -m 0644 "$src/contrib/systemd/tmpfiles.conf" "$destdir/usr/lib/tmpfiles.d/autoprov.conf"
install -m 0644 "$src/docs/install.md" "$src/README.md" "$destdir/usr/share/doc/autoprov/"

if [ -e "$config" ]; then
  install -m 0640 "$src/contrib/etc/autoprov.toml" "$config.dist"
  echo "install-service: kept $config; the shipped one is $config.dist"
else
  install -m 0640 "$src/contrib/etc/autoprov.toml" "$config"
fi

if [ -z "$destdir" ]; then
  systemd-sysusers /usr/lib/sysusers.d/autoprov.conf
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/autoprov.conf
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
fi
echo "install-service: autoprov installed${destdir:+ under $destdir}"
