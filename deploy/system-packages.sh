#!/usr/bin/env bash
# Installs the Debian packages the project needs and the machine lacks. Run by `make demo` and `make test`,
# so the two commands work on a fresh Debian 12/13 (or Raspberry Pi OS) machine.
# It installs only what is missing, and says exactly what to do when it cannot (no root, no sudo, no network).
set -euo pipefail

# command-or-file-to-check  package
needed=(
  "mosquitto:mosquitto"
  "python3-venv:python3-venv"
  # The kiosk (Kivy renders through EGL/GLES on Mesa, offscreen when no display is set) and its QR checks.
  "lib:libEGL.so.1:libegl1"
  "lib:libGLESv2.so.2:libgles2"
  "lib:libgbm.so.1:libgbm1"
  "lib:libmtdev.so.1:libmtdev1"
  "lib:libzbar.so.0:libzbar0"
  "file:/usr/lib/x86_64-linux-gnu/dri/swrast_dri.so|/usr/lib/aarch64-linux-gnu/dri/swrast_dri.so:libgl1-mesa-dri"
  # The BLE station's tests run a pretend bluetoothd on a private D-Bus (a station itself uses the system's).
  "dbus-daemon:dbus-daemon"
  # The companion's pages are checked in headless Chromium (with axe-core) by the tests.
  "chromium:chromium"
  # The take-home PDF is read back by pdftotext in its tests.
  "pdftotext:poppler-utils"
)

missing=()
for entry in "${needed[@]}"; do
  probe=${entry%%:*} package=${entry##*:}
  case "$probe" in
    lib) library=${entry#lib:}; library=${library%%:*}
         /sbin/ldconfig -p 2>/dev/null | grep -q "$library" || missing+=("$package") ;;
    file) files=${entry#file:}; files=${files%:*}; found=no
          IFS='|' read -ra candidates <<<"$files"
          for candidate in "${candidates[@]}"; do [ -e "$candidate" ] && found=yes; done
          [ "$found" = yes ] || missing+=("$package") ;;
    python3-venv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("$package") ;;
    *) command -v "$probe" >/dev/null 2>&1 || [ -x "/usr/sbin/$probe" ] || missing+=("$package") ;;
  esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them as root:  apt-get install -y ${missing[*]}   then run the make command again." >&2
  exit 1
fi

echo "Installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
  "${as_root[@]}" apt-get update
  "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" || {
    echo "Could not install ${missing[*]} with apt-get (no network or no Debian mirror?)." >&2
    echo "Install them by hand, then run the make command again." >&2
    exit 1
  }
fi
# Debian starts a system-wide Mosquitto on port 1883 when it installs the package (where systemd runs).
# The project never uses it: `museum broker run` starts Mosquitto with the site's own configuration.
