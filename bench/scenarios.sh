# Sourced by bench/run (not run): the scenarios of issues 9, 10 and 11, each a function
# that run calls when SCENARIOS names it, and the fresh-master PUT that big and multipart
# share. Uses run's settings and helpers (wrk_rounds, put_side, record, cpu_snap, ...).

# S3's marker without S3's work: a master without -s3-keys takes any signature, and this
# header makes a request an S3 one (so a GET's bytes stream through the master)
S3_AUTH='AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'

# ---- a PUT through a fresh master, its peak RSS its own ---------------------------------
# fresh_master FLAGS: the master restarted with FLAGS; its peak RSS is reset once it listens
# (echo 5 > clear_refs), so VmHWM afterwards is what came next. Sets hwm0 (the start-up
# peak, RocksDB open and log replay) and rss0 (RSS once listening).
fresh_master() {
  MASTER_ARGS=$1
  stop "$master_pid"
  start_master
  hwm0=$(status_kib VmHWM)
  echo 5 >"/proc/$master_pid/clear_refs" 2>/dev/null || log "  warning: cannot reset VmHWM; it includes start-up"
  rss0=$(status_kib VmRSS)
}

# big_mkv SCENARIO SIDE FLAGS ROUND: one PUT of $big (curl -T) through a fresh master
big_mkv() {
  local name=$1 side=$2 r=$4 res hwm rss secs code c0 c1 key=/$1/$RUN_ID-$2-$4
  sync
  fresh_master "$3"
  c0=$(cpu_snap)
  res=$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' -T "$big" "http://$MASTER$key")
  c1=$(cpu_snap)
  hwm=$(status_kib VmHWM)
  rss=$(status_kib VmRSS)
  [[ ${res%% *} == 201 ]] || die "big PUT through mkv ($name $side) answered ${res%% *}"
  secs=${res#* }
  record "{\"scenario\":\"$name\",\"side\":\"$side\",\"round\":$r,\"mib\":$BIG_MIB,\"seconds\":$secs,\"vmhwm_kib\":$hwm,\"vmrss_kib\":$rss,\"vmrss_start_kib\":$rss0,\"vmhwm_startup_kib\":$hwm0,\"cpu\":$(cpu_json "$c0" "$c1")}"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$MASTER$key")
  [[ $code == 204 ]] || log "  warning: DELETE of the big key answered $code"
  log "  $name $side round $r: $secs s for $BIG_MIB MiB, master VmHWM $((hwm / 1024)) MiB; $(cpu_note 1 "$(cpu_json "$c0" "$c1")" s)"
}

# ---- GET hit over MANY_KEYS keys vs over KEYS keys (issue 11) ------------------------
# Two more masters, same binary and flags, each over an index written by `mkv bench-index`
# (records only: a GET is a 302 and never reaches the volumes): KEYS keys on the reference
# side, MANY_KEYS on mkv's. Both indexes are made the same way, so only the key count differs.
# wrk draws each key at random (get.lua RANDOM_KEYS=1) on both sides: prebuilding 3M requests
# would take wrk longer than the run.
get_hit_3m_scenario() {
  local few_port many_port few_pid many_pid n
  read -r few_port many_port < <(free_ports 2)
  for n in "$KEYS" "$MANY_KEYS"; do
    log "get_hit_3m: mkv bench-index of $n keys /bench/k0… into $tmp/db-$n"
    "$mkv" bench-index -db "$tmp/db-$n" -volumes "$VOLS" -keys "$n" -prefix /bench/k 2>"$tmp/bench-index-$n.log" \
      || die "bench-index failed: $(tail -3 "$tmp/bench-index-$n.log")"
    log "  $(tail -1 "$tmp/bench-index-$n.log")"
  done
  start_mkv "$few_port" "$tmp/db-$KEYS" -admin ''
  few_pid=$started_pid
  start_mkv "$many_port" "$tmp/db-$MANY_KEYS" -admin ''
  many_pid=$started_pid
  # a master opening an index may compact what bench-index left: not during a measurement
  wait_idle "$few_pid"
  wait_idle "$many_pid"
  for n in "$KEYS" "$MANY_KEYS"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$([[ $n == "$KEYS" ]] && echo "$few_port" || echo "$many_port")/bench/k$((n - 1))")
    [[ $code == 302 ]] || die "GET of the last key of the $n-key index answered $code, not 302"
  done
  g3_few=$few_port g3_many=$many_port g3_few_pid=$few_pid g3_many_pid=$many_pid
  wrk_side() {
    w_script=get.lua w_after=
    w_opts=(-t"$WRK_THREADS" -c"$CONNS")
    if [[ $1 == mkv ]]; then
      w_url=http://127.0.0.1:$g3_many/ w_pid=$g3_many_pid w_env=(KEYS="$MANY_KEYS" KEY_PREFIX=/bench/k RANDOM_KEYS=1)
    else
      w_url=http://127.0.0.1:$g3_few/ w_pid=$g3_few_pid w_env=(KEYS="$KEYS" KEY_PREFIX=/bench/k RANDOM_KEYS=1)
    fi
  }
  wrk_rounds get_hit_3m
  stop "$few_pid"
  stop "$many_pid"
  rm -rf "$tmp/db-$KEYS" "$tmp/db-$MANY_KEYS"
}

# ---- PUT with -sync vs without (issue 9) ---------------------------------------------
# Two more masters on fresh indexes, one with -sync (the WAL fsynced before each 201, group
# commit), one without; the same put.lua load, alternated. No target: the cost, reported.
put_sync_scenario() {
  local sync_port plain_port
  read -r sync_port plain_port < <(free_ports 2)
  start_mkv "$sync_port" "$tmp/db-sync" -admin '' -sync
  ps_sync_pid=$started_pid ps_sync_url=http://127.0.0.1:$sync_port/
  start_mkv "$plain_port" "$tmp/db-nosync" -admin ''
  ps_plain_pid=$started_pid ps_plain_url=http://127.0.0.1:$plain_port/
  log "put_sync: $PUT_SIZE-byte bodies, a master with -sync (mkv side) and one without (reference)"
  wrk_side() {
    w_script=put.lua w_after=
    w_opts=(-t3 -c"$PUT_CONNS")
    w_env=(RUN_ID="$RUN_ID-put_sync-$1-$2" BODY_SIZE="$PUT_SIZE")
    if [[ $1 == mkv ]]; then w_url=$ps_sync_url w_pid=$ps_sync_pid; else w_url=$ps_plain_url w_pid=$ps_plain_pid; fi
  }
  wrk_rounds put_sync
  stop "$ps_sync_pid"
  stop "$ps_plain_pid"
}

# ---- S3 PutObject vs native PUT, 1 KiB (issue 10) ------------------------------------
# The put.lua load through the master, with S3's Authorization header (PutObject of bucket
# "put", key RUN/thread/n) on the mkv side and without it (the native PUT) on the reference.
s3_put_scenario() {
  log "s3_put: $PUT_SIZE-byte bodies, S3 PutObject (mkv side) vs native PUT (reference), both through the master"
  wrk_side() {
    w_url=http://$MASTER/ w_script=put.lua w_pid=$master_pid w_after=
    w_opts=(-t3 -c"$PUT_CONNS")
    w_env=(RUN_ID="$RUN_ID-s3_put-$1-$2" BODY_SIZE="$PUT_SIZE")
    [[ $1 == mkv ]] && w_env+=(HEADER="Authorization: $S3_AUTH")
    return 0
  }
  wrk_rounds s3_put
}

# ---- S3 GetObject of 1 MiB objects vs the same files from nginx (issue 10) -----------
# S3_OBJECTS objects PUT natively (S3 and native share keys), then GETs as S3 requests
# through the master, which streams the bytes from a replica, vs GETs of the same files
# straight from volume 1 (their paths there, from the master's HEAD answers).
s3_get_scenario() {
  local obj=$tmp/s3obj.bin size=$((S3_OBJ_KIB << 10)) got i
  log "s3_get: $S3_OBJECTS objects of $S3_OBJ_KIB KiB under /s3bench/o"
  head -c "$size" /dev/urandom >"$obj"
  for ((i = 0; i < S3_OBJECTS; i++)); do
    echo "/s3bench/o$i"
    curl -sS -o /dev/null -w '%{http_code}\n' -T "$obj" "http://$MASTER/s3bench/o$i" >>"$tmp/out/s3_get-load.txt"
  done >"$tmp/s3_get-mkv.paths"
  [[ $(sort -u "$tmp/out/s3_get-load.txt") == 201 ]] || die "PUT of the S3 objects answered: $(sort -u "$tmp/out/s3_get-load.txt" | tr '\n' ' ')"
  # the file of each key on volume 1: its replica there (Key-Volumes) + the key's path in the
  # Location the master answers (http://<replica><path>)
  "$PY" - "$MASTER" "127.0.0.1:$P1" "$tmp/s3_get-mkv.paths" >"$tmp/s3_get-ref.paths" <<'EOF' || die "cannot find the objects' paths on volume 1"
import http.client, sys
master, vol, paths = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = master.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
for key in open(paths).read().split():
    c.request("HEAD", key)
    r = c.getresponse()
    r.read()
    assert r.status == 302, (key, r.status)
    reps = r.getheader("Key-Volumes").split(",")
    loc = r.getheader("Location").split("?")[0].removeprefix("http://")
    first = next(x for x in reps if loc.startswith(x + "/"))
    mine = next(x for x in reps if x == vol or x.startswith(vol + "/"))
    print(mine[len(vol):] + loc[len(first):])
EOF
  got=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$P1$(head -1 "$tmp/s3_get-ref.paths")")
  [[ $got == "200 $size" ]] || die "GET of an object's file on volume 1 answered $got"
  got=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' -H "Authorization: $S3_AUTH" "http://$MASTER/s3bench/o0")
  [[ $got == "200 $size" ]] || die "S3 GET of an object through the master answered $got"
  wrk_side() {
    w_script=get.lua w_pid=$master_pid w_after=
    w_opts=(-t"$WRK_THREADS" -c"$S3_CONNS")
    if [[ $1 == mkv ]]; then
      w_url=http://$MASTER/ w_env=(PATHS="$tmp/s3_get-mkv.paths" HEADER="Authorization: $S3_AUTH")
    else
      w_url=http://127.0.0.1:$P1/ w_env=(PATHS="$tmp/s3_get-ref.paths")
    fi
  }
  wrk_rounds s3_get
}

# ---- a multipart upload of the big file vs its native PUT (issue 10) -----------------
# boto3's upload_file (PART_MIB parts, 10 in flight) through a fresh master, its peak RSS
# and wall time, vs the native PUT of the same file (curl -T) through a fresh master, in
# the same round.
multipart_scenario() {
  local r side res secs hwm rss c0 c1 code
  need_boto3
  log "multipart: $BIG_MIB MiB, $PART_MIB MiB parts (boto3 upload_file) vs one native PUT (curl -T)"
  for ((r = 1; r <= ROUNDS; r++)); do
    for side in $(sides "$r"); do
      if [[ $side == ref ]]; then
        big_mkv multipart ref "" "$r"
        continue
      fi
      sync
      fresh_master ""
      c0=$(cpu_snap)
      res=$("$boto3_py" "$here/s3upload.py" "http://$MASTER" multipart "$RUN_ID-mkv-$r" "$big" "$PART_MIB" 2>"$tmp/out/multipart-$r.err") \
        || die "multipart upload failed: $(tail -3 "$tmp/out/multipart-$r.err")"
      c1=$(cpu_snap)
      hwm=$(status_kib VmHWM)
      rss=$(status_kib VmRSS)
      [[ $(field "$res" size) == $((BIG_MIB << 20)) ]] || die "the multipart object has $(field "$res" size) bytes"
      secs=$(field "$res" seconds)
      record "{\"scenario\":\"multipart\",\"side\":\"mkv\",\"round\":$r,\"mib\":$BIG_MIB,\"seconds\":$secs,\"upload\":$res,\"vmhwm_kib\":$hwm,\"vmrss_kib\":$rss,\"vmrss_start_kib\":$rss0,\"vmhwm_startup_kib\":$hwm0,\"cpu\":$(cpu_json "$c0" "$c1")}"
      code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$MASTER/multipart/$RUN_ID-mkv-$r")
      [[ $code == 204 ]] || log "  warning: DELETE of the multipart key answered $code"
      log "  multipart mkv round $r: $secs s for $BIG_MIB MiB, master VmHWM $((hwm / 1024)) MiB; $(cpu_note 1 "$(cpu_json "$c0" "$c1")" s)"
    done
  done
  MASTER_ARGS=
}

# need_boto3: $boto3_py, a python with boto3: the venv bin/deps makes under the build
# folder, made here (python3 -m venv, pip install boto3) when missing
need_boto3() {
  local venv=${CARGO_TARGET_DIR:-target}/venv
  [[ $venv == /* ]] || venv=$root/$venv
  boto3_py=$venv/bin/python
  "$boto3_py" -c 'import boto3' 2>/dev/null && return 0
  log "installing boto3 into $venv (python3 -m venv, pip install boto3)"
  { "$PY" -m venv "$venv" && "$venv/bin/pip" install -q boto3; } >&2 || die "cannot install boto3 into $venv"
}
