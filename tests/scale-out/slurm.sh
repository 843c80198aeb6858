#!/usr/bin/env bash
# docs/slurm-job.sh, as written, under a real Slurm: a throwaway single-node cluster (munged,
# slurmctld, slurmd from Debian's slurm-wlm and munge, started here and stopped at the end, even
# on failure), a 4-task array over a generated folder with two bad files, two tasks stopped
# mid-run (one by scancel, one by SIGKILL of its shmpipe) and resubmitted as the doc says. Checks:
# the union of the outputs equals one unsharded `shmpipe run` byte for byte, 4 manifests, the
# failures add up, no temporary file and no block are left.
#
# Needs root (to install slurm-wlm, munge and jq if missing, and to run slurmd). Where Slurm
# cannot run, it says so and fails: ./test.sh skips it only when SHMPIPE_SKIP_SLURM_TEST=1 says
# to. SHMPIPE_BIN picks the binary, which must have the test hooks (default: the debug build
# that `cargo test` leaves in target/debug); KEEP=1 keeps the work folder and the daemons' logs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SHMPIPE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/shmpipe}
shards=4
ops=grayscale,blur:2 # what docs/slurm-job.sh runs

say() { echo "slurm.sh: $*"; }
fail() {
    say "FAIL: $*"
    exit 1
}
# A machine where Slurm cannot run: said apart from a failure of shmpipe, but never a pass.
cannot_run() { fail "cannot run Slurm here: $*"; }

[ -x "$bin" ] || fail "no shmpipe binary at $bin (run cargo test or cargo build first, or set SHMPIPE_BIN)"
[ "$(id -u)" = 0 ] || cannot_run "slurmd needs root (this is uid $(id -u))"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v jq >/dev/null; then
    say "installing slurm-wlm, munge and jq"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge jq >/dev/null; } ||
        cannot_run "apt-get install slurm-wlm munge jq failed"
fi

