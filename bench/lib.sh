# Shared by bench/run and flamegraphs/make (sourced, not run): tools, a temp folder,
# three volumes + the master + the reference nginx on free loopback ports, and a
# cleanup that stops, by PID, everything started here, however the script exits.
#
# Needs: $root (repo root), $here (bench/). Sets: $tmp, $PY, $nginx, $mkv, $commit, $P1 $P2
# $P3 $PM $PR, $VOLS, $MASTER, $REF, $master_pid, $vol_pids, $ref_pid.

THREADS=${THREADS:-2}         # mkv -threads, and the reference nginx's worker_processes
VOL_WORKERS=${VOL_WORKERS:-2} # nginx workers per volume
KEEP=${KEEP:-0}               # 1: keep the temp folder (logs, raw outputs) for a look

PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
export BENCH_LUA=$here/wrk

log() { printf '%s %s: %s\n' "$(date +%T)" "${LOG_NAME:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

apt_install() {
  [[ $EUID -eq 0 ]] || die "missing $*; run: sudo apt-get install -y $*"
  log "installing $* with apt"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >&2 \
    || die "could not install $*"
}

need_tools() {
  command -v wrk >/dev/null || apt_install wrk
  command -v curl >/dev/null || apt_install curl
  nginx=$(PATH="$PATH:/usr/sbin" command -v nginx || true)
  [[ -n $nginx ]] || { apt_install nginx; nginx=/usr/sbin/nginx; }
}

# builds, then runs a private copy: a rebuild in the shared target/ while this runs (a
# master restart, perf reading symbols afterwards) must not swap the binary under us
build_mkv() {
  [[ -n $tmp ]] || die "make_tmp before build_mkv"
  local target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$root/$target
  log "building: cargo build --release"
  (cd "$root" && cargo build --release --quiet) || die "release build failed"
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -n $(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] \
    && commit="$commit (+ uncommitted changes in src/)"
  cp "$target/release/mkv" "$tmp/mkv"
  mkv=$tmp/mkv
}

# ---- processes, all stopped by PID on exit --------------------------------------------
pids=()
tmp=
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $tmp ]]; then
    if [[ $KEEP == 1 ]]; then log "kept $tmp"; else rm -rf -- "$tmp"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/mkv-bench.XXXXXX")
  mkdir -p "$tmp/out"
}

forget() { # drop a stopped pid from the list
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}
stop() { # stop one process started here, by pid, and reap it
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget "$1"
}
wait_http() { # port pid: until something answers HTTP on the port, while pid lives
  for _ in $(seq 200); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

free_ports() { # N: N free loopback ports
  "$PY" -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

pick_ports() {
  read -r P1 P2 P3 PM PR < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
  VOLS=127.0.0.1:$P1,127.0.0.1:$P2,127.0.0.1:$P3
  MASTER=127.0.0.1:$PM
  REF=127.0.0.1:$PR
}

vol_pids=()
start_volumes() {
  local i port
  for i in 1 2 3; do
    port=P$i
    port=${!port}
    PORT=$port WORKERS=$VOL_WORKERS "$root/bin/volume" "$tmp/v$i" >"$tmp/v$i.log" 2>&1 &
    pids+=($!)
    vol_pids+=($!)
    wait_http "$port" $! || die "volume $i did not start: $(tail -3 "$tmp/v$i.log")"
  done
}

master_pid=
master_starts=0
# start_master: the master on $PM over $tmp/db, with $MASTER_ARGS; its pid in $master_pid
start_master() {
  # shellcheck disable=SC2086 # MASTER_ARGS is a list of flags
  start_mkv "$PM" "$tmp/db" ${MASTER_ARGS:-}
  master_pid=$started_pid
}
# start_mkv PORT DB [FLAGS...]: a master on the volumes (another one, for scenarios that
# compare two); its pid in $started_pid, its log in $tmp/master.N.log
start_mkv() {
  local port=$1 db=$2
  shift 2
  master_starts=$((master_starts + 1))
  local mlog=$tmp/master.$master_starts.log
  "$mkv" server -port "$port" -db "$db" -volumes "$VOLS" -threads "$THREADS" "$@" >"$mlog" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 200); do
    grep -q "listening on" "$mlog" && wait_http "$port" "$started_pid" && return 0
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.05
  done
  die "master did not start: $(tail -3 "$mlog")"
}

start_reference() {
  mkdir -p "$tmp/ref"
  sed -e "s|@DIR@|$tmp/ref|g" -e "s|@WORKERS@|$THREADS|" -e "s|@PORT@|$PR|" -e "s|@VOLPORT@|$P1|" \
    "$here/nginx-302.conf" >"$tmp/ref/nginx.conf"
  "$nginx" -p "$tmp/ref/" -c "$tmp/ref/nginx.conf" -e "$tmp/ref/error.log" >"$tmp/ref.log" 2>&1 &
  pids+=($!)
  ref_pid=$!
  wait_http "$PR" $! || die "reference nginx did not start: $(tail -3 "$tmp/ref.log" "$tmp/ref/error.log")"
}

# load_keys N PREFIX: PUT PREFIX0…PREFIX{N-1} through the master, and check they list
load_keys() {
  local n=$1 prefix=$2 listed code
  log "loading $n keys ${prefix}0… through the master"
  load=$("$PY" "$here/loadgen.py" load --master "$MASTER" --prefix "$prefix" --keys "$n") \
    || die "loading keys failed: $load"
  log "  loaded: $load"
  listed=$(curl -sS "http://$MASTER$prefix?list&limit=0" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["keys"]))')
  [[ $listed -eq $n ]] || die "the master lists $listed keys under $prefix, expected $n"
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$MASTER$prefix$((n - 1))")
  [[ $code == 302 ]] || die "GET of a loaded key answered $code, not 302"
  loaded_listed=$listed
}

