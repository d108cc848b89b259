#!/usr/bin/env bash
# images.sh — kapseld against containerd and dockerd, side by side in one run: pull from a local
# registry, load of a docker-archive, and each daemon's idle RSS. As root, after
# `cargo build --release -p kapsel-manager`.
#
#   bench/images.sh [ROUNDS]      (default 5)
#
# Builds a 4-layer image offline (4 x 32 MiB random + text, gzip -1), serves it from Debian's
# docker-registry on 127.0.0.1:$PORT (default 5291, private config), and, ROUNDS times,
# interleaved, each into a fresh daemon with a fresh root:
#   - pulls it through `kapsel pull`, `ctr pull` (containerd, CRI disabled) and `docker pull`
#     (dockerd 20.10 with its own data-root, exec-root, pidfile, socket and managed containerd;
#     no bridge, no iptables; it treats 127.0.0.0/8 registries as insecure, so plain HTTP);
#   - loads the docker-archive that `docker save` made of the pulled image through
#     `kapsel load` and `docker load`.
# Prints medians and the ratios kapsel/ctr and kapsel/docker, and idle RSS of the three daemons
# (dockerd alone and with the containerd it manages). Needs docker-registry, skopeo, containerd,
# ctr, dockerd, docker.io's /usr/bin/docker, python3, bc, curl. Everything lives in a temporary
# directory /tmp/benchimg.* that the exit trap unmounts and removes after stopping every daemon.
set -euo pipefail
ROUNDS=${1:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAPSELD=${KAPSELD:-$REPO/target/release/kapseld}
KAPSEL=${KAPSEL:-$REPO/target/release/kapsel}
DOCKER=/usr/bin/docker # docker.io's 20.10 CLI; /usr/local/bin/docker is another one
PORT=${PORT:-5291}
# Short: dockerd's exec-root/containerd/containerd.sock must stay under 108 bytes.
W=$(mktemp -d /tmp/benchimg.XXXXXX)
pids=()
stop_pid() { # PID [SECONDS]: SIGTERM, wait, then SIGKILL.
    local p=$1 n=${2:-20}
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq $((n * 10))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    set +e
    for p in "${pids[@]}"; do stop_pid "$p" 20; done
    # Whatever still runs from our directory (a containerd that dockerd started, say) is ours.
    for p in $(pgrep -f "$W/"); do [ "$p" != $$ ] && kill -9 "$p" 2>/dev/null; done
    sleep 0.5
    awk -v w="$W/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in docker-registry skopeo containerd ctr dockerd "$DOCKER" python3 bc curl; do
    command -v "$p" >/dev/null || { echo "bench/images.sh: $p is not installed" >&2; exit 1; }
done
[ -x "$KAPSELD" ] || { echo "bench/images.sh: build $KAPSELD first (cargo build --release -p kapsel-manager)" >&2; exit 1; }
ss -ltn | grep -q "127.0.0.1:$PORT " && { echo "bench/images.sh: port $PORT is taken; set PORT=" >&2; exit 1; }

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
timed() { # FILE CMD...: append CMD's wall time in seconds to FILE.
    local f=$1 t0 t1
    shift
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$f"
}

# Fresh daemons. Each sets its pid in the named variable and its socket/dir in another.
start_containerd() { # DIR
    local C=$1
    mkdir -p "$C"
    printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/sock"\n[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n    path = "%s/opt"\n' \
        "$C" "$C" "$C" "$C" >"$C/config.toml"
    containerd --config "$C/config.toml" >"$C/log" 2>&1 &
    dpid=$!
    pids+=("$dpid")
    for _ in $(seq 100); do ctr -a "$C/sock" version >/dev/null 2>&1 && return; sleep 0.1; done
    echo "bench/images.sh: containerd in $C did not come up; its log:" >&2; cat "$C/log" >&2; exit 1
}
start_kapseld() { # DIR
    local K=$1
    mkdir -p "$K"
    "$KAPSELD" --root "$K/root" --state "$K/state" --address "$K/sock" >"$K/log" 2>&1 &
    dpid=$!
    pids+=("$dpid")
    for _ in $(seq 100); do [ -S "$K/sock" ] && return; sleep 0.05; done
    echo "bench/images.sh: kapseld in $K did not come up; its log:" >&2; cat "$K/log" >&2; exit 1
}
start_dockerd() { # DIR
    local D=$1
    mkdir -p "$D"
    printf '{"data-root": "%s/data", "exec-root": "%s/exec", "pidfile": "%s/pid", "hosts": ["unix://%s/sock"], "storage-driver": "overlay2", "iptables": false, "ip-forward": false, "ip-masq": false, "bridge": "none"}\n' \
        "$D" "$D" "$D" "$D" >"$D/daemon.json"
    dockerd --config-file "$D/daemon.json" >"$D/log" 2>&1 &
    dpid=$!
    pids+=("$dpid")
    for _ in $(seq 600); do
        [ -S "$D/sock" ] && "$DOCKER" -H "unix://$D/sock" info >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "bench/images.sh: dockerd in $D did not come up; its log:" >&2; cat "$D/log" >&2; exit 1
}
stop_daemon() { stop_pid "$dpid" 30; }
idle_rss() { # NAME [PID_OF_CHILD_TOO]
    sleep 2
    local own kids=0 c
    own=$(rss_kb "$dpid")
    if [ "${2:-}" = children ]; then
        for c in $(pgrep -P "$dpid"); do kids=$((kids + $(rss_kb "$c"))); done
        echo "$1 $own $((own + kids))" >>"$W/rss"
    else
        echo "$1 $own $own" >>"$W/rss"
    fi
}

: >"$W/rss"
for f in kapsel.pull ctr.pull docker.pull kapsel.load docker.load; do : >"$W/$f"; done
ARCHIVE=$W/image-docker.tar
for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    # Pulls, each into a fresh daemon.
    start_containerd "$W/c$r"
    [ "$r" = 1 ] && idle_rss containerd
    timed "$W/ctr.pull" ctr -a "$W/c$r/sock" image pull --plain-http "$IMAGE"
    stop_daemon
    start_kapseld "$W/k$r"
    [ "$r" = 1 ] && idle_rss kapseld
    timed "$W/kapsel.pull" "$KAPSEL" -H "$W/k$r/sock" pull -q "$IMAGE"
    stop_daemon
    start_dockerd "$W/d$r"
    [ "$r" = 1 ] && idle_rss dockerd children
    timed "$W/docker.pull" "$DOCKER" -H "unix://$W/d$r/sock" pull -q "$IMAGE"
    [ "$r" = 1 ] && "$DOCKER" -H "unix://$W/d$r/sock" save -o "$ARCHIVE" "$IMAGE"
    stop_daemon
    rm -rf "$W/c$r" "$W/k$r" "$W/d$r"
    # Loads of the same docker-archive, each into a fresh daemon.
    start_kapseld "$W/kl$r"
    timed "$W/kapsel.load" "$KAPSEL" -H "$W/kl$r/sock" load -q -i "$ARCHIVE"
    stop_daemon
    start_dockerd "$W/dl$r"
    timed "$W/docker.load" "$DOCKER" -H "unix://$W/dl$r/sock" load -q -i "$ARCHIVE"
    stop_daemon
    rm -rf "$W/kl$r" "$W/dl$r"
done

kp=$(median <"$W/kapsel.pull"); cp=$(median <"$W/ctr.pull"); dp=$(median <"$W/docker.pull")
kl=$(median <"$W/kapsel.load"); dl=$(median <"$W/docker.load")
rk=$(awk '$1 == "kapseld" {print $2}' "$W/rss")
rc=$(awk '$1 == "containerd" {print $2}' "$W/rss")
rd=$(awk '$1 == "dockerd" {print $2}' "$W/rss")
rdc=$(awk '$1 == "dockerd" {print $3}' "$W/rss")
ratio() { echo "$1 / $2" | bc -l; }
echo "4 x 32 MiB gzip layers from 127.0.0.1:$PORT, fresh daemon and root each time, median of $ROUNDS:"
printf '  %-34s %9s %14s %14s\n' "" kapsel "containerd" "docker"
printf '  %-34s %8.2fs %13.2fs %13.2fs\n' "pull" "$kp" "$cp" "$dp"
printf '  %-34s %8.2fs %14s %13.2fs\n' "load (docker-archive, $(($(stat -c %s "$ARCHIVE") / 1048576)) MiB)" "$kl" "-" "$dl"
printf '  %-34s %7d kB %11d kB %11d kB\n' "idle RSS (daemon)" "$rk" "$rc" "$rd"
printf '  %-34s %10s %14s %11d kB\n' "idle RSS (dockerd + its containerd)" "" "" "$rdc"
echo "ratios kapsel/other (time or memory; below 1 means kapsel is faster or smaller):"
printf '  pull      kapsel/ctr %.2f   kapsel/docker %.2f\n' "$(ratio "$kp" "$cp")" "$(ratio "$kp" "$dp")"
printf '  load                       kapsel/docker %.2f\n' "$(ratio "$kl" "$dl")"
printf '  idle RSS  kapsel/ctr %.2f   kapsel/docker %.2f (%.2f with its containerd)\n' \
    "$(ratio "$rk" "$rc")" "$(ratio "$rk" "$rd")" "$(ratio "$rk" "$rdc")"
