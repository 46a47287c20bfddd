# shellcheck shell=bash
# Step "binaries": download each artifact once per host, verify its sha256, install it.
# KHW_ARTIFACTS has one line per artifact: KEY URL SHA256|- SUM_URL INSTALL
#   INSTALL is bin:DEST[:NAME] (a single binary) or tar:DEST:MEMBER,MEMBER (from an archive).
# KHW_HELD: installed paths whose new version waits as PATH.next for its service's step.
# Downloads land in /var/cache/kube-hardway, keyed by mirror path, so a re-run or an
# interrupted run never fetches a verified file twice.
CACHE=${KHW_CACHE:-/var/cache/kube-hardway}
# what a role no longer needs stays until teardown (see khw_prune in lib.sh)
# shellcheck disable=SC2034
KHW_KEEP_STALE=1

fetch() { # fetch URL OUT
  if command -v curl >/dev/null; then curl -fsSL --retry 3 --connect-timeout 10 -o "$2" "$1"
  else wget -q -T 10 -t 3 -O "$2" "$1"; fi
}

expected_sha() { # expected_sha KEY SHA SUM_URL -> prints the sha256 to check against
  local key=$1 sha=$2 sum_url=$3 sums base
  if [ "$sha" != - ]; then echo "$sha"; return; fi
  sums=$(mktemp)
  fetch "$sum_url" "$sums" || khw_die "cannot fetch checksum file $sum_url for $key"
  base=${key##*/}
  # either a bare hash (kubernetes *.sha256) or "HASH  NAME" lines (SHA256SUMS, *.sha256sum)
  sha=$(awk -v b="$base" 'NF==1 {print $1; exit} { n=$2; sub(/^\*/, "", n); sub(/.*\//, "", n); if (n==b) {print $1; exit} }' "$sums")
  rm -f "$sums"
  [ -n "$sha" ] || khw_die "no checksum for $base in $sum_url"
  echo "$sha"
}

download() { # download KEY URL SHA SUM_URL -> path of the verified file in the cache
  local key=$1 url=$2 sha=$3 sum_url=$4 file="$CACHE/$1" want got
  if [ -f "$file" ] && [ -f "$file.sha256" ]; then
    got=$(cat "$file.sha256")
    if [ "$sha" = - ] || [ "$sha" = "$got" ]; then
      [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$got" ] && { echo "$file"; return; }
    fi
  fi
  want=$(expected_sha "$key" "$sha" "$sum_url")
  mkdir -p "$(dirname "$file")"
  fetch "$url" "$file.part" || khw_die "download failed: $url"
  got=$(sha256sum "$file.part" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$file.part"
    khw_die "sha256 mismatch for $url: expected $want, got $got"
  fi
  mv -f "$file.part" "$file"
  echo "$got" > "$file.sha256"
  khw_log "downloaded and verified $key" >&2
  echo "$file"
}

held() { case " ${KHW_HELD:-} " in *" $1 "*) return 0 ;; esac; return 1; }

install_bin() { # install_bin SRC DEST_FILE: copy when different (content or mode), executable
  local src=$1 dest=$2
  khw_own "$dest"
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    rm -f "$dest.next"  # (a staged version that the config no longer asks for)
    if [ "$(stat -c %a "$dest")" = 755 ]; then return; fi
  elif [ -f "$dest" ] && held "$dest"; then
    # a new version of a node binary (KHW_HELD): staged beside it, and put in place by its own
    # service's step when that restarts it (during an upgrade: once the node is drained, after
    # the control planes). A kubelet that crashed before then still restarts on its old version.
    khw_own "$dest.next"
    if [ -f "$dest.next" ] && cmp -s "$src" "$dest.next"; then return; fi
    install -m 0755 "$src" "$dest.khw-new"
    mv -f "$dest.khw-new" "$dest.next"
    KHW_CHANGED+=("$dest.next")
    khw_log "staged $dest.next (step ${dest##*/} puts it in place)"
    return
  fi
  install -m 0755 "$src" "$dest.khw-new"
  mv -f "$dest.khw-new" "$dest"
  KHW_CHANGED+=("$dest")
  khw_log "installed $dest"
}

while read -r key url sha sum_url install; do
  [ -n "$key" ] || continue
  file=$(download "$key" "$url" "$sha" "$sum_url")
  IFS=: read -r kind dest spec <<< "$install"
  if [ "$kind" = bin ]; then
    install_bin "$file" "$dest/${spec:-${key##*/}}"
  else
    tmp=$(mktemp -d)
    IFS=, read -r -a members <<< "$spec"
    tar -xzf "$file" -C "$tmp" || khw_die "cannot unpack $key"
    for m in "${members[@]}"; do
      [ -f "$tmp/$m" ] || khw_die "$key does not contain $m"
      install_bin "$tmp/$m" "$dest/${m##*/}"
    done
    rm -rf "$tmp"
  fi
done <<< "$KHW_ARTIFACTS"

# kubectl on control planes, for the operator and for the etcd/apiserver checks
if [ -x /opt/kubernetes/bin/kubectl ]; then mkdir -p /usr/local/bin && ln -sf /opt/kubernetes/bin/kubectl /usr/local/bin/kubectl; fi
khw_log "binaries ready (${#KHW_CHANGED[@]} installed or updated)"