# run_wrk OUTFILE DURATION_S URL SCRIPT [wrk options...]; env passes through to the script
run_wrk() {
  local out=$1 d=$2 url=$3 script=$4
  shift 4
  wrk "$@" -d"${d}s" --timeout 5s -s "$here/wrk/$script" "$url" >"$out" 2>&1 || die "wrk failed: $(tail -3 "$out")"
  grep -q '^WRKJSON ' "$out" || die "no result from wrk in $out"
}
wrk_json() { grep -m1 '^WRKJSON ' "$1" | cut -d' ' -f2-; }

# ---- server CPU: user + system time from /proc ------------------------------------------
# Far stabler than req/s on shared cores: CPU per request barely moves when another job
# takes the cores, the rate does. An nginx counts with its workers (its descendants).
CLK_TCK=$(getconf CLK_TCK)
tree_pids() { # PID...: each and its descendants
  local p
  for p in "$@"; do
    [[ -n $p ]] || continue
    echo "$p"
    # shellcheck disable=SC2046 # one child pid per word
    tree_pids $(cat /proc/"$p"/task/*/children 2>/dev/null)
  done
}
cpu_ticks() { # PID...: clock ticks of utime + stime (fields 14, 15 of /proc/PID/stat) of them and their descendants
  local p stats=()
  for p in $(tree_pids "$@"); do stats+=("/proc/$p/stat"); done
  # after the command name (which may hold spaces) field 3 is $1
  { ((${#stats[@]})) && cat "${stats[@]}" 2>/dev/null; } | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
# cpu_snap [MASTER_PID]: ticks so far of the master ($master_pid unless given), the
# reference nginx and the three volumes; cpu_json BEFORE AFTER: what each used in between,
# in seconds, as JSON
cpu_snap() { echo "$(cpu_ticks "${1:-$master_pid}") $(cpu_ticks "${ref_pid:-}") $(cpu_ticks "${vol_pids[@]}")"; }
cpu_json() {
  local -a a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  awk -v t="$CLK_TCK" -v m=$((b[0] - a[0])) -v r=$((b[1] - a[1])) -v v=$((b[2] - a[2])) \
    'BEGIN { printf "{\"master_s\":%.2f,\"ref_s\":%.2f,\"volumes_s\":%.2f}", m / t, r / t, v / t }'
}
# wait_idle PID [MAX_S]: until the process and its descendants use under 5% of a core over
# a second (a master compacting what it was handed), at most MAX_S seconds (60)
wait_idle() {
  local t0 t1 i
  for ((i = 0; i < ${2:-60}; i++)); do
    t0=$(cpu_ticks "$1")
    sleep 1
    t1=$(cpu_ticks "$1")
    ((t1 - t0 < (CLK_TCK + 19) / 20)) && return 0
  done
  log "  warning: pid $1 still busy after ${2:-60} s"
}
