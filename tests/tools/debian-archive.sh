# Sourced by the scripts that fetch Debian packages (build-python.sh, current-python.sh):
# `debian_archive` prints the Debian archive this machine's apt is set up with (the URI
# of its main archive, not the security one), read from /etc/apt/sources.list.d/*.sources
# (deb822) or /etc/apt/sources.list, so that no registry's address is written into the
# project. Fails with a one-line reason when there is none.
debian_archive() {
  local found=""
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -r "$file" ] || continue
    # deb822 stanzas: the URIs of one whose Suites are not a security suite
    found=$(awk 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites = $i }
        }
        if (uris != "" && suites !~ /security/) { split(uris, u, /[ \t]+/); print u[1]; exit } }' "$file")
    [ -n "$found" ] && break
  done
  if [ -z "$found" ] && [ -r /etc/apt/sources.list ]; then
    # one-line form: deb [options] URI suite components
    found=$(awk '$1 == "deb" && $0 !~ /security/ {
        for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  if [ -z "$found" ]; then
    echo "no Debian archive in this machine's apt sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list): add one" >&2
    return 1
  fi
  echo "${found%/}"
}
