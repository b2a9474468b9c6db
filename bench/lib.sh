# Shared by bench/run and flamegraphs/make (sourced, not run): tools, a temp folder,
# three volumes + the master + the reference nginx on free loopback ports, and a
# cleanup that stops, by PID, everything started here, however the script exits.
#
# Needs: $root (repo root), $here (bench/). Sets: $tmp, $PY, $nginx, $mkv, $commit, $P1 $P2
# $P3 $PM $PR, $VOLS, $MASTER, $REF, $master_pid.

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
  log "building: cargo build --release"
  (cd "$root" && cargo build --release --quiet) || die "release build failed"
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -n $(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] \
    && commit="$commit (+ uncommitted changes in src/)"
  cp "${CARGO_TARGET_DIR:-$root/target}/release/mkv" "$tmp/mkv"
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

start_volumes() {
  local i port
  for i in 1 2 3; do
    port=P$i
    port=${!port}
    PORT=$port WORKERS=$VOL_WORKERS "$root/bin/volume" "$tmp/v$i" >"$tmp/v$i.log" 2>&1 &
    pids+=($!)
    wait_http "$port" $! || die "volume $i did not start: $(tail -3 "$tmp/v$i.log")"
  done
}

master_pid=
master_starts=0
start_master() {
  master_starts=$((master_starts + 1))
  local mlog=$tmp/master.$master_starts.log
  "$mkv" server -port "$PM" -db "$tmp/db" -volumes "$VOLS" -threads "$THREADS" ${MASTER_ARGS:-} >"$mlog" 2>&1 &
  master_pid=$!
  pids+=("$master_pid")
  for _ in $(seq 200); do
    grep -q "listening on" "$mlog" && wait_http "$PM" "$master_pid" && return 0
    kill -0 "$master_pid" 2>/dev/null || break
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
