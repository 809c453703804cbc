#!/usr/bin/env bash
# Build CPython 3.13 with frame pointers into PREFIX (default: ~/.cache/mixedstack/fp-python),
# for testing record's frame-pointer mode (perf map + perf record -g). Idempotent.
#
# No registry ships such a build; Debian trixie's python3.13 source does build with
# frame pointers (bookworm has no 3.13 source). The source comes through apt from a
# deb-src entry for trixie that this script adds and always removes again.
set -euo pipefail
PREFIX=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedstack/fp-python}
if [ -x "$PREFIX/bin/python3.13" ]; then
  echo "frame-pointer CPython already built: $PREFIX/bin/python3.13"
  exit 0
fi
for tool in apt-get gcc make tar; do
  command -v "$tool" >/dev/null || { echo "build-fp-python: $tool not found: install it" >&2; exit 1; }
done
work=$(mktemp -d)
list=/etc/apt/sources.list.d/mixedstack-trixie-src.list
cleanup() { rm -f "$list"; rm -rf "$work"; }
trap cleanup EXIT
. "$(dirname "$0")/debian-archive.sh"
archive=$(debian_archive)
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive trixie main" > "$list"
# only this entry is read: the machine's own sources are left as they are
apt_opts=(-o "Dir::Etc::SourceList=$list" -o "Dir::Etc::SourceParts=-" -o "APT::Get::List-Cleanup=0")
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only python3.13/trixie)
rm -f "$list"
orig=$(ls "$work"/python3.13_*.orig.tar.* | head -1)
mkdir "$work/src" && tar -xf "$orig" -C "$work/src" --strip-components=1
cd "$work/src"
./configure -q --prefix="$PREFIX" --enable-shared --without-ensurepip \
  LDFLAGS="-Wl,-rpath,$PREFIX/lib" \
  CFLAGS="-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer"
make -s -j"$(nproc)" >/dev/null
make -s altinstall >/dev/null
"$PREFIX/bin/python3.13" -c 'import sys; print("built", sys.version.split()[0], sys.executable)'
