#!/usr/bin/env bash
# WAN benchmark (issue 14): pullkit against a plain floor, a ranged floor and its peers
# (go-containerregistry in process and as crane, skopeo, containerd 1.6's ctr), all through
# bench/wanproxy, a proxy on loopback that emulates a WAN in front of the real
# docker-registry. Three images of random incompressible gzip layers: 8 x 64 MiB,
# 200 x 64 KiB, 1 x 256 MiB; two links:
#   A: 40 ms RTT, 12.5 MB/s per connection, 125 MB/s in all
#   B: 100 ms RTT, 5 MB/s per connection, no total cap
# For each link the script starts the proxy, prints its self-check, and runs the tools
# alternately ROUNDS times per image in a balanced order; then it prints, per image, link
# and tool, the median wall time, its ratio to the link limit and to the best peer, the
# connections the tool opened, the megabytes it received, and its peak RSS.
#
# Usage: bench/wan.sh [ROUNDS]   (default 3)
#   IMAGES="big8 small200 large1"  images to run
#   PROFILES="A B"                 links to run
#   TOOLS="pullkit floor ranged ggcr crane skopeo ctr-fetch ctr-pull"  tools to run
#   BENCH_DIR=DIR                  keep the work directory (seeded registry, crane) between runs
#   PULL_FLAGS="--jobs 16"         flags added to pullkit's pull (default: none, its defaults)
# Everything listens on 127.0.0.1 only; containerd runs on a private socket and root.
set -euo pipefail
trap 'echo "wan.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
PULL_FLAGS=${PULL_FLAGS:-}
work=${BENCH_DIR:-$(mktemp -d /tmp/pullkit-wan.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
bin=$work/bin
mkdir -p "$bin" "$work/registry"
# Loopback only: no proxy from the environment for any tool.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

need() { command -v "$1" >/dev/null || { echo "needs $1 ($2)"; exit 1; }; }
need docker-registry "apt-get install docker-registry"
need skopeo "apt-get install skopeo"
need containerd "apt-get install containerd"
need ctr "apt-get install containerd"
need jq "apt-get install jq"
need curl "apt-get install curl"
[ -x /usr/bin/time ] || { echo "needs GNU time for wall time and peak RSS (apt-get install time)"; exit 1; }

read -r -a tools <<<"${TOOLS:-pullkit floor ranged ggcr crane skopeo ctr-fetch ctr-pull}"
read -r -a images <<<"${IMAGES:-big8 small200 large1}"
read -r -a profiles <<<"${PROFILES:-A B}"
declare -A spec=([big8]="8 67108864" [small200]="200 65536" [large1]="1 268435456")
# profile: RTT, rate per connection (bytes/s), total rate (bytes/s, 0: none)
declare -A link=([A]="40ms 12500000 125000000" [B]="100ms 5000000 0")
for i in "${images[@]}"; do [ -n "${spec[$i]:-}" ] || { echo "unknown image $i (big8 small200 large1)"; exit 1; }; done
for p in "${profiles[@]}"; do [ -n "${link[$p]:-}" ] || { echo "unknown profile $p (A B)"; exit 1; }; done
has() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

echo "work directory: $work" >&2
go build -o "$bin/seed" ./bench/seed
go build -o "$bin/floor" ./bench/floor
go build -o "$bin/ggcr" ./bench/ggcr
go build -o "$bin/wanproxy" ./bench/wanproxy
go build -o "$bin/pull" ./examples/pull
if has crane && [ ! -x "$bin/crane" ]; then
  echo "installing crane v0.22.1 into $bin" >&2
  GOBIN=$bin go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
fi

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work/out"
}
trap cleanup EXIT

start_registry "$work"
pids+=($regpid)
accept='application/vnd.docker.distribution.manifest.v2+json'

declare -A bytes blobs
for img in "${images[@]}"; do
  read -r n size <<<"${spec[$img]}"
  if ! curl -fs -o /dev/null -H "Accept: $accept" "http://$reg/v2/bench/$img/manifests/latest"; then
    echo "seeding $img: $n x $size bytes" >&2
    "$bin/seed" -ref "$reg/bench/$img:latest" -layers "$n" -size "$size" -tmp "$work"
  fi
  m=$(curl -fs -H "Accept: $accept" "http://$reg/v2/bench/$img/manifests/latest")
  bytes[$img]=$(jq '.config.size + ([.layers[].size] | add)' <<<"$m")
  blobs[$img]=$(jq '.layers | length + 1' <<<"$m")
done

# containerd 1.6 on a private socket, root and state, with nothing that needs more than
# a content store and the native snapshotter: no CRI (which would pull on its own), no
# other snapshotters, no tracing. Its content store is isolated per namespace, and every
# run's image is removed with --sync, so each run downloads everything.
ctrd=$work/containerd
sock=$ctrd/containerd.sock
if has ctr-fetch || has ctr-pull; then
  start_containerd "$ctrd" "$sock"
  pids+=($ctrdpid)
fi
ctr_clean() { # ref: remove the image, its content and snapshots, synchronously
  ctr -a "$sock" -n bench images rm --sync "$1" >/dev/null 2>&1 || true
  local left
  left=0
  [ ! -d "$ctrd/root/io.containerd.content.v1.content/blobs" ] ||
    left=$(find "$ctrd/root/io.containerd.content.v1.content/blobs" -type f | wc -l)
  [ "$left" -eq 0 ] || echo "warning: $left blobs left in containerd's store after removing $1" >&2
}

# The proxy's counters: on SIGUSR1 it prints a line "... conns=N active=N up=B down=B".
proxy_stats() {
  local n
  n=$(wc -l <"$plog")
  kill -USR1 "$ppid_"
  for _ in $(seq 200); do [ "$(wc -l <"$plog")" -gt "$n" ] && break; sleep 0.01; done
  local line
  line=$(tail -1 "$plog" | sed -n 's/.*conns=\([0-9]*\).* down=\([0-9]*\).*/\1 \2/p')
  echo "${line:-0 0}"
}

results=$work/results.tsv
: >"$results"
runone() { # profile image tool
  local prof=$1 img=$2 tool=$3
  local out=$work/out/$tool ref=$preg/bench/$img:latest
  rm -rf "$work/out"
  mkdir -p "$work/out"
  sync
  local cmd
  case $tool in
    pullkit) cmd=("$bin/pull" --plain-http $PULL_FLAGS --output "$out" --format oci "$ref") ;;
    floor) cmd=("$bin/floor" -registry "$preg" -repo "bench/$img" -out "$out") ;;
    ranged) cmd=("$bin/floor" -ranged -range-size 4194304 -conns 16 -registry "$preg" -repo "bench/$img" -out "$out") ;;
    ggcr) cmd=("$bin/ggcr" -ref "$ref" -out "$out") ;;
    crane) cmd=("$bin/crane" pull --insecure --format oci "$ref" "$out") ;;
    skopeo) cmd=(skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$out:latest") ;;
    ctr-fetch) ctr_clean "$ref"; cmd=(ctr -a "$sock" -n bench content fetch --plain-http "$ref") ;;
    ctr-pull) ctr_clean "$ref"; cmd=(ctr -a "$sock" -n bench images pull --snapshotter native --plain-http "$ref") ;;
    *) echo "unknown tool $tool" >&2; exit 1 ;;
  esac
  local c0 d0 c1 d1 secs kb
  read -r c0 d0 < <(proxy_stats)
  if /usr/bin/time -f '%e %M' -o "$work/time" "${cmd[@]}" >"$work/tool.log" 2>&1; then
    read -r secs kb < <(tail -1 "$work/time")
  else
    echo "$prof $img $tool failed:" >&2
    tail -5 "$work/tool.log" >&2
    secs=fail kb=0
  fi
  read -r c1 d1 < <(proxy_stats)
  case $tool in ctr-*) ctr_clean "$ref" ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$prof" "$img" "$tool" "$secs" "$kb" $((c1 - c0)) $((d1 - d0)) >>"$results"
  echo "  $prof $img $tool: ${secs}s" >&2
}