work=$(mktemp -d /tmp/shmpipe-slurm.XXXXXX)
chmod 755 "$work" # munged wants its socket's folders searchable by all
pids=()
cleanup() {
    local status=$?
    set +e
    if [ -n "${SLURM_CONF:-}" ] && [ ${#pids[@]} -eq 3 ]; then
        scancel --user="$(id -un)" 2>/dev/null
        for _ in $(seq 100); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # The daemons, by the PIDs they were started with, newest first.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null
        wait "${pids[i]}" 2>/dev/null
    done
    if [ "$status" != 0 ]; then
        for log in "$work"/daemons/*.log "$work"/logs/*; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 20 "$log"; }
        done
    fi
    if [ "${KEEP:-}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The folder: 28 good images, one truncated JPEG, one PNG name on text. Shards 3 and 2 (by
# fnv1a64 of the paths) each hold one of the two smallest images, which a worker claims last
# (largest first), and are stopped while they hold it.
photos=$work/photos
"$bin" gen "$photos/a" --count 20 --size 96x64 >/dev/null
"$bin" gen "$photos/b" --count 6 --size 64x48 --format png --seed 2 >/dev/null
"$bin" gen "$work/stall" --count 2 --size 32x24 --seed 3 >/dev/null
mkdir "$photos/zz"
mv "$work/stall/img000000.jpg" "$photos/zz/a-stall.jpg"
mv "$work/stall/img000001.jpg" "$photos/zz/b-stall.jpg"
head -c 600 "$photos/a/img000003.jpg" >"$photos/b/cut.jpg"
echo "not a picture" >"$photos/notes.png"

# --- The reference: one unsharded run.
whole=$work/whole
code=0
"$bin" run "$photos" -o "$whole" --ops "$ops" -j 2 --quiet --json >"$work/whole.json" || code=$?
[ "$code" = 1 ] || fail "the unsharded run exited $code, expected 1 (two bad files)"
read -r whole_ok whole_failed < <(jq -r '"\(.images_ok) \(.images_failed)"' "$work/whole.json")
[ "$whole_ok" = 28 ] && [ "$whole_failed" = 2 ] ||
    fail "the unsharded run did $whole_ok ok and $whole_failed failed, expected 28 and 2"

# --- A single-node Slurm of our own.
mkdir -p "$work/daemons/state" "$work/daemons/spool" "$work/out" "$work/logs" "$work/bin"
ln -s "$bin" "$work/bin/shmpipe"
host=$(hostname -s)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
d=$work/daemons
dd if=/dev/urandom of="$d/munge.key" bs=1024 count=1 status=none
chmod 600 "$d/munge.key"
cat >"$d/slurm.conf" <<EOF
ClusterName=shmpipetest
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge.sock
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmdSpoolDir=$d/spool
StateSaveLocation=$d/state
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
NodeName=$host CPUs=$(nproc) RealMemory=2048 State=UNKNOWN
# Tasks share cores, so all four run at once whatever this machine's core count.
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:$shards
EOF
export SLURM_CONF=$d/slurm.conf
munged -F --key-file="$d/munge.key" --socket="$d/munge.sock" --pid-file="$d/munged.pid" \
    --log-file="$d/munged.log" --seed-file="$d/munged.seed" >>"$d/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$d/munge.sock" ] && break; sleep 0.1; done
[ -S "$d/munge.sock" ] || cannot_run "munged did not start (see $d/munged.log)"
slurmctld -D -f "$d/slurm.conf" >>"$d/slurmctld.log" 2>&1 &
pids+=($!)
slurmd -D -f "$d/slurm.conf" -N "$host" >>"$d/slurmd.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break
    sleep 0.2
done
[ "$(sinfo -h -o %T 2>/dev/null)" = idle ] ||
    cannot_run "slurmd did not start: node state '$(sinfo -h -o %T 2>&1)' (logs in $d)"
say "Slurm $(sinfo -V | cut -d' ' -f2) up: node $host, $(nproc) CPUs"

# Submits the documented script with only paths and counts given; prints the job ID.
submit() {
    local array=$1
    shift
    sbatch --parsable --array="$array" --cpus-per-task=1 --mem=256M \
        --chdir="$work" --output="$work/logs/slurm-%A_%a.out" \
        --export="ALL,PATH=$work/bin:$PATH,PHOTOS=$photos,OUT=$work/out,LOGS=$work/logs,SHARDS=$shards$*" \
        "$repo/docs/slurm-job.sh"
}
# Waits (at most a minute: a guard against a hang, not a measure) until COMMAND succeeds.
wait_until() {
    local what=$1
    shift
    for _ in $(seq 300); do
        "$@" && return 0
        sleep 0.2
    done
    fail "timed out waiting for $what"
}
array_done() { [ -z "$(squeue -h -j "$1" 2>/dev/null)" ]; }
# STATE EXITCODE of array task $1_$2, from the controller (no accounting database here).
task_state() {
    scontrol show job "$1_$2" | tr ' ' '\n' | grep -E '^(JobState|ExitCode)=' | cut -d= -f2 | paste -sd' '
}
outputs() { find "$work/out" -type f ! -name '.shmpipe-shard-*' | wc -l; }
manifests() { find "$work/out" -name ".shmpipe-shard-*-of-$shards.json" | wc -l; }
# The PID of the `shmpipe run` of task $2 of job $1 on this cluster (its coordinator), from /proc.
coordinator_of() {
    local p env
    for p in $(pgrep -x shmpipe); do
        tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | sed -n 2p | grep -qx run || continue
        env=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null) || continue
        if grep -qx "SLURM_CONF=$SLURM_CONF" <<<"$env" &&
            grep -qx "SLURM_ARRAY_JOB_ID=$1" <<<"$env" &&
            grep -qx "SLURM_ARRAY_TASK_ID=$2" <<<"$env"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# --- First submission: shards 3 and 2 stall on their last image, the others run to their end.
job=$(submit "0-$((shards - 1))" ",SHMPIPE_TEST_STALL=-stall.jpg:600000")
say "submitted job $job (array 0-$((shards - 1)))"
at_stalls() { [ "$(manifests)" = 2 ] && [ "$(outputs)" = $((whole_ok - 2)) ]; }
wait_until "shards 0 and 1 to finish and 2 and 3 to reach their stalled image" at_stalls
for k in 2 3; do
    [ "$(task_state "$job" "$k")" = "RUNNING 0:0" ] || fail "task $k is $(task_state "$job" "$k"), expected RUNNING"
done
victim_term=$(coordinator_of "$job" 3) || fail "no shmpipe run of task 3 found"
victim_kill=$(coordinator_of "$job" 2) || fail "no shmpipe run of task 2 found"
scancel "${job}_3"
kill -KILL "$victim_kill"
wait_until "job $job to end" array_done "$job"
for k in 0 1; do
    failed=$(jq .images_failed "$work/out/.shmpipe-shard-$k-of-$shards.json")
    want="COMPLETED 0:0"
    [ "$failed" = 0 ] || want="FAILED 1:0" # exit 1: some images failed
    [ "$(task_state "$job" "$k")" = "$want" ] || fail "task $k is $(task_state "$job" "$k"), expected $want"
done
[ "$(task_state "$job" 3)" = "CANCELLED 0:15" ] || fail "task 3 is $(task_state "$job" 3), expected CANCELLED 0:15"
case $(task_state "$job" 2) in FAILED*) ;; *) fail "task 2 is $(task_state "$job" 2), expected FAILED" ;; esac
[ "$(manifests)" = 2 ] || fail "$(manifests) manifests after the stopped tasks, expected 2"
jq -e '.stopped_by_signal == "SIGTERM"' "$work/logs/shard-3.json" >/dev/null ||
    fail "task 3's shmpipe did not report a stop by SIGTERM: $(cat "$work/logs/shard-3.json")"
say "tasks 0 and 1 finished, 3 cancelled by scancel, 2's shmpipe (pid $victim_kill) killed"

# --- Resubmission of the missing indices, as the doc says.
again=$(submit 2,3)
say "resubmitted 2,3 as job $again"
wait_until "job $again to end" array_done "$again"
for k in 2 3; do
    log=$work/logs/shard-$k.json
    manifest=$work/out/.shmpipe-shard-$k-of-$shards.json
    [ -f "$manifest" ] || fail "no manifest for shard $k after its resubmission: $(cat "$log")"
    # Only the image it was stopped on was missing (its bad files, if any, fail again).
    jq -e '.images_ok == 1 and .shard.index == '"$k"' and .shard.count == '"$shards"' and
        .files_existing == .shard_files - 1 - .images_failed' "$log" >/dev/null ||
        fail "shard $k's retry did more or less than what was missing: $(cat "$log")"
done

# --- The whole: outputs equal one run's byte for byte, every manifest, the failures add up.
[ "$(manifests)" = "$shards" ] || fail "$(manifests) manifests, expected $shards"
diff -r --exclude=".shmpipe-shard-*-of-$shards.json" "$whole" "$work/out" ||
    fail "the shards' outputs differ from one unsharded run"
failed=$(jq -s 'map(.images_failed) | add' "$work/out"/.shmpipe-shard-*-of-$shards.json)
[ "$failed" = "$whole_failed" ] || fail "the manifests list $failed failures, the unsharded run $whole_failed"
jq -r '.failures[].path' "$work/out"/.shmpipe-shard-*-of-$shards.json | sort >"$work/failed-shards"
jq -r '.failures[].path' "$work/whole.json" | sort >"$work/failed-whole"
diff "$work/failed-whole" "$work/failed-shards" || fail "the failures listed differ"
temps=$(find "$work/out" -name '*.shmpipe-tmp-*' -o -name '*.tmp-*')
[ -z "$temps" ] || fail "temporary files left: $temps"
for p in "$victim_term" "$victim_kill"; do
    left=$(find /dev/shm -maxdepth 1 -name "shmpipe-$p-*")
    [ -z "$left" ] || fail "block of the stopped run $p left in /dev/shm: $left"
done
for p in $(jq -r .block "$work"/logs/shard-*.json); do
    [ ! -e "/dev/shm/$p" ] || fail "block $p left in /dev/shm"
done
say "ok: $shards shards, $whole_ok outputs equal to one run's, $failed failures, nothing left"
