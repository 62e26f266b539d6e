#!/usr/bin/env bash
# Benchmark: pullkit against a floor, go-containerregistry and skopeo, in one run, against
# the real docker-registry on loopback. Three images of random incompressible gzip layers:
# 8 x 64 MiB, 200 x 64 KiB, 1 x 1 GiB. The tools run alternately ROUNDS times per image;
# the script prints median wall time, the ratio to the floor and to go-containerregistry,
# and peak RSS (from GNU time). Usage: bench/run.sh [ROUNDS]   (default 5)
# IMAGES="big8 small200 huge1" selects images; BENCH_DIR keeps the work directory (and the
# seeded registry) between runs; PULL_FLAGS adds flags to pullkit's pull (for instance
# --direct-io=false, to measure it writing through the page cache like the floor).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
JOBS=${JOBS:-4}
PULL_FLAGS=${PULL_FLAGS:-}
work=${BENCH_DIR:-$(mktemp -d /tmp/pullkit-bench.XXXXXX)}
bin=$work/bin
mkdir -p "$bin" "$work/registry"
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install docker-registry)"; exit 1; }
command -v skopeo >/dev/null || { echo "needs skopeo (apt-get install skopeo)"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)"; exit 1; }

go build -o "$bin/seed" ./bench/seed
go build -o "$bin/floor" ./bench/floor
go build -o "$bin/ggcr" ./bench/ggcr
go build -o "$bin/pull" ./examples/pull

trap 'kill ${regpid:-} 2>/dev/null; rm -rf "$work/out"' EXIT
start_registry "$work"

declare -A spec=([big8]="8 67108864" [small200]="200 65536" [huge1]="1 1073741824")
read -r -a images <<<"${IMAGES:-big8 small200 huge1}"
for img in "${images[@]}"; do
  read -r n size <<<"${spec[$img]}"
  echo "seeding $img: $n x $size bytes" >&2
  "$bin/seed" -ref "$reg/bench/$img:latest" -layers "$n" -size "$size" -tmp "$work"
done

results=$work/results.tsv
: >"$results"
runone() { # image tool
  local img=$1 tool=$2
  local out=$work/out/$tool
  rm -rf "$work/out"; mkdir -p "$work/out"; sync
  local cmd
  case $tool in
    floor) cmd=("$bin/floor" -registry "$reg" -repo "bench/$img" -out "$out" -jobs "$JOBS") ;;
    ggcr) cmd=("$bin/ggcr" -ref "$reg/bench/$img:latest" -out "$out") ;;
    skopeo) cmd=(skopeo copy -q --src-tls-verify=false "docker://$reg/bench/$img:latest" "oci:$out:latest") ;;
    pullkit) cmd=("$bin/pull" --plain-http $PULL_FLAGS --output "$out" --format oci "$reg/bench/$img:latest") ;;
  esac
  /usr/bin/time -f '%e %M' -o "$work/time" "${cmd[@]}" >/dev/null
  read -r secs kb <"$work/time"
  printf '%s\t%s\t%s\t%s\n' "$img" "$tool" "$secs" "$kb" >>"$results"
}
tools=(floor ggcr skopeo pullkit)
# The order of the tools changes every round along a balanced Latin square: over four
# rounds each tool runs once in each position and right after each other tool once, so
# none always inherits the same predecessor's leftovers (dirty pages, freed memory that
# the VM's host has taken back, a registry with a warm or cold heap).
orders=("0 1 3 2" "1 2 0 3" "2 3 1 0" "3 0 2 1")
for img in "${images[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for k in ${orders[$(( (r - 1) % 4 ))]}; do runone "$img" "${tools[$k]}"; done
  done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '\n%-9s %-8s %9s %9s %9s %10s\n' image tool median_s vs_floor vs_ggcr peakRSS_MiB
for img in "${images[@]}"; do
  f=$(awk -F'\t' -v i="$img" '$1==i && $2=="floor"{print $3}' "$results" | median)
  g=$(awk -F'\t' -v i="$img" '$1==i && $2=="ggcr"{print $3}' "$results" | median)
  for tool in "${tools[@]}"; do
    m=$(awk -F'\t' -v i="$img" -v t="$tool" '$1==i && $2==t{print $3}' "$results" | median)
    rss=$(awk -F'\t' -v i="$img" -v t="$tool" '$1==i && $2==t{print $4}' "$results" | sort -g | tail -1)
    awk -v i="$img" -v t="$tool" -v m="$m" -v f="$f" -v g="$g" -v r="$rss" \
      'BEGIN {printf "%-9s %-8s %9.3f %9.2f %9.2f %10.1f\n", i, t, m, m/f, m/g, r/1024}'
  done
done
echo "(rounds: $ROUNDS, jobs: $JOBS, raw: $results)"