# The order of the tools changes every round along a Williams design (a balanced Latin
# square for an even number of tools): over n rounds each tool runs once in each position
# and right after each other tool once. Rounds of different images and links take
# different rows, so a short run still mixes the orders.
nt=${#tools[@]}
order() { # row -> indices
  local row=$1 j k=0 seq=()
  for ((j = 0; j < nt; j++)); do
    if ((j == 0)); then k=0; elif ((j % 2)); then k=$(((j + 1) / 2)); else k=$((nt - j / 2)); fi
    seq+=($(((k + row) % nt)))
  done
  echo "${seq[@]}"
}

t_start=$(date +%s)
row=0
checkoff=()
for prof in "${profiles[@]}"; do
  read -r rtt crate trate <<<"${link[$prof]}"
  pflags=(-rtt "$rtt" -conn-rate "$crate" -total-rate "$trate")
  echo "profile $prof: rtt $rtt, $crate B/s per connection, total ${trate/#0/no cap}" >&2
  if ! "$bin/wanproxy" -check "${pflags[@]}" | tee "$work/check-$prof.txt" >&2; then
    echo "warning: the proxy's self-check for $prof is off by more than 10% (a busy machine?)" >&2
    checkoff+=("$prof")
  fi
  plog=$work/proxy-$prof.log
  # A fresh file: with BENCH_DIR, the last run's address would otherwise be read before
  # the new proxy has truncated it.
  rm -f "$work/proxy-$prof.addr"
  "$bin/wanproxy" -listen 127.0.0.1:0 -upstream "$reg" "${pflags[@]}" >"$work/proxy-$prof.addr" 2>"$plog" &
  ppid_=$!
  pids+=($ppid_)
  for _ in $(seq 100); do [ -s "$work/proxy-$prof.addr" ] && break; sleep 0.05; done
  preg=$(head -1 "$work/proxy-$prof.addr" 2>/dev/null || true)
  [ -n "$preg" ] || { echo "the proxy did not start:"; cat "$plog"; exit 1; }
  # The real path: /v2/ on a new connection costs the handshake and the request.
  curl -fs -o /dev/null -w "registry through the proxy: GET /v2/ on a new connection %{time_total} s (2 RTT)\n" "http://$preg/v2/" >&2 ||
    echo "warning: GET /v2/ through the proxy failed" >&2
  for img in "${images[@]}"; do
    for r in $(seq "$ROUNDS"); do
      for k in $(order $((row % nt))); do runone "$prof" "$img" "${tools[$k]}"; done
      row=$((row + 1))
    done
  done
  read -r -a st </proc/$ppid_/stat
  echo "proxy $prof: $(((st[13] + st[14]) / $(getconf CLK_TCK))) s of CPU" | tee -a "$work/proxy-cpu.txt" >&2
  kill "$ppid_"
  wait "$ppid_" 2>/dev/null || true
done
t_total=$(($(date +%s) - t_start))

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { # profile image tool column -> values of the successful runs
  awk -F'\t' -v p="$1" -v i="$2" -v t="$3" -v c="$4" '$1==p && $2==i && $3==t && $4!="fail" {print $c}' "$results"
}
# The link limit: the handshake and the manifest's round trip, then the larger of the
# bytes at what 16 connections can get (the total cap, or 16 x the per-connection cap)
# plus a round trip, and the round trips 16 connections need for the blobs one by one.
limit() { # profile image
  read -r rtt crate trate <<<"${link[$1]}"
  awk -v rtt="${rtt%ms}" -v c="$crate" -v t="$trate" -v b="${bytes[$2]}" -v n="${blobs[$2]}" 'BEGIN {
    r = rtt / 1000; rate = 16 * c; if (t > 0 && t < rate) rate = t
    x = b / rate + r; y = int((n + 15) / 16) * r
    printf "%.3f", 2 * r + (x > y ? x : y) }'
}
peers=(ggcr crane skopeo ctr-fetch)
printf '\n%-8s %-4s %-9s %8s %8s %8s %8s %8s %6s %8s %8s\n' image link tool median_s min_s max_s vs_limit vs_best conns MB peakRSS_MiB
declare -A med
: >"$work/summary.txt"
for img in "${images[@]}"; do
  for prof in "${profiles[@]}"; do
    lim=$(limit "$prof" "$img")
    best=nan bestname=none
    for t in "${peers[@]}"; do
      has "$t" || continue
      m=$(col "$prof" "$img" "$t" 4 | median)
      [ "$m" = nan ] && continue
      if [ "$best" = nan ] || awk -v a="$m" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$m bestname=$t; fi
    done
    for t in "${tools[@]}"; do
      m=$(col "$prof" "$img" "$t" 4 | median)
      med[$prof/$img/$t]=$m
      lo=$(col "$prof" "$img" "$t" 4 | sort -g | head -1)
      hi=$(col "$prof" "$img" "$t" 4 | sort -g | tail -1)
      conns=$(col "$prof" "$img" "$t" 6 | median)
      mb=$(col "$prof" "$img" "$t" 7 | median)
      rss=$(col "$prof" "$img" "$t" 5 | sort -g | tail -1)
      fails=$(awk -F'\t' -v p="$prof" -v i="$img" -v t="$t" '$1==p && $2==i && $3==t && $4=="fail"' "$results" | wc -l)
      awk -v i="$img" -v p="$prof" -v t="$t" -v m="$m" -v lo="${lo:-nan}" -v hi="${hi:-nan}" -v l="$lim" -v b="$best" \
        -v c="$conns" -v mb="$mb" -v r="${rss:-0}" -v f="$fails" 'BEGIN {
        printf "%-8s %-4s %-9s %8.2f %8.2f %8.2f %8.2f %8.2f %6s %8.0f %8.1f%s\n", i, p, t, m, lo, hi, m/l, m/b, c, mb/1e6, r/1024, (f > 0 ? "  (" f " failed)" : "") }'
    done
    if [ "$bestname" = none ]; then peer="no peer in TOOLS"; else peer="best peer $bestname $best s"; fi
    echo "$img $prof: link limit $lim s, $peer" >>"$work/summary.txt"
  done
done
echo
cat "$work/summary.txt"
rm -f "$work/summary.txt"
# The same medians as a matrix, in Markdown.
echo
printf '| image | link |'; for t in "${tools[@]}"; do printf ' %s |' "$t"; done; printf ' link limit |\n|---|---|'
for _ in "${tools[@]}"; do printf -- '---|'; done; printf -- '---|\n'
for img in "${images[@]}"; do
  for prof in "${profiles[@]}"; do
    printf '| %s | %s |' "$img" "$prof"
    for t in "${tools[@]}"; do printf ' %s |' "${med[$prof/$img/$t]}"; done
    printf ' %s |\n' "$(limit "$prof" "$img")"
  done
done
echo
[ ${#checkoff[@]} -eq 0 ] || echo "WARNING: the proxy's self-check was off by more than 10% for ${checkoff[*]}: the machine may have been too busy for the emulation; see $work/check-*.txt"
echo "(rounds: $ROUNDS, PULL_FLAGS: '${PULL_FLAGS}', measured in $t_total s; best peer among: ${peers[*]}; peak RSS of ctr is the client's, containerd writes; raw: $results, self-checks: $work/check-*.txt)"
