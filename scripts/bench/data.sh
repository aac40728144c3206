#!/usr/bin/env bash
# Data benchmark: the same file behind the same fake Kaggle API (a local fake whose
# DownloadDataFile answers 302 to a signed URL on a range-capable storage server), fetched
# side by side by kgenv, curl and the official `kaggle` CLI from PyPI (pointed at the fake
# with KAGGLE_API_ENVIRONMENT=LOCALHOST, i.e. http://localhost/api/v1: the fake listens on
# 127.0.0.1:80). Prints each one's throughput and peak RSS (/usr/bin/time -v) and the ratios,
# for a local directory and for a gs:// destination (the real fake-gcs-server).
#
#   scripts/bench/data.sh                    # 2 GiB file
#   KGENV_BENCH_BYTES=536870912 scripts/bench/data.sh
#
# Needs root (port 80) and about 3x the file size of free disk under target/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export KGENV_VENV="${KGENV_VENV:-$ROOT/.venv}"
# shellcheck source=/dev/null
. scripts/setup/00-base.sh
# shellcheck source=/dev/null
. scripts/setup/40-data.sh
need_apt time curl bc
# kaggle 2.x imports `six` without declaring it.
if [ ! -x "$KGENV_VENV/bin/kaggle" ] || ! "$KGENV_VENV/bin/python" -c 'import six' 2>/dev/null; then
  need_pip kaggle six
fi

SIZE="${KGENV_BENCH_BYTES:-2147483648}"
GS_CHUNK="${KGENV_BENCH_GS_CHUNK:-67108864}"
WORK="${KGENV_BENCH_DIR:-$ROOT/target/bench-data}"
PORT=80
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/kcfg"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building the kgenv data driver (release)"
cargo build -q --release -p kgenv-core --example data_bench
BIN="$ROOT/target/release/examples/data_bench"

echo "== generating $SIZE bytes"
WANT=$("$BIN" gen "$WORK/src/big.bin" "$SIZE")

"$BIN" serve "127.0.0.1:$PORT" bench "big.bin=$WORK/src/big.bin" >"$WORK/fake.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q ready "$WORK/fake.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/fake.log" || { cat "$WORK/fake.log"; echo "fake Kaggle did not start on port $PORT" >&2; exit 1; }

export KAGGLE_API_ENVIRONMENT=LOCALHOST KAGGLE_USERNAME=bench KAGGLE_KEY=bench-key KAGGLE_CONFIG_DIR="$WORK/kcfg"
unset KAGGLE_API_TOKEN
API="http://localhost:$PORT/api/v1/competitions.CompetitionApiService/DownloadDataFile"
BODY='{"competitionName":"bench","fileName":"big.bin"}'

declare -A SECS RSS CPU
measure() { # NAME CMD...  (one timed run; sync first so earlier writes do not weigh on it)
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out"; echo "$name failed" >&2; exit 1; }
  local secs rss cpu
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/$name.time")
  cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$WORK/$name.time")
  # Several runs of the same NAME keep the fastest (the machine is shared and noisy).
  if [ -z "${SECS[$name]:-}" ] || [ "$(echo "$secs < ${SECS[$name]}" | bc -l)" = 1 ]; then
    SECS[$name]=$secs; CPU[$name]=$cpu
  fi
  if [ -z "${RSS[$name]:-}" ] || [ "$rss" -gt "${RSS[$name]}" ]; then RSS[$name]=$rss; fi
}
RUNS="${KGENV_BENCH_RUNS:-3}"
check() { # NAME FILE
  local got; got=$(sha256sum "$2" | cut -d' ' -f1)
  [ "$got" = "$WANT" ] || { echo "$1: content differs" >&2; exit 1; }
  rm -f "$2"
}

echo "== local directory ($RUNS runs each, fastest kept)"
mkdir -p "$WORK/out"
for _ in $(seq "$RUNS"); do
  measure kgenv "$BIN" pull bench "$WORK/out/kgenv"
  check kgenv "$WORK/out/kgenv/big.bin"; rm -rf "$WORK/out/kgenv"
  measure curl curl -sSfL -u bench:bench-key -H 'content-type: application/json' -d "$BODY" "$API" -o "$WORK/out/curl.bin"
  check curl "$WORK/out/curl.bin"
  # curl made durable like kgenv's file (kgenv fsyncs before its rename).
  measure curl_sync sh -c "curl -sSfL -u bench:bench-key -H 'content-type: application/json' -d '$BODY' '$API' -o '$WORK/out/curl.bin' && sync '$WORK/out/curl.bin'"
  check curl_sync "$WORK/out/curl.bin"
  measure kaggle "$KGENV_VENV/bin/kaggle" competitions download -c bench -f big.bin -p "$WORK/out/kaggle" --quiet
  check kaggle "$WORK/out/kaggle/big.bin"
done

