#!/usr/bin/env bash
# images.sh — kapseld's pull against containerd's (`ctr pull`), side by side, and the idle RSS
# of both daemons. As root, after `cargo build --release -p kapsel-manager`.
#
#   bench/images.sh [ROUNDS]      (default 5)
#
# Builds a 4-layer image offline (4 x 32 MiB random + text, gzip -1), serves it from Debian's
# docker-registry on 127.0.0.1:5291 (private config), and pulls it ROUNDS times into a fresh
# kapseld root and a fresh containerd root (CRI disabled), interleaved. Prints medians and
# the ratio. Needs docker-registry, skopeo, containerd, ctr, python3. Everything lives in a
# temporary directory removed at the end.
set -euo pipefail
ROUNDS=${1:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAPSELD=${KAPSELD:-$REPO/target/release/kapseld}
KAPSEL=${KAPSEL:-$REPO/target/release/kapsel}
PORT=5291
W=$(mktemp -d /tmp/kapsel-bench-images.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    rm -rf "$W"
}
trap cleanup EXIT

for p in docker-registry skopeo containerd ctr python3; do
    command -v "$p" >/dev/null || { echo "bench/images.sh: $p is not installed" >&2; exit 1; }
done
[ -x "$KAPSELD" ] || { echo "bench/images.sh: build $KAPSELD first (cargo build --release -p kapsel-manager)" >&2; exit 1; }

# The image.
mkdir -p "$W/img/blobs/sha256"
for i in 0 1 2 3; do
    mkdir -p "$W/t$i"
    head -c 33554432 /dev/urandom >"$W/t$i/f$i"
    seq 1 200000 >"$W/t$i/text$i"
    tar --sort=name --owner=0 --group=0 --mtime=@0 -C "$W/t$i" -cf "$W/l$i.tar" .
    gzip -n -1 -c "$W/l$i.tar" >"$W/l$i.tgz"
done
python3 - "$W" <<'EOF'
import hashlib, json, sys
W = sys.argv[1]; L = W + "/img"
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{L}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
layers, diffs = [], []
for i in range(4):
    diffs.append("sha256:" + hashlib.sha256(open(f"{W}/l{i}.tar", "rb").read()).hexdigest())
    d, s = blob(open(f"{W}/l{i}.tgz", "rb").read())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
cd, cs = blob(json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                          "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
md, ms = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                          "layers": layers}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
          open(L + "/index.json", "w"))
open(L + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF

# The registry.
mkdir -p "$W/reg"
printf 'version: 0.1\nlog: {level: warn}\nstorage:\n  filesystem: {rootdirectory: %s/reg}\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$W" "$PORT" >"$W/reg.yml"
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
IMAGE=127.0.0.1:$PORT/bench/big:1
skopeo copy -q --dest-tls-verify=false "oci:$W/img:latest" "docker://$IMAGE"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

: >"$W/kapsel.times"
: >"$W/ctr.times"
for r in $(seq "$ROUNDS"); do
    # containerd, fresh root.
    C=$W/ctd$r
    mkdir -p "$C"
    printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/sock"\n[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n    path = "%s/opt"\n' \
        "$C" "$C" "$C" "$C" >"$C/config.toml"
    containerd --config "$C/config.toml" >"$C/log" 2>&1 &
    cpid=$!
    pids+=("$cpid")
    for _ in $(seq 100); do ctr -a "$C/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    [ "$r" = 1 ] && sleep 2 && echo "containerd idle RSS: $(rss_kb "$cpid") kB"
    t0=$(now); ctr -a "$C/sock" image pull --plain-http "$IMAGE" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc >>"$W/ctr.times"
    kill "$cpid"; wait "$cpid" 2>/dev/null || true
    # kapseld, fresh root.
    K=$W/k$r
    "$KAPSELD" --root "$K/root" --state "$K/state" --address "$K/sock" >"$K.log" 2>&1 &
    kpid=$!
    pids+=("$kpid")
    for _ in $(seq 100); do [ -S "$K/sock" ] && break; sleep 0.05; done
    [ "$r" = 1 ] && sleep 2 && echo "kapseld idle RSS:    $(rss_kb "$kpid") kB"
    t0=$(now); "$KAPSEL" -H "$K/sock" pull -q "$IMAGE" >/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc >>"$W/kapsel.times"
    kill "$kpid"; wait "$kpid" 2>/dev/null || true
done
k=$(median <"$W/kapsel.times")
c=$(median <"$W/ctr.times")
echo "pull of 4 x 32 MiB gzip layers, fresh root, median of $ROUNDS:"
printf '  kapsel pull  %.2f s\n  ctr pull     %.2f s\n  kapsel is %.2fx containerd\n' "$k" "$c" "$(echo "$c / $k" | bc -l)"
