#!/usr/bin/env bash
# Build CPython 3.13 from Debian trixie's source, one of two ways, for the tests. Idempotent.
#
#   tests/tools/build-python.sh fp [PREFIX]   # frame pointers (record's frame-pointer mode):
#                                             #   PREFIX/bin/python3.13, default ~/.cache/mixedstack/fp-python
#   tests/tools/build-python.sh ft [PREFIX]   # free-threaded (--disable-gil, PEP 703):
#                                             #   PREFIX/bin/python3.13t, default ~/.cache/mixedstack/ft-python
#
# No registry ships such builds; Debian trixie's python3.13 source builds both (bookworm
# has no 3.13 source). The source comes through apt from a deb-src entry for trixie on
# this machine's own Debian archive, which this script adds and always removes again.
set -euo pipefail
flavour=${1:-}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mixedstack
case "$flavour" in
  fp) PREFIX=${2:-$cache/fp-python}; binary=python3.13; what="frame-pointer"
      configure=(CFLAGS="-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer") ;;
  ft) PREFIX=${2:-$cache/ft-python}; binary=python3.13t; what="free-threaded"
      configure=(--disable-gil) ;;
  *) echo "usage: build-python.sh fp|ft [PREFIX]: fp for frame pointers, ft for a free-threaded build" >&2; exit 2 ;;
esac
if [ -x "$PREFIX/bin/$binary" ]; then
  echo "$what CPython already built: $PREFIX/bin/$binary"
  exit 0
fi
for tool in apt-get gcc make tar; do
  command -v "$tool" >/dev/null || { echo "build-python: $tool not found: install it" >&2; exit 1; }
done
work=$(mktemp -d)
list=/etc/apt/sources.list.d/mixedstack-trixie-src-$flavour.list
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
  LDFLAGS="-Wl,-rpath,$PREFIX/lib" "${configure[@]}"
make -s -j"$(nproc)" >/dev/null
make -s altinstall >/dev/null
"$PREFIX/bin/$binary" -c 'import sys; print("built", sys.version.split()[0], sys.executable)'
