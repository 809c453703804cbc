#!/usr/bin/env bash
# Debian sid's CPython 3.14 and 3.15 made runnable on this (older) Debian, the way a
# distribution builds them (GCC 16, LTO, stripped; 3.15 with frame pointers), for the
# tests on "the interpreters people run today". Idempotent.
#
#   tests/tools/current-python.sh [CACHE]     # default ~/.cache/mixedstack/current-python
#
# Leaves, per version X (3.14, 3.15):
#   CACHE/X/root/usr/bin/python3.X   sid's binary with its -dbg symbols in root/usr/lib/debug
#   CACHE/X/bare/usr/bin/python3.X   the same binary in a root without them
# Why binaries: Debian's sources for 3.14/3.15 are not reachable here, the packages are.
# Only a temporary sources list is read (the machine's own apt setup is left alone), and
# sid's own libc is used through the binary's interpreter and rpath, never through
# LD_LIBRARY_PATH (which would break every host tool started from such an environment).
set -euo pipefail
CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedstack/current-python}
VERSIONS=(3.14 3.15)
LIBS=(libc6 libssl3t64 zlib1g libexpat1 libffi8 liblzma5 libbz2-1.0 libsqlite3-0 libuuid1
      libzstd1 libncursesw6 libtinfo6 libreadline8t64)

done_already=1
for v in "${VERSIONS[@]}"; do
  for kind in root bare; do
    [ -x "$CACHE/$v/$kind/usr/bin/python$v" ] || done_already=0
  done
done
if [ "$done_already" = 1 ]; then
  for v in "${VERSIONS[@]}"; do echo "current CPython $v already here: $CACHE/$v/{root,bare}/usr/bin/python$v"; done
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "current-python: $tool not found: this needs a Debian-like system" >&2; exit 1; }
done
if ! command -v patchelf >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/debs"
. "$(dirname "$0")/debian-archive.sh"
archive=$(debian_archive)
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive sid main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update

for v in "${VERSIONS[@]}"; do
  pkgs=("python$v" "python$v-minimal" "libpython$v" "libpython$v-minimal" "libpython$v-stdlib"
        "python$v-dbg" "libpython$v-dbg" "${LIBS[@]}")
  mkdir -p "$work/debs/$v"
  (cd "$work/debs/$v" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}")
  stage="$work/$v"
  rm -rf "$stage"
  mkdir -p "$stage/root"
  for deb in "$work/debs/$v"/*.deb; do
    dpkg-deb -x "$deb" "$stage/root"
  done
  # The -dbg packages' own debug interpreter is not the one users run; the release
  # binary's symbols (usr/lib/debug/.build-id) are what we keep from them.
  rm -f "$stage/root/usr/bin/python$v"d* "$stage/root/usr/bin/python$v-dbg"*
  dest="$CACHE/$v"
  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$stage/root" "$dest/root"
  root=$dest/root
  patchelf --set-interpreter "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
    --force-rpath --set-rpath "$root/usr/lib/x86_64-linux-gnu" "$root/usr/bin/python$v"
  # The bare case: the same tree without the debug folder (hard links: no second copy).
  cp -al "$root" "$dest/bare"
  rm -rf "$dest/bare/usr/lib/debug"
  # Each root's binary must find its own libc and stdlib: patch the bare one too (a
  # separate file, since patchelf rewrites in place through the hard link otherwise).
  cp --remove-destination "$root/usr/bin/python$v" "$dest/bare/usr/bin/python$v"
  patchelf --set-interpreter "$dest/bare/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
    --force-rpath --set-rpath "$dest/bare/usr/lib/x86_64-linux-gnu" "$dest/bare/usr/bin/python$v"
  for kind in root bare; do
    "$dest/$kind/usr/bin/python$v" -c 'import sys, ssl, sqlite3, zlib; print("ready", sys.version.split()[0], sys.executable)'
  done
done
