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

# fetch_pinned_deb CACHE PACKAGE VERSION SHA256: the .deb of PACKAGE at
# exactly VERSION in CACHE (downloaded with the system's apt sources when
# missing), checked against SHA256; prints its path. A cached file with
# the wrong digest is fetched again; a download with the wrong digest is
# deleted and fails.
fetch_pinned_deb() {
  local cache=$1 package=$2 version=$3 sha256=$4
  mkdir -p "$cache"
  local deb
  deb=$(ls "$cache"/"${package}_${version//:/%3a}"_*.deb 2>/dev/null | head -1)
  if [ -n "$deb" ] && echo "$sha256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$deb"
    return 0
  fi
  rm -f "$cache"/"${package}"_*.deb
  echo "fetch: downloading $package $version" >&2
  if ! (cd "$cache" && apt-get download -q "$package=$version" >&2); then
    apt-get update -q >&2 # a machine with stale package lists
    (cd "$cache" && apt-get download -q "$package=$version" >&2)
  fi
  deb=$(ls "$cache"/"${package}"_*.deb | head -1)
  if ! echo "$sha256  $deb" | sha256sum -c --quiet - 2>/dev/null; then
    echo "fetch: SHA-256 of $deb does not match the pinned $sha256" >&2
    rm -f "$deb"
    return 1
  fi
  echo "$deb"
}
