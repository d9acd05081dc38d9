#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests use, where this machine allows it:
#   asterisk-core-sounds-en-g722  real recorded speech (CC-BY-SA-3.0), the demo corpus
#   espeak-ng                     synthesised speech, the fallback corpus
#   chromium                      headless browser, only with --with-browser (`make test`): the
#                                 report-page tests load index.html in it (they skip without it)
# Never fails the build: without root/sudo it says what is missing and carries on.
set -u
browser=0
[ "${1:-}" = "--with-browser" ] && browser=1
need=()
[ -d /usr/share/asterisk/sounds/en_US_f_Allison ] || [ -d /usr/share/asterisk/sounds/en ] || need+=(asterisk-core-sounds-en-g722)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ $browser -eq 0 ] || command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "note: cannot install ${need[*]} (not root, no passwordless sudo); the demo corpus needs asterisk-core-sounds-en-g722 or espeak-ng; the report-page browser test needs chromium." >&2; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "note: no apt-get here; install ${need[*]} by hand." >&2; exit 0; fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# One package at a time, so that one missing from this distribution does not block the others.
updated=0
for pkg in "${need[@]}"; do
  $SUDO apt-get install -y -qq "$pkg" >/dev/null 2>&1 && continue
  [ $updated -eq 0 ] && { $SUDO apt-get update -qq >/dev/null 2>&1; updated=1; }
  $SUDO apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
    || echo "note: apt-get could not install $pkg; the demo and tests will use what is available." >&2
done
exit 0