echo "== gs:// (fake-gcs-server)"
GPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KGENV_FAKE_GCS_SERVER" -scheme http -host 127.0.0.1 -port "$GPORT" -backend filesystem -filesystem-root "$WORK/gcs" -log-level error >"$WORK/gcs.log" 2>&1 &
PIDS+=($!)
export STORAGE_EMULATOR_HOST="127.0.0.1:$GPORT"
for _ in $(seq 100); do curl -s "http://$STORAGE_EMULATOR_HOST/storage/v1/b" >/dev/null && break; sleep 0.1; done
curl -sSf -X POST "http://$STORAGE_EMULATOR_HOST/storage/v1/b?project=bench" -H 'content-type: application/json' -d '{"name":"bench"}' >/dev/null
gs_check() { # NAME OBJECT
  local got; got=$("$BIN" gs-sha256 bench "$2")
  [ "$got" = "$WANT" ] || { echo "$1: object content differs" >&2; exit 1; }
}
measure kgenv_gs "$BIN" pull bench gs://bench/kgenv --chunk "$GS_CHUNK" --concurrency 4
gs_check kgenv_gs kgenv/big.bin
# curl: the signed URL streamed into a single-request upload (no resume, no chunking).
measure curl_gs sh -c "curl -sSfL -u bench:bench-key -H 'content-type: application/json' -d '$BODY' '$API' | curl -sSf -X POST -T - -H 'content-type: application/octet-stream' 'http://$STORAGE_EMULATOR_HOST/upload/storage/v1/b/bench/o?uploadType=media&name=curl/big.bin' -o /dev/null"
gs_check curl_gs curl/big.bin
# curl through the same chunked resumable-upload protocol kgenv uses (same chunk size), to
# show what fake-gcs-server's per-chunk cost is, whoever uploads.
SESSION=$(curl -sSf -D - -o /dev/null -X POST "http://$STORAGE_EMULATOR_HOST/upload/storage/v1/b/bench/o?uploadType=resumable&name=curlr/big.bin" \
  -H 'content-type: application/json' -d '{"name":"curlr/big.bin"}' | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
export SESSION SIZE GS_CHUNK
export SHELL=/bin/bash # split runs its filter with $SHELL
# shellcheck disable=SC2016 # expanded by split's filter shell
measure curlr_gs sh -c "curl -sSfL -u bench:bench-key -H 'content-type: application/json' -d '$BODY' '$API' | split -d -a 6 -b '$GS_CHUNK' --filter '"'i=$((10#${FILE#x})); s=$((i*GS_CHUNK)); e=$((s+GS_CHUNK-1)); t="*"; if [ $e -ge $((SIZE-1)) ]; then e=$((SIZE-1)); t=$SIZE; fi; curl -sS -o /dev/null -X PUT -H "Content-Range: bytes $s-$e/$t" --data-binary @- "$SESSION"'"' -"
gs_check curlr_gs curlr/big.bin
# kaggle CLI: cannot write to GCS; download to disk, then upload (what the guide does by hand).
measure kaggle_gs sh -c "'$KGENV_VENV/bin/kaggle' competitions download -c bench -f big.bin -p '$WORK/out/kg' --quiet && curl -sSf -X POST -T '$WORK/out/kg/big.bin' -H 'content-type: application/octet-stream' 'http://$STORAGE_EMULATOR_HOST/upload/storage/v1/b/bench/o?uploadType=media&name=kaggle/big.bin' -o /dev/null && rm -f '$WORK/out/kg/big.bin'"
gs_check kaggle_gs kaggle/big.bin

echo
printf '%-7s %-26s %9s %8s %9s %12s\n' dest tool seconds MB/s 'CPU s' 'peak RSS MB'
row() { # DEST TOOL KEY
  printf '%-7s %-26s %9.2f %8.0f %9.2f %12.0f\n' "$1" "$2" "${SECS[$3]}" "$(echo "$SIZE / ${SECS[$3]} / 1000000" | bc -l)" "${CPU[$3]}" "$(echo "${RSS[$3]} / 1024" | bc -l)"
}
row local kgenv kgenv; row local curl curl; row local 'curl + fsync' curl_sync; row local 'kaggle CLI' kaggle
row gs:// 'kgenv (resumable chunks)' kgenv_gs; row gs:// 'curl (resumable chunks)' curlr_gs
row gs:// 'curl (one request)' curl_gs; row gs:// 'kaggle CLI + curl upload' kaggle_gs
ratio() { echo "scale=2; ${SECS[$2]} / ${SECS[$1]}" | bc -l; }
echo
echo "throughput ratios (higher is better for kgenv):"
echo "  local: kgenv/curl = $(ratio kgenv curl)x   kgenv/(curl+fsync) = $(ratio kgenv curl_sync)x   kgenv/kaggle = $(ratio kgenv kaggle)x"
echo "  gs://: kgenv/curl-resumable = $(ratio kgenv_gs curlr_gs)x   kgenv/curl-one-request = $(ratio kgenv_gs curl_gs)x   kgenv/kaggle+upload = $(ratio kgenv_gs kaggle_gs)x"
echo "(file $SIZE bytes; kgenv fsyncs before its rename, curl and kaggle do not; gs:// chunks of $GS_CHUNK bytes, kgenv 4 streams."
echo " fake-gcs-server keeps an upload in memory and re-hashes all of it on every chunk: chunked resumable uploads cost it"
echo " O(n^2) work that real GCS does not do, whoever the client; a one-request upload cannot resume.)"
