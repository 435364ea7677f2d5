# Sourced by scripts that fetch Debian packages without installing them.
# apt_fetch CACHE "SUITE COMPONENTS" PKG[=VERSION]...: an isolated apt
# configuration under CACHE whose source is derived from the system's own
# Debian mirror, then the packages downloaded into CACHE/archives.
# debian_mirror: the Debian mirror the system's apt sources use (deb822
# or one-line sources), security archives aside.
debian_mirror() {
  local mirror
  mirror=$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | awk '/^[[:space:]]*(URIs:|deb )/ { for (i = 1; i <= NF; i++) if ($i ~ /^https?:\/\// && $i !~ /security/) { print $i; exit } }')
  [ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources" >&2; return 1; }
  echo "$mirror"
}

apt_fetch() {
  local cache=$1 suite=$2
  shift 2
  mkdir -p "$cache/lists/partial" "$cache/archives/partial"
  local mirror
  mirror=$(debian_mirror) || return 1
  echo "deb $mirror $suite" > "$cache/sources.list"
  local o=(-o Dir::Etc::SourceList="$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$cache/lists" -o Dir::Cache::Archives="$cache/archives" -o APT::Get::List-Cleanup=0)
  apt-get "${o[@]}" update -q >&2
  (cd "$cache/archives" && apt-get "${o[@]}" download -q "$@" >&2)
}

# fetch_pinned_deb CACHE PACKAGE VERSION SHA256 [SUITE]: the .deb of
# PACKAGE at exactly VERSION in CACHE, checked against SHA256; prints its
# path. When missing it is downloaded with the system's apt sources, or,
# with SUITE ("trixie main"), from that suite of the system's Debian
# mirror through an isolated apt configuration (apt_fetch). A cached file
# with the wrong digest is fetched again; a download with the wrong digest
# is deleted and fails.
fetch_pinned_deb() {
  local cache=$1 package=$2 version=$3 sha256=$4 suite=${5:-}
  local dir=$cache
  [ -z "$suite" ] || dir=$cache/archives
  mkdir -p "$dir"
  local deb
  deb=$(ls "$dir"/"${package}_${version//:/%3a}"_*.deb 2>/dev/null | head -1)
  if [ -n "$deb" ] && echo "$sha256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$deb"
    return 0
  fi
  rm -f "$dir"/"${package}"_*.deb
  echo "fetch: downloading $package $version${suite:+ from $suite}" >&2
  if [ -n "$suite" ]; then
    apt_fetch "$cache" "$suite" "$package=$version"
  elif ! (cd "$dir" && apt-get download -q "$package=$version" >&2); then
    apt-get update -q >&2 # a machine with stale package lists
    (cd "$dir" && apt-get download -q "$package=$version" >&2)
  fi
  deb=$(ls "$dir"/"${package}"_*.deb | head -1)
  if ! echo "$sha256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
    echo "fetch: SHA-256 of $deb does not match the pinned $sha256" >&2
    rm -f "$deb"
    return 1
  fi
  echo "$deb"
}
