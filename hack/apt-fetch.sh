# Sourced by scripts that fetch Debian packages without installing them.
# apt_fetch CACHE "SUITE COMPONENTS" PKG[=VERSION]...: an isolated apt
# configuration under CACHE whose source is derived from the system's own
# Debian mirror, then the packages downloaded into CACHE/archives.
apt_fetch() {
  local cache=$1 suite=$2
  shift 2
  mkdir -p "$cache/lists/partial" "$cache/archives/partial"
  # The mirror the system already uses (deb822 or one-line sources).
  local mirror
  mirror=$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | awk '/^[[:space:]]*(URIs:|deb )/ { for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\// && $i !~ /security/) { print $i; exit } }')
  [ -n "$mirror" ] || { echo "apt_fetch: no Debian mirror found in the apt sources" >&2; return 1; }
  echo "deb $mirror $suite" > "$cache/sources.list"
  local o=(-o Dir::Etc::SourceList="$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$cache/lists" -o Dir::Cache::Archives="$cache/archives" -o APT::Get::List-Cleanup=0)
  apt-get "${o[@]}" update -q >&2
  (cd "$cache/archives" && apt-get "${o[@]}" download -q "$@" >&2)
}
