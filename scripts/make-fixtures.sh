#!/usr/bin/env bash
# make-fixtures.sh [OUTDIR] — build the busybox test fixtures, offline.
#
# From Debian's busybox-static binary (/bin/busybox, or $BUSYBOX) this writes:
#   OUTDIR/rootfs/             a minimal root filesystem (busybox + relative applet links)
#   OUTDIR/busybox-oci/        an OCI image layout, tagged "latest"
#   OUTDIR/busybox-oci.tar     the same layout as an OCI archive
#   OUTDIR/busybox-docker.tar  a docker-archive (docker load), tagged busybox:latest
#   OUTDIR/fixtures.env        digests of the above, as shell variables
#
# The output is byte-for-byte reproducible: fixed mtimes, owners, modes and
# file order, gzip without a name or timestamp. A stamp records the busybox
# checksum; when it matches and every output exists, nothing is rebuilt.
# OUTDIR defaults to .fixtures at the repository root.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Bump when the content or layout of the fixtures changes, to force a rebuild.
FORMAT=1
BUSYBOX=${BUSYBOX:-/bin/busybox}
OUT=${1:-$KAPSEL_ROOT/.fixtures}
IMAGE_NAME=docker.io/library/busybox:latest
DOCKER_TAG=busybox:latest

# Settings that would otherwise leak into the bytes we produce.
export LC_ALL=C TZ=UTC
unset GZIP TAR_OPTIONS
umask 022

[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install busybox-static (or set BUSYBOX=path)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the fixtures need busybox-static (apt-get install busybox-static)"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# One builder at a time per OUTDIR (test.sh and the benchmark may race).
exec 9>"$OUT/.lock"
flock 9

bb_sha=$(sha256sum "$BUSYBOX" | cut -d' ' -f1)
stamp="format=$FORMAT busybox=$bb_sha"
outputs=(rootfs/bin/busybox busybox-oci/index.json busybox-oci.tar busybox-docker.tar fixtures.env)

complete=yes
[ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp" ] || complete=no
for f in "${outputs[@]}"; do
    [ -e "$OUT/$f" ] || complete=no
done
if [ "$complete" = yes ]; then
    log "fixtures in $OUT are up to date"
    exit 0
fi

log "building fixtures in $OUT from $BUSYBOX"
work=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Deterministic tar: sorted names, numeric root ownership, mtime 0, GNU format.
dtar() {
    tar --create --format=gnu --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 "$@"
}

# --- root filesystem -------------------------------------------------------
root=$work/rootfs
mkdir -p "$root"/{bin,dev,etc,proc,root,sys,tmp,var,usr/bin}
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"
install -m 0755 "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
# Not needed for the archives (tar overrides mtimes), but keeps the tree itself reproducible.
find "$root" -exec touch -h -d @0 {} +

# --- image layer and config ------------------------------------------------
dtar --file="$work/layer.tar" --directory="$root" .
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 -c "$work/layer.tar" >"$work/layer.tar.gz"

case $(dpkg --print-architecture 2>/dev/null || uname -m) in
    amd64 | x86_64) arch=amd64 ;;
    arm64 | aarch64) arch=arm64 ;;
    ppc64el | ppc64le) arch=ppc64le ;;
    i386 | i686) arch=386 ;;
    *) arch=$(dpkg --print-architecture) ;;
esac
# "BusyBox v1.35.0 (Debian ...) multi-call binary." -> "BusyBox v1.35.0" (no pipe: SIGPIPE + pipefail)
bb_help=$("$BUSYBOX" --help 2>&1 || true)
read -r bb_name bb_release _ <<<"$bb_help"
bb_version="$bb_name $bb_release"

# Image config (OCI image-spec config, which docker reads as is).
printf '%s' \
    '{"architecture":"'"$arch"'","os":"linux","created":"1970-01-01T00:00:00Z",' \
    '"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},' \
    '"rootfs":{"type":"layers","diff_ids":["'"$diff_id"'"]},' \
    '"history":[{"created":"1970-01-01T00:00:00Z","created_by":"kapsel make-fixtures.sh: '"$bb_version"' static"}]}' \
    >"$work/config.json"

# --- OCI image layout --------------------------------------------------------
layout=$work/busybox-oci
mkdir -p "$layout/blobs/sha256"

# add_blob FILE: copy FILE into the layout's blob store; sets DIGEST and SIZE.
add_blob() {
    local hex
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    DIGEST=sha256:$hex
    SIZE=$(stat -c %s "$1")
    cp "$1" "$layout/blobs/sha256/$hex"
}

add_blob "$work/layer.tar.gz"
layer_digest=$DIGEST layer_size=$SIZE
add_blob "$work/config.json"
config_digest=$DIGEST config_size=$SIZE

printf '%s' \
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
    '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'"$config_digest"'","size":'"$config_size"'},' \
    '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"'"$layer_digest"'","size":'"$layer_size"'}]}' \
    >"$work/manifest.json"
add_blob "$work/manifest.json"
manifest_digest=$DIGEST manifest_size=$SIZE

printf '%s' \
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
    '"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'"$manifest_digest"'","size":'"$manifest_size"',' \
    '"platform":{"architecture":"'"$arch"'","os":"linux"},' \
    '"annotations":{"io.containerd.image.name":"'"$IMAGE_NAME"'","org.opencontainers.image.ref.name":"latest"}}]}' \
    >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
find "$layout" -exec touch -h -d @0 {} +

dtar --file="$work/busybox-oci.tar" --directory="$layout" oci-layout index.json blobs

# --- docker-archive (the format `docker save` writes and `docker load` reads) --
dock=$work/docker
config_hex=${config_digest#sha256:}
layer_dir=${diff_id#sha256:}
mkdir -p "$dock/$layer_dir"
cp "$work/config.json" "$dock/$config_hex.json"
cp "$work/layer.tar" "$dock/$layer_dir/layer.tar"
printf '[{"Config":"%s","RepoTags":["%s"],"Layers":["%s"]}]' \
    "$config_hex.json" "$DOCKER_TAG" "$layer_dir/layer.tar" >"$dock/manifest.json"
dtar --file="$work/busybox-docker.tar" --directory="$dock" manifest.json "$config_hex.json" "$layer_dir"

cat >"$work/fixtures.env" <<ENV
# Written by scripts/make-fixtures.sh; digests of the busybox fixtures.
BUSYBOX_SHA256=$bb_sha
IMAGE_NAME=$IMAGE_NAME
DOCKER_TAG=$DOCKER_TAG
MANIFEST_DIGEST=$manifest_digest
CONFIG_DIGEST=$config_digest
LAYER_DIGEST=$layer_digest
DIFF_ID=$diff_id
ENV

# --- swap the new build in; the stamp goes last -----------------------------
rm -f "$OUT/.stamp"
rm -rf "$OUT/rootfs" "$OUT/busybox-oci"
mv "$root" "$OUT/rootfs"
mv "$layout" "$OUT/busybox-oci"
mv "$work/busybox-oci.tar" "$work/busybox-docker.tar" "$work/fixtures.env" "$OUT/"
printf '%s\n' "$stamp" >"$OUT/.stamp"
log "fixtures ready: $IMAGE_NAME manifest $manifest_digest"
