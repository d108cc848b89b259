#!/bin/sh
# cgroup2-vm-guest.sh — the checks cgroup2-vm-test.sh runs INSIDE the qemu guest (busybox sh,
# pure cgroup v2 at /sys/fs/cgroup, repository shared at $SHARE). Not meant to run on a host.
#
# Env (set by the VM tool): RUNTIMES (guest path of kapsel-runtime), SHARE (/mnt/host).
# Bundles: $SHARE/target/cgroup2-vm/bundles/NAME/config.json, written on the host by
# cgroup2-vm-test.sh; every container's cgroupsPath is /kapsel/c2-NAME. Sections (the file
# $BUNDLES/sections): runtime (these bundles), kapseld (scripts/cgroup2-vm-kapseld.sh, sourced).
# Prints one PASS/FAIL/SKIP/INFO line per check and a closing "cgroup2-vm: N passed, N failed,
# N skipped"; exits non-zero if any check failed.

RT=${RUNTIMES%% *}
BUNDLES=$SHARE/target/cgroup2-vm/bundles
CG=/sys/fs/cgroup
W=/run/c2
mkdir -p "$W"
P=0
F=0
S=0
# Each line ends with the guest's uptime, to see where the time goes.
pass() { P=$((P + 1)); read -r u _ </proc/uptime; echo "PASS $1: $2 [${u}s]"; }
fail() { F=$((F + 1)); read -r u _ </proc/uptime; echo "FAIL $1: $2 [${u}s]"; }
skip() { S=$((S + 1)); read -r u _ </proc/uptime; echo "SKIP $1: $2 [${u}s]"; }
info() { read -r u _ </proc/uptime; echo "INFO $1: $2 [${u}s]"; }
# one: stdin on one line, shortened
one() { tr '\n' ' ' | sed 's/ *$//' | cut -c1-700; }
# rt ARGS...: kapsel-runtime, never hanging the whole run
rt() { timeout 60 "$RT" --root "$W/state" "$@"; }
# (jq takes about a second per start under TCG: plain text tools where they do)
status() { rt state "$1" 2>/dev/null | tr -d ' \n' | sed -n 's/.*"status":"\([^"]*\)".*/\1/p'; }
# wait_line FILE PATTERN: wait up to 20 s for a line matching PATTERN in FILE
wait_line() {
    n=0
    while [ $n -lt 200 ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}
# wait_stopped ID: wait up to 60 s until the container is no longer running
wait_stopped() {
    n=0
    while [ $n -lt 600 ] && [ "$(status "$1")" = running ]; do
        sleep 0.1
        n=$((n + 1))
    done
}
# files DIR FILE...: "FILE=<content>" for each cgroup file, on one line
files() {
    d=$1
    shift
    for f in "$@"; do printf '%s=%s; ' "$f" "$(one <"$d/$f" 2>&1)"; done
}
# cleanup ID: delete the container if its state is still there (each runtime start costs time)
cleanup() { [ ! -e "$W/state/$1" ] || rt delete --force "$1" >/dev/null 2>&1 || true; }
has_controller() { grep -qw "$1" "$CG/cgroup.subtree_control"; }

# ------------------------------------------------------------------ the VM itself
t=$(stat -fc %t "$CG")
v1=$(awk '$3 == "cgroup"' /proc/mounts | wc -l)
if [ "$t" = 63677270 ] && [ "$v1" = 0 ]; then
    pass pure-cgroup2 "$CG is cgroup2 (magic 0x$t), no v1 mounts; root subtree_control=[$(cat "$CG/cgroup.subtree_control")]"
else
    fail pure-cgroup2 "$CG magic 0x$t, $v1 v1 mounts"
fi
[ -x "$RT" ] || { fail runtime "no runtime at $RT"; echo "cgroup2-vm: $P passed, $F failed, $S skipped"; exit 1; }
# Every exec of a binary on the 9p share reads it anew (no page cache): under TCG that cost
# 1-2 s per runtime command, against 0.06 s from the guest's tmpfs. So the freshly built
# runtime is copied there once.
mkdir -p "$W/bin"
cp "$RT" "$W/bin/kapsel-runtime" && RT=$W/bin/kapsel-runtime
[ -f "$BUNDLES/limits/config.json" ] || { fail bundles "no bundles in $BUNDLES"; echo "cgroup2-vm: $P passed, $F failed, $S skipped"; exit 1; }
info runtime "$("$RT" --version 2>&1 | one)"

# The sections to run ($BUNDLES/sections, from cgroup2-vm-test.sh --only): runtime, kapseld
SECTIONS=$(cat "$BUNDLES/sections" 2>/dev/null || echo "runtime kapseld")
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if section runtime; then
# ------------------------------------------------------------------ limits: create/start
# (the limits bundle's process prints its own view of /sys/fs/cgroup, then "ready", then sleeps)
id=c2-limits
D=$CG/kapsel/$id
out=$W/$id.out
if rt create --pid-file "$W/$id.pid" --bundle "$BUNDLES/limits" "$id" >"$out" 2>"$W/$id.err"; then
    pass create "$id created (cgroupsPath /kapsel/$id)"
    pid=$(cat "$W/$id.pid")
    cgp=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
    if [ "$cgp" = "/kapsel/$id" ] && [ -d "$D" ]; then
        pass cgroups-path "init pid $pid is in $cgp; controllers=[$(cat "$D/cgroup.controllers")]"
    else
        fail cgroups-path "init pid $pid is in '$cgp', want /kapsel/$id; $D exists: $([ -d "$D" ] && echo yes || echo no)"
    fi
    if rt start "$id" >>"$W/$id.err" 2>&1 && wait_line "$out" '^ready'; then
        pass start "$id running; in-container /proc/self/cgroup: $(sed -n 's/^self-cgroup=//p' "$out")"
    else
        fail start "$id: state=$(status "$id"); stderr: $(one <"$W/$id.err"); stdout: $(one <"$out")"
    fi
    # check NAME FILE WANT: the value in the guest's cgroup dir and as seen inside the container
    check() {
        host=$(cat "$D/$2" 2>&1)
        inside=$(sed -n "s/^$2=//p" "$out")
        if [ "$host" = "$3" ] && [ "$inside" = "$3" ]; then
            pass "$1" "$2=$host (host side and in the container)"
        else
            fail "$1" "$2: want '$3', host side '$host', in the container '$inside'"
        fi
    }
    check memory-limit memory.max 67108864
    check memory-swap memory.swap.max 33554432
    check memory-reservation memory.low 16777216
    check unified-memory-high memory.high 50331648
    check cpu-shares cpu.weight 20
    check cpu-quota-period cpu.max "50000 100000"
    check pids-limit pids.max 20
    check cpuset-cpus cpuset.cpus 0
    info limits-cgroup "$(files "$D" memory.max memory.swap.max memory.low memory.high cpu.weight cpu.max pids.max cpuset.cpus cpuset.cpus.effective)"

    # update --memory 32m
    if rt update --memory 32m "$id" >"$W/$id.upd" 2>&1; then
        mm=$(cat "$D/memory.max")
        inside=$(rt exec "$id" cat /sys/fs/cgroup/memory.max 2>&1 | one)
        if [ "$mm" = 33554432 ] && [ "$inside" = 33554432 ]; then
            pass update-memory "memory.max=$mm after 'update --memory 32m' (host side; exec in the container reads $inside)"
        else
            fail update-memory "after 'update --memory 32m': memory.max host side '$mm', via exec '$inside' (want 33554432); $(files "$D" memory.swap.max memory.low memory.high)"
        fi
    else
        fail update-memory "'update --memory 32m $id' failed: $(one <"$W/$id.upd"); $(files "$D" memory.max memory.swap.max)"
    fi

    # events --stats
    ev=$(rt events --stats "$id" 2>"$W/$id.ev.err")
    # shellcheck disable=SC2046 # four words: type, usage, limit, pids.current
    set -- $(echo "$ev" | jq -r '[.type, .data.memory.usage.usage // 0, .data.memory.usage.limit // 0, .data.pids.current // 0] | @tsv' 2>/dev/null)
    typ=${1:-} usage=${2:-0} limit=${3:-0} pcur=${4:-0}
    if [ "$typ" = stats ] && [ "$usage" -gt 0 ] && [ "$limit" = 33554432 ] && [ "$pcur" -ge 1 ]; then
        pass events-stats "type=stats memory.usage.usage=$usage memory.usage.limit=$limit pids.current=$pcur"
    else
        fail events-stats "want type stats, memory usage > 0, limit 33554432, pids.current >= 1; got: $(echo "$ev" | one) stderr: $(one <"$W/$id.ev.err"); $(files "$D" memory.current memory.max pids.current)"
    fi

    # pause / resume through cgroup.freeze
    if rt pause "$id" >"$W/$id.pause" 2>&1; then
        st=$(status "$id")
        fz=$(cat "$D/cgroup.freeze")
        ev=$(sed -n 's/^frozen //p' "$D/cgroup.events")
        if [ "$st" = paused ] && [ "$fz" = 1 ] && [ "$ev" = 1 ]; then
            pass pause "status=$st cgroup.freeze=$fz cgroup.events frozen=$ev"
        else
            fail pause "status=$st cgroup.freeze=$fz cgroup.events: $(one <"$D/cgroup.events")"
        fi
    else
        fail pause "'pause $id' failed: $(one <"$W/$id.pause"); $(files "$D" cgroup.freeze cgroup.events)"
    fi
    if rt resume "$id" >"$W/$id.resume" 2>&1; then
        st=$(status "$id")
        fz=$(cat "$D/cgroup.freeze")
        ev=$(sed -n 's/^frozen //p' "$D/cgroup.events")
        if [ "$st" = running ] && [ "$fz" = 0 ] && [ "$ev" = 0 ]; then
            pass resume "status=$st cgroup.freeze=$fz cgroup.events frozen=$ev"
        else
            fail resume "status=$st cgroup.freeze=$fz cgroup.events: $(one <"$D/cgroup.events")"
        fi
    else
        fail resume "'resume $id' failed: $(one <"$W/$id.resume"); $(files "$D" cgroup.freeze cgroup.events)"
    fi

    # delete removes the cgroup
    if rt delete --force "$id" >"$W/$id.del" 2>&1; then
        if [ -d "$D" ]; then
            fail delete-cgroup "'delete --force $id' succeeded but $D is still there: $(files "$D" cgroup.procs cgroup.events)"
        else
            pass delete-cgroup "$D removed; /kapsel remains: $([ -d "$CG/kapsel" ] && echo yes || echo no)"
        fi
    else
        fail delete-cgroup "'delete --force $id' failed: $(one <"$W/$id.del")"
    fi
else
    fail create "'create --bundle $BUNDLES/limits $id' failed: $(one <"$W/$id.err"); requested: $(jq -c .linux.resources "$BUNDLES/limits/config.json")"
fi
cleanup "$id"

# ------------------------------------------------------------------ run (foreground)
id=c2-run
rc=0
rt run --bundle "$BUNDLES/run" "$id" >"$W/$id.out" 2>"$W/$id.err" || rc=$?
mm=$(sed -n 's/^memory.max=//p' "$W/$id.out")
if [ "$rc" = 3 ] && [ "$mm" = 67108864 ] && [ ! -d "$CG/kapsel/$id" ]; then
    pass run "exit code $rc passed through, memory.max=$mm inside, cgroup removed after run"
else
    fail run "rc=$rc (want 3) memory.max inside '$mm' (want 67108864), cgroup left: $([ -d "$CG/kapsel/$id" ] && echo yes || echo no); stdout: $(one <"$W/$id.out") stderr: $(one <"$W/$id.err")"
fi
cleanup "$id"

# ------------------------------------------------------------------ OOM kill (memory 16 MiB)
# (the container's awk doubles a string until the kernel kills it)
id=c2-oom
D=$CG/kapsel/$id
rc=0
rt run --keep --bundle "$BUNDLES/oom" "$id" >"$W/$id.out" 2>"$W/$id.err" || rc=$?
if [ -d "$D" ]; then
    ok=$(sed -n 's/^oom_kill //p' "$D/memory.events")
    if [ "${ok:-0}" -gt 0 ] && [ "$rc" = 137 ]; then
        pass oom-kill "run rc=$rc; memory.events: $(one <"$D/memory.events"); memory.max=$(cat "$D/memory.max")"
    else
        fail oom-kill "run rc=$rc stdout: $(one <"$W/$id.out") stderr: $(one <"$W/$id.err"); $(files "$D" memory.events memory.max memory.swap.max memory.peak)"
    fi
else
    fail oom-kill "'run --keep' rc=$rc but $D does not exist (cannot read memory.events); stdout: $(one <"$W/$id.out") stderr: $(one <"$W/$id.err")"
fi
cleanup "$id"
[ -d "$D" ] && fail oom-delete "$D still there after delete --force"

# ------------------------------------------------------------------ io weight
id=c2-io
D=$CG/kapsel/$id
if has_controller io; then
    if rt create --bundle "$BUNDLES/io" "$id" >"$W/$id.out" 2>"$W/$id.err"; then
        if [ -f "$D/io.bfq.weight" ]; then file=io.bfq.weight want="default 500"; else file=io.weight want="default 4950"; fi
        got=$(head -n 1 "$D/$file" 2>&1)
        if [ "$got" = "$want" ]; then
            pass io-weight "blockIO.weight 500 -> $file '$got'"
        else
            fail io-weight "blockIO.weight 500 (config: $(tr -d ' \n' <"$BUNDLES/io/config.json" | grep -o '"blockIO":{[^}]*}')): $file first line '$got', want '$want'; runtime stderr: $(one <"$W/$id.err")"
            # Diagnosis: the same weight under the non-OCI key "blockIo".
            cleanup "$id"
            if rt create --bundle "$BUNDLES/io-camel" "$id" >/dev/null 2>&1; then
                info io-weight-diagnosis "with the key \"blockIo\" instead of OCI's \"blockIO\": $file first line '$(head -n 1 "$D/$file" 2>&1)'"
            fi
        fi
    else
        fail io-weight "'create --bundle $BUNDLES/io $id' failed: $(one <"$W/$id.err"); io files in /kapsel: $(echo "$CG"/kapsel/io.*)"
    fi
    cleanup "$id"
else
    skip io-weight "io controller not enabled at the root: [$(cat "$CG/cgroup.subtree_control")]"
fi

# ------------------------------------------------------------------ hugetlb
id=c2-hugetlb
D=$CG/kapsel/$id
if ! has_controller hugetlb; then
    skip hugetlb "hugetlb controller not enabled: [$(cat "$CG/cgroup.subtree_control")]"
elif [ ! -d /sys/kernel/mm/hugepages/hugepages-2048kB ]; then
    skip hugetlb "no 2 MB huge pages: $(echo /sys/kernel/mm/hugepages/*)"
else
    if rt create --bundle "$BUNDLES/hugetlb" "$id" >"$W/$id.out" 2>"$W/$id.err"; then
        got=$(cat "$D/hugetlb.2MB.max" 2>&1)
        rsvd=$(cat "$D/hugetlb.2MB.rsvd.max" 2>/dev/null || echo none)
        if [ "$got" = 4194304 ] && { [ "$rsvd" = none ] || [ "$rsvd" = 4194304 ]; }; then
            pass hugetlb "hugetlb.2MB.max=$got hugetlb.2MB.rsvd.max=$rsvd"
        else
            fail hugetlb "want 4194304: hugetlb.2MB.max='$got' hugetlb.2MB.rsvd.max='$rsvd'"
        fi
    else
        fail hugetlb "'create --bundle $BUNDLES/hugetlb $id' failed: $(one <"$W/$id.err")"
    fi
    cleanup "$id"
fi

# ------------------------------------------------------------------ devices (eBPF)
# v2 enforces linux.resources.devices through a BPF_PROG_TYPE_CGROUP_DEVICE program on the
# container's cgroup. Programs are counted without bpftool: the runtime names them
# kapsel_devices, and with bpf_jit_kallsyms the kernel lists every loaded one in /proc/kallsyms
# (the runtime keeps no descriptor: a program lives only while it is attached).
echo 1 >/proc/sys/net/core/bpf_jit_kallsyms 2>/dev/null
progs() { grep -o 'bpf_prog_[0-9a-f]*_kapsel_devices' /proc/kallsyms 2>/dev/null | sed 's/^bpf_prog_//; s/_kapsel_devices$//' | sort | one; }
nprogs() { grep -c 'bpf_prog_[0-9a-f]*_kapsel_devices' /proc/kallsyms 2>/dev/null; }
kallsyms=no
[ "$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null)" = 1 ] && [ "$(cat /proc/sys/net/core/bpf_jit_kallsyms 2>/dev/null)" = 1 ] && kallsyms=yes
# wait_progs N: wait up to 5 s until N programs are loaded (freeing runs from a workqueue)
wait_progs() {
    n=0
    while [ $n -lt 50 ] && [ "$(nprogs)" != "$1" ]; do
        sleep 0.1
        n=$((n + 1))
    done
}
# has FILE LINE: FILE has exactly this line
has() { grep -qxF "$2" "$1"; }

# the default rules: /dev/null and friends work, nodes no rule allows are refused with EPERM
id=c2-dev-default
o=$W/$id.out
rc=0
rt run --bundle "$BUNDLES/dev-default" "$id" >"$o" 2>"$W/$id.err" || rc=$?
if [ "$rc" = 0 ] && has "$o" null-read=ok && has "$o" zero-read=1 && has "$o" "w /dev/null ok" && has "$o" "r /dev/urandom ok"; then
    pass devices-default-allowed "head -c1 /dev/null, /dev/zero, /dev/urandom and writes to /dev/null work: $(one <"$o")"
else
    fail devices-default-allowed "rc=$rc; inside: $(one <"$o"); runtime stderr: $(one <"$W/$id.err")"
fi
# (the guest itself, without a filter, may open the console for writing)
control=$( (exec 3>/dev/console) 2>&1 && echo ok)
if has "$o" "w /dev/kmsg Operation not permitted" && has "$o" "r /dev/kcons Operation not permitted"; then
    pass devices-denied "linux.devices nodes without an allow rule refused: $(grep -E '^[rw] /dev/(kmsg|kcons) ' "$o" | one); the guest opens /dev/console: $control"
else
    fail devices-denied "want EPERM writing /dev/kmsg (c 1:11) and reading /dev/kcons (c 5:1); inside: $(one <"$o"); runtime stderr: $(one <"$W/$id.err")"
fi
# runc's defaults allow mknod of any node ("c *:* m"), never its use
if has "$o" mknod-c5:1=ok && has "$o" "r /dev/kcons2 Operation not permitted"; then
    pass devices-mknod "mknod c 5 1 allowed as runc allows it, opening the node refused: $(grep -E '^(mknod|r /dev/kcons2)' "$o" | one)"
else
    fail devices-mknod "want mknod c 5 1 ok and its open refused with EPERM; inside: $(one <"$o")"
fi
if grep -q 'not enforced' "$W/$id.err"; then
    fail devices-no-warning "the runtime still warns: $(one <"$W/$id.err")"
fi
cleanup "$id"

# explicit allow rules (c 1:11 w, c 5:1 r) open exactly that; then update and delete
id=c2-dev-allow
o=$W/$id.out
D=$CG/kapsel/$id
wait_progs 0 # the earlier containers' programs go once their cgroups are released
before=$(nprogs)
if rt create --bundle "$BUNDLES/dev-allow" "$id" >"$o" 2>"$W/$id.err" && rt start "$id" >>"$W/$id.err" 2>&1 && wait_line "$o" '^ready'; then
    if has "$o" "w /dev/kmsg ok" && has "$o" kmsg-write=ok && dmesg | grep -q kapsel-cgroup2-vm-kmsg-allowed \
        && has "$o" "r /dev/kcons ok" && has "$o" "w /dev/kcons Operation not permitted"; then
        pass devices-allowed-extra "c 1:11 w allowed (the line is in the guest's kernel log), c 5:1 r allowed but not w: $(one <"$o")"
    else
        fail devices-allowed-extra "inside: $(one <"$o"); kernel log has the line: $(dmesg | grep -c kapsel-cgroup2-vm-kmsg-allowed); runtime stderr: $(one <"$W/$id.err")"
    fi
    if [ "$kallsyms" = yes ]; then
        first=$(progs)
        if [ "$before" = 0 ] && [ "$(nprogs)" = 1 ]; then
            pass devices-one-program "exactly one kapsel_devices program loaded after create (tag $first)"
        else
            fail devices-one-program "want 1 program (0 before create), before create $before, now $(nprogs): [$first]"
        fi
    else
        skip devices-one-program "no JIT kallsyms (bpf_jit_enable=$(cat /proc/sys/net/core/bpf_jit_enable 2>&1)): cannot count programs"
    fi
    command -v bpftool >/dev/null && info devices-bpftool "$(bpftool cgroup show "$D" 2>&1 | one)"
    # update -r with device rules: the new program replaces the old one, nothing stacks
    # shellcheck disable=SC2016 # for the container's shell
    if rt update -r "$BUNDLES/dev-allow/update.json" "$id" >"$W/$id.upd" 2>&1; then
        after=$(rt exec "$id" sh -c "$(cat "$BUNDLES/dev-probe.sh"); p w /dev/kmsg; p r /dev/kcons; p w /dev/null" 2>&1 | one)
        second=$(progs)
        if [ "$after" = "w /dev/kmsg Operation not permitted r /dev/kcons Operation not permitted w /dev/null ok" ] && { [ "$kallsyms" = no ] || { [ "$(nprogs)" = 1 ] && [ "$second" != "$first" ]; }; }; then
            pass devices-update "after 'update -r' with deny-all: $after; programs: [$first] -> [$second]"
        else
            fail devices-update "after 'update -r' with deny-all, exec sees: $after; programs before [$first], after [$second] (want exactly one, a new one)"
        fi
    else
        fail devices-update "'update -r $BUNDLES/dev-allow/update.json $id' failed: $(one <"$W/$id.upd")"
    fi
    if rt delete --force "$id" >"$W/$id.del" 2>&1; then
        wait_progs 0
        if [ "$kallsyms" = no ] || [ "$(nprogs)" = 0 ]; then
            pass devices-delete "cgroup removed, no kapsel_devices program left ($(nprogs))"
        else
            fail devices-delete "after delete: $(nprogs) programs still loaded: [$(progs)]; cgroup there: $([ -d "$D" ] && echo yes || echo no)"
        fi
    else
        fail devices-delete "'delete --force $id' failed: $(one <"$W/$id.del")"
    fi
else
    fail devices-allowed-extra "create/start failed: state=$(status "$id"); stderr: $(one <"$W/$id.err"); stdout: $(one <"$o")"
fi
cleanup "$id"

fi # section runtime

# ------------------------------------------------------------------ kapseld, shim, runtime
# through the CLI: a script of its own, sharing these helpers and counters
if section kapseld; then
    # shellcheck source=scripts/cgroup2-vm-kapseld.sh
    . "$SHARE/scripts/cgroup2-vm-kapseld.sh"
fi

left=$(find "$CG/kapsel" -mindepth 1 -type d 2>/dev/null | one)
[ -z "$left" ] || fail leftovers "cgroups left under /kapsel: $left"
echo "cgroup2-vm: $P passed, $F failed, $S skipped"
[ "$F" = 0 ] && [ "$P" -gt 0 ]
