#!/bin/sh
# cgroup2-vm-kapseld.sh — the kapseld checks of the qemu guest: sourced by
# scripts/cgroup2-vm-guest.sh (its pass/fail/skip/info, one, files and $RT, $BUNDLES, $CG, $W)
# after the runtime checks. Not meant to run on a host.
#
# kapseld, kapsel, containerd-shim-kapsel-v2 and kapsel-logger come from the share ($KD_BIN,
# from $BUNDLES/kapseld.env, written by cgroup2-vm-test.sh) and are copied to the guest's tmpfs
# (as $RT was: see cgroup2-vm-guest.sh) to run with kapsel-runtime $RT; kapseld's root, state and socket lie on the guest's /run tmpfs (native snapshotter: the guest
# has no overlay module). The image is the docker-archive busybox fixture ($KD_IMAGE).
# Everything goes through the CLI; the checks read the guest's /sys/fs/cgroup. kapseld's log
# (debug level) is copied to target/cgroup2-vm/kapseld.log on the share at the end.

KD=/run/c2kd
KD_BIN=
KD_IMAGE=
# shellcheck disable=SC1091 # written by cgroup2-vm-test.sh
. "$BUNDLES/kapseld.env"
export KAPSEL_ADDRESS=$KD/kapseld.sock KAPSEL_CONFIG=$KD/client-config.json
mkdir -p "$KD"
# k ARGS...: the CLI, never hanging the whole run
k() { timeout 120 "$KD_BIN/kapsel" "$@"; }
# field NAME FILE: the value of the first `"NAME": value` line of pretty JSON (inspect)
field() { sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$2" | head -n 1; }
# cgroup_of PID: the cgroup (v2 path) of a guest process
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }
kd_log() { tail -n 5 "$KD/kapseld.log" | one; }

kd_pid=
kd_start() {
    # kapseld finds the shim and kapsel-logger next to itself
    mkdir -p "$KD/bin"
    if ! out=$(cp "$KD_BIN/kapseld" "$KD_BIN/kapsel" "$KD_BIN/containerd-shim-kapsel-v2" \
        "$KD_BIN/kapsel-logger" "$KD/bin/" 2>&1); then
        fail kapseld-start "copying the binaries from $KD_BIN: $(echo "$out" | one)"
        return 1
    fi
    KD_BIN=$KD/bin
    "$KD_BIN/kapseld" --root "$KD/root" --state "$KD/state" --address "$KAPSEL_ADDRESS" \
        --snapshotter native --runtime "$RT" --log-level debug >"$KD/kapseld.log" 2>&1 &
    kd_pid=$!
    n=0
    while [ $n -lt 600 ] && [ ! -S "$KAPSEL_ADDRESS" ] && kill -0 "$kd_pid" 2>/dev/null; do
        sleep 0.1
        n=$((n + 1))
    done
    if v=$(k version 2>&1); then
        pass kapseld-start "kapseld (pid $kd_pid) answers on $KAPSEL_ADDRESS; $(echo "$v" | grep -m1 'Kernel Version' | one)"
    else
        fail kapseld-start "kapseld (pid $kd_pid) does not answer: $(echo "$v" | one); log: $(kd_log)"
        return 1
    fi
}

# kd_cgcheck NAME FILE WANT: the container's cgroup file ($D) holds WANT
kd_cgcheck() {
    got=$(cat "$D/$2" 2>&1)
    if [ "$got" = "$3" ]; then
        pass "$1" "$2=$got"
    else
        fail "$1" "$2: want '$3', got '$got' in $D"
    fi
}

kd_checks() {
    kd_start || return 0

    # ---- image
    if out=$(k load -q -i "$KD_IMAGE" 2>&1) && echo "$out" | grep -q 'busybox:latest'; then
        pass kd-load "kapsel load -i $(basename "$KD_IMAGE"): $(echo "$out" | one)"
    else
        fail kd-load "kapsel load -i $KD_IMAGE: $(echo "$out" | one); log: $(kd_log)"
        return 0
    fi

    # ---- a container with every limit flag
    name=c2k-lim
    if ! id=$(k run -d --name "$name" -m 64m --memory-swap 96m --cpus 0.5 --cpu-shares 512 \
        --pids-limit 40 --cpuset-cpus 0 busybox sleep 1000 2>"$W/$name.err"); then
        fail kd-run-limits "kapsel run -d ... busybox sleep 1000: $(one <"$W/$name.err"); log: $(kd_log)"
        return 0
    fi
    k inspect "$name" >"$W/$name.json" 2>&1
    pid=$(field Pid "$W/$name.json")
    cgp=$(cgroup_of "${pid:-0}")
    D=$CG$cgp
    if [ "$(field Status "$W/$name.json")" = running ] && [ "$cgp" = "/kapsel/$id" ] && [ -d "$D" ]; then
        pass kd-run-limits "run -d -m 64m --memory-swap 96m --cpus 0.5 --cpu-shares 512 --pids-limit 40 --cpuset-cpus 0: State.Pid $pid in $cgp"
    else
        fail kd-run-limits "State.Status '$(field Status "$W/$name.json")' State.Pid '$pid', its cgroup '$cgp' (want /kapsel/$id)"
        return 0
    fi
    kd_cgcheck kd-memory-max memory.max 67108864
    # --memory-swap is memory + swap; v2's memory.swap.max is the swap alone
    kd_cgcheck kd-memory-swap-max memory.swap.max 33554432
    kd_cgcheck kd-cpu-max cpu.max "50000 100000"
    # shares 512 -> weight 1 + (512 - 2) * 9999 / 262142, runc's conversion
    kd_cgcheck kd-cpu-weight cpu.weight 20
    kd_cgcheck kd-pids-max pids.max 40
    kd_cgcheck kd-cpuset-cpus cpuset.cpus 0

    # ---- stats (the shim's v2 metrics)
    st=$(k stats --no-stream --format json "$name" 2>&1)
    mem=$(echo "$st" | sed -n 's/.*"MemUsage":"\([^"]*\)".*/\1/p')
    if echo "$mem" | grep -Eq '^[0-9.]*[1-9][0-9.]*(B|KiB|MiB) / 64MiB$'; then
        pass kd-stats "stats --no-stream: MemUsage '$mem' (memory.current $(cat "$D/memory.current")), PIDs $(echo "$st" | sed -n 's/.*"PIDs":"\([^"]*\)".*/\1/p')"
    else
        fail kd-stats "want a non-zero usage / 64MiB: $(echo "$st" | one); $(files "$D" memory.current memory.max)"
    fi

    # ---- top
    top=$(k top "$name" 2>&1)
    if echo "$top" | grep -q "sleep 1000" && echo "$top" | grep -qw "$pid"; then
        pass kd-top "$(echo "$top" | one)"
    else
        fail kd-top "want a line with pid $pid and 'sleep 1000': $(echo "$top" | one)"
    fi

    # ---- update (v1-style memory + swap and --cpus, translated to v2 files)
    if out=$(k update -m 128m --memory-swap 192m --cpus 1 "$name" 2>&1); then
        mm=$(cat "$D/memory.max") sm=$(cat "$D/memory.swap.max") cm=$(cat "$D/cpu.max")
        if [ "$mm" = 134217728 ] && [ "$sm" = 67108864 ] && [ "$cm" = "100000 100000" ]; then
            pass kd-update "update -m 128m --memory-swap 192m --cpus 1: memory.max=$mm memory.swap.max=$sm cpu.max=$cm"
        else
            fail kd-update "after update -m 128m --memory-swap 192m --cpus 1: memory.max=$mm (want 134217728) memory.swap.max=$sm (want 67108864) cpu.max=$cm (want '100000 100000')"
        fi
    else
        fail kd-update "kapsel update -m 128m --memory-swap 192m --cpus 1: $(echo "$out" | one)"
    fi

    # memory alone: above memory+swap (192m) refused as Docker refuses it; below, swap.max
    # is recomputed from the 192m kept (v2 has no memory+swap file to keep it)
    if out=$(k update -m 256m "$name" 2>&1); then
        fail kd-update-memory-alone "update -m 256m over --memory-swap 192m was accepted: $(files "$D" memory.max memory.swap.max)"
    elif ! out2=$(k update -m 100m "$name" 2>&1); then
        fail kd-update-memory-alone "update -m 100m (under memory+swap 192m) failed: $(echo "$out2" | one)"
    else
        mm=$(cat "$D/memory.max") sm=$(cat "$D/memory.swap.max")
        if [ "$mm" = 104857600 ] && [ "$sm" = 96468992 ]; then
            pass kd-update-memory-alone "-m 256m refused ($(echo "$out" | one)); -m 100m: memory.max=$mm memory.swap.max=$sm (192m - 100m)"
        else
            fail kd-update-memory-alone "after update -m 100m: memory.max=$mm (want 104857600) memory.swap.max=$sm (want 96468992, 192m - 100m)"
        fi
    fi

    # ---- pause / unpause: cgroup.freeze, and ps
    if out=$(k pause "$name" 2>&1); then
        fz=$(cat "$D/cgroup.freeze") ev=$(sed -n 's/^frozen //p' "$D/cgroup.events")
        ps=$(k ps --filter "name=$name" 2>&1 | tail -n 1)
        if [ "$fz" = 1 ] && [ "$ev" = 1 ] && echo "$ps" | grep -q '(Paused)'; then
            pass kd-pause "cgroup.freeze=$fz cgroup.events frozen=$ev; ps: $(echo "$ps" | one)"
        else
            fail kd-pause "cgroup.freeze=$fz cgroup.events frozen=$ev (want 1 1); ps: $(echo "$ps" | one)"
        fi
    else
        fail kd-pause "kapsel pause: $(echo "$out" | one)"
    fi
    if out=$(k unpause "$name" 2>&1); then
        fz=$(cat "$D/cgroup.freeze") ev=$(sed -n 's/^frozen //p' "$D/cgroup.events")
        ps=$(k ps --filter "name=$name" 2>&1 | tail -n 1)
        if [ "$fz" = 0 ] && [ "$ev" = 0 ] && echo "$ps" | grep -q ' Up ' && ! echo "$ps" | grep -q Paused; then
            pass kd-unpause "cgroup.freeze=$fz cgroup.events frozen=$ev; ps: $(echo "$ps" | one)"
        else
            fail kd-unpause "cgroup.freeze=$fz cgroup.events frozen=$ev (want 0 0); ps: $(echo "$ps" | one)"
        fi
    else
        fail kd-unpause "kapsel unpause: $(echo "$out" | one)"
    fi

    # ---- pids.max enforced: 60 background sleeps under pids.max 40 (they stay until rm -f)
    # shellcheck disable=SC2016 # for the container's shell
    out=$(k exec "$name" sh -c 'n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60; do sleep 1000 >/dev/null 2>&1 </dev/null & n=$((n + 1)); done; echo spawned=$n; cat /sys/fs/cgroup/pids.current' 2>&1)
    pmax=$(sed -n 's/^max //p' "$D/pids.events") pcur=$(cat "$D/pids.current")
    if echo "$out" | grep -q "can't fork" && [ "${pmax:-0}" -ge 1 ] && [ "$pcur" -le 40 ]; then
        pass kd-pids-enforced "fork beyond pids.max 40 refused: pids.current=$pcur pids.events max=$pmax; $(echo "$out" | grep -m1 "can't fork" | one)"
    else
        fail kd-pids-enforced "want \"can't fork\", pids.events max >= 1, pids.current <= 40: exec said $(echo "$out" | one); $(files "$D" pids.current pids.max pids.events)"
    fi

    # ---- rm -f: the container's cgroup goes
    if out=$(k rm -f "$name" 2>&1); then
        if [ -d "$D" ]; then
            fail kd-rm-cgroup "rm -f succeeded but $D is still there: $(files "$D" cgroup.procs cgroup.events)"
        else
            pass kd-rm-cgroup "rm -f $name (with ~40 processes): $D removed"
        fi
    else
        fail kd-rm-cgroup "kapsel rm -f $name: $(echo "$out" | one)"
    fi

    # ---- the defaults: no memory limit, shares 1024 (weight 39), in a foreground run --rm
    name=c2k-default
    rc=0
    # shellcheck disable=SC2016 # for the container's shell
    out=$(k run --rm --name "$name" busybox sh -c 'cd /sys/fs/cgroup; echo "$(cat /proc/self/cgroup) memory.max=$(cat memory.max) memory.swap.max=$(cat memory.swap.max) cpu.weight=$(cat cpu.weight) cpu.max=$(cat cpu.max) pids.max=$(cat pids.max)"' 2>&1) || rc=$?
    want="0::/ memory.max=max memory.swap.max=max cpu.weight=39 cpu.max=max 100000 pids.max=max"
    if [ "$rc" = 0 ] && [ "$out" = "$want" ]; then
        pass kd-defaults "run --rm without flags, inside its cgroup namespace: $out"
    else
        fail kd-defaults "rc=$rc; want '$want', got: $(echo "$out" | one)"
    fi

    # ---- OOM kill: exit 137 and State.OOMKilled
    name=c2k-oom
    rc=0
    k run --name "$name" -m 16m busybox awk 'BEGIN { s = "0123456789abcdef"; for (;;) s = s s }' \
        >"$W/$name.out" 2>&1 || rc=$?
    k inspect "$name" >"$W/$name.json" 2>&1
    oom=$(field OOMKilled "$W/$name.json") code=$(field ExitCode "$W/$name.json")
    if [ "$rc" = 137 ] && [ "$code" = 137 ] && [ "$oom" = true ]; then
        pass kd-oom "run -m 16m (awk doubling a string): exit $rc, State.ExitCode $code, State.OOMKilled $oom"
    else
        fail kd-oom "want exit 137, ExitCode 137, OOMKilled true: run rc=$rc ExitCode '$code' OOMKilled '$oom'; output: $(one <"$W/$name.out")"
    fi
    k rm -f "$name" >/dev/null 2>&1
}

kd_stop() {
    [ -n "$kd_pid" ] || return 0
    kill -TERM "$kd_pid" 2>/dev/null
    n=0
    while [ $n -lt 200 ] && kill -0 "$kd_pid" 2>/dev/null; do
        sleep 0.1
        n=$((n + 1))
    done
    if kill -0 "$kd_pid" 2>/dev/null; then
        fail kd-stop "kapseld still runs 20 s after SIGTERM; log: $(kd_log)"
        kill -KILL "$kd_pid" 2>/dev/null
    fi
    rc=0
    wait "$kd_pid" || rc=$?
    left=$(find "$CG/kapsel" -mindepth 1 -type d 2>/dev/null | one)
    shims=$(pidof containerd-shim-kapsel-v2)
    mounts=$(grep -c " $KD/" /proc/mounts)
    if [ "$rc" = 0 ] && [ -z "$left" ] && [ -z "$shims" ] && [ "$mounts" = 0 ]; then
        pass kd-stop "kapseld exited 0 on SIGTERM; no cgroup under /kapsel, no shim, no mount under $KD left"
    else
        fail kd-stop "kapseld exit $rc; cgroups left: [$left]; shims: [$shims]; mounts under $KD: $mounts; log: $(kd_log)"
    fi
}

kd_checks
kd_stop
cp "$KD/kapseld.log" "$BUNDLES/../kapseld.log" 2>/dev/null
