#!/usr/bin/env bash
# WAN benchmark (issues 14 and 19): pullkit against a ranged floor and its peers
# (containerd 2.4's transfer service, with its defaults and tuned; crane; skopeo), all
# through bench/wanproxy, a proxy on loopback that emulates a WAN in front of the real
# docker-registry, over the wire users have: plain HTTP, TLS with HTTP/1.1, TLS with
# HTTP/2 (bench/tlsfront, with a CA the bench makes), each with and without a CDN (the
# registry answers blob GETs with a 307 to a second host, on its own shaped link, with a
# signed URL that expires). Images of random incompressible gzip layers: 8 x 64 MiB,
# 200 x 64 KiB, 1 x 256 MiB; links:
#   A: 40 ms RTT, 12.5 MB/s per connection, 125 MB/s in all (CDN URLs live 3 s: every
#      pull of the large images meets an expiry)
#   B: 100 ms RTT, 5 MB/s per connection, no total cap (CDN URLs live 10 min)
# For each cell it runs the tools alternately ROUNDS times per image in a balanced order,
# then prints, per image, link, wire and tool, the median wall time, its ratio to the
# link limit and to the best peer, the connections the tool opened, the bytes it
# received (counted by the proxies) against the image's blob bytes, and peak RSS.
#
# Usage: bench/wan.sh [ROUNDS]   (default 1)
#   IMAGES="big8 small200 large1"  images to run
#   PROFILES="A B"                 links to run
#   WIRES="http h1 h2"             plain HTTP, TLS HTTP/1.1, TLS HTTP/2
#   CDNS="off on"                  without and with the CDN redirect
#   TOOLS="pullkit pk-snapshots ranged ctr ctr-tuned crane skopeo pk-resume"
#   CDN_OPAQUE=1                   the CDN's expiry in an opaque token (learnt from 403s)
#   BENCH_DIR=DIR                  keep the work directory (seeded registry, built tools)
#   BENCH_APPEND=1                 add this run's rounds to BENCH_DIR's earlier results
#   PULL_FLAGS="--jobs 16"         flags added to pullkit's pull (default: none)
# pk-resume is pullkit interrupted (SIGINT) half way through the link limit, then run
# again: its time is the second run's, its bytes both runs'. ctr is containerd 2.4.2
# (ctr image pull through its transfer service, native snapshotter: it unpacks, as
# pk-snapshots does). Everything listens on 127.0.0.1 only; containerd runs on a
# private socket and root.
set -euo pipefail
trap 'echo "wan.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-1}
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
need jq "apt-get install jq"
need curl "apt-get install curl"
[ -x /usr/bin/time ] || { echo "needs GNU time for wall time and peak RSS (apt-get install time)"; exit 1; }

read -r -a tools <<<"${TOOLS:-pullkit pk-snapshots ranged ctr ctr-tuned crane skopeo pk-resume}"
read -r -a images <<<"${IMAGES:-big8 small200 large1}"
read -r -a profiles <<<"${PROFILES:-A B}"
read -r -a wires <<<"${WIRES:-http h1 h2}"
read -r -a cdns <<<"${CDNS:-off on}"
declare -A spec=([big8]="8 67108864" [small200]="200 65536" [large1]="1 268435456")
# profile: RTT, rate per connection (bytes/s), total rate (bytes/s, 0: none), CDN URL life
declare -A link=([A]="40ms 12500000 125000000 3s" [B]="100ms 5000000 0 10m")
for i in "${images[@]}"; do [ -n "${spec[$i]:-}" ] || { echo "unknown image $i (big8 small200 large1)"; exit 1; }; done
for p in "${profiles[@]}"; do [ -n "${link[$p]:-}" ] || { echo "unknown profile $p (A B)"; exit 1; }; done
has() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

echo "work directory: $work" >&2
go build -o "$bin/seed" ./bench/seed
go build -o "$bin/floor" ./bench/floor
go build -o "$bin/wanproxy" ./bench/wanproxy
go build -o "$bin/tlsfront" ./bench/tlsfront
go build -o "$bin/pull" ./examples/pull
if has crane && [ ! -x "$bin/crane" ]; then
  echo "installing crane v0.22.1 into $bin" >&2
  GOBIN=$bin go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
fi
if has ctr || has ctr-tuned; then install_containerd24 "$bin"; fi
# The CA every tool trusts for the TLS wires (Go's SSL_CERT_FILE; containerd's daemon
# is started with it).
ca=$work/ca
[ -s "$ca/ca.pem" ] || "$bin/tlsfront" -make-ca "$ca"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ctr_stop
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

# containerd 2.4.2 on a private socket, root and state (bench/lib.sh), restarted for
# each cell with its defaults or tuned; its content store is isolated per namespace,
# and every run's image is removed with --sync, so each run downloads everything.
ctrd=$work/containerd
sock=$ctrd/containerd.sock
ctrdpid=
ctr_up=""
ctr_start() { # tuned(0|1)
  [ "$ctr_up" = "$1" ] && return 0
  ctr_stop
  start_containerd24 "$ctrd" "$sock" "$bin" "$1" "$ca/ca.pem"
  ctr_up=$1
}
ctr_stop() {
  if [ -n "$ctrdpid" ]; then kill "$ctrdpid" 2>/dev/null || true; wait "$ctrdpid" 2>/dev/null || true; fi
  ctrdpid= ctr_up=""
}
ctr_clean() { # ref: remove the image, its content and snapshots, synchronously
  "$bin/ctr" -a "$sock" -n bench images rm --sync "$1" >/dev/null 2>&1 || true
  local left
  left=0
  [ ! -d "$ctrd/root/io.containerd.content.v1.content/blobs" ] ||
    left=$(find "$ctrd/root/io.containerd.content.v1.content/blobs" -type f | wc -l)
  [ "$left" -eq 0 ] || echo "warning: $left blobs left in containerd's store after removing $1" >&2
}

# The blob bodies the fronts wrote (bench/tlsfront logs every request to $reqlog): the
# blob bytes the registry or CDN sent, without the HTTP around them (headers, redirects,
# the manifest, TLS, HTTP/2 frames), and more than arrived when a client closed a request
# before its end. Only where a front stands: TLS wires, or the CDN.
reqlog=${TLSFRONT_LOG:-$work/requests.log}
export TLSFRONT_LOG=$reqlog
reqlog_lines() { if [ -f "$reqlog" ]; then wc -l <"$reqlog"; else echo 0; fi; }
reqlog_bodies() { # first line -> blob body bytes logged since, or - without a front
  if [ "$wire" = http ] && [ "$cdn" = off ]; then echo -; return; fi
  sleep 0.2 # the handlers of a killed run's requests log when they see it gone
  tail -n +$(($1 + 1)) "$reqlog" 2>/dev/null | awk '$4 !~ /^\// && / status=20[06] / {
    if (match($0, / bytes=[0-9]+ /)) n += substr($0, RSTART + 7, RLENGTH - 8) } END {print n + 0}'
}

# The proxies' counters: on SIGUSR1 each prints a line "... conns=N active=N up=B down=B";
# the registry's and (with the CDN) blob storage's are added up.
proxy_stat1() { # pid log
  local n
  n=$(wc -l <"$2")
  kill -USR1 "$1"
  for _ in $(seq 200); do [ "$(wc -l <"$2")" -gt "$n" ] && break; sleep 0.01; done
  local line
  line=$(tail -1 "$2" | sed -n 's/.*conns=\([0-9]*\).* down=\([0-9]*\).*/\1 \2/p')
  echo "${line:-0 0}"
}
proxy_stats() {
  local c d c2 d2
  read -r c d < <(proxy_stat1 "$ppid_" "$plog")
  if [ -n "$cpid_" ]; then
    read -r c2 d2 < <(proxy_stat1 "$cpid_" "$clog")
    c=$((c + c2)) d=$((d + d2))
  fi
  echo "$c $d"
}

# Each run's table is its own: rows of an earlier run (another build, another load) move to
# results.tsv.prev unless BENCH_APPEND=1 asks to add rounds to them.
results=$work/results.tsv
if [ "${BENCH_APPEND:-0}" = 1 ]; then
  [ -s "$results" ] && echo "appending to $results" >&2
else
  [ -s "$results" ] && mv "$results" "$results.prev"
fi
touch "$results"
runone() { # profile wire cdn image tool
  local prof=$1 wire=$2 cdn=$3 img=$4 tool=$5
  local out=$work/out/$tool ref=$preg/bench/$img:latest
  rm -rf "$work/out"
  mkdir -p "$work/out"
  sync
  local cmd pkflags=() ctrflags=() tls=() scheme=http
  if [ "$wire" = http ]; then
    pkflags=(--plain-http) ctrflags=(--plain-http) tls=(--src-tls-verify=false)
  else
    scheme=https
  fi
  case $tool in
    pullkit | pk-resume) cmd=("$bin/pull" "${pkflags[@]}" $PULL_FLAGS --output "$out" --format oci "$ref") ;;
    pk-snapshots) cmd=("$bin/pull" "${pkflags[@]}" $PULL_FLAGS --output "$out/layout" --snapshots "$out/snap" "$ref") ;;
    ranged) cmd=("$bin/floor" -ranged -scheme "$scheme" -range-size 4194304 -conns 16 -registry "$preg" -repo "bench/$img" -out "$out") ;;
    crane) cmd=("$bin/crane" pull --format oci "$ref" "$out"); [ "$wire" = http ] && cmd=("$bin/crane" pull --insecure --format oci "$ref" "$out") ;;
    skopeo) cmd=(skopeo copy -q "${tls[@]}" "docker://$ref" "oci:$out:latest") ;;
    ctr | ctr-tuned)
      if [ "$tool" = ctr ]; then ctr_start 0; else ctr_start 1; fi
      ctr_clean "$ref"
      cmd=("$bin/ctr" -a "$sock" -n bench images pull --snapshotter native "${ctrflags[@]}" "$ref") ;;
    *) echo "unknown tool $tool" >&2; exit 1 ;;
  esac
  local c0 d0 c1 d1 secs kb l0
  read -r c0 d0 < <(proxy_stats)
  l0=$(reqlog_lines)
  if [ "$tool" = pk-resume ]; then
    # Interrupted half way through the link limit (SIGINT: the pull keeps what it
    # received), then run again: the time is the second run's, the bytes both runs'.
    local half
    half=$(awk -v l="$(limit "$prof" "$img" "$wire" "$cdn")" 'BEGIN {printf "%.2f", l / 2}')
    SSL_CERT_FILE=$ca/ca.pem timeout -s INT "$half" "${cmd[@]}" >"$work/tool.log" 2>&1 || true
  fi
  if SSL_CERT_FILE=$ca/ca.pem /usr/bin/time -f '%e %M' -o "$work/time" "${cmd[@]}" >"$work/tool.log" 2>&1; then
    read -r secs kb < <(tail -1 "$work/time")
  else
    echo "$prof $wire $cdn $img $tool failed:" >&2
    tail -5 "$work/tool.log" >&2
    secs=fail kb=0
  fi
  read -r c1 d1 < <(proxy_stats)
  local body
  body=$(reqlog_bodies "$l0")
  case $tool in ctr*) ctr_clean "$ref" ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$prof" "$wire" "$cdn" "$img" "$tool" "$secs" "$kb" $((c1 - c0)) $((d1 - d0)) "$body" >>"$results"
  echo "  $prof $wire cdn=$cdn $img $tool: ${secs}s, $(awk -v d=$((d1 - d0)) -v b="${bytes[$img]}" 'BEGIN {printf "%.3f", d / b}') x the blob bytes$([ "$body" = - ] || awk -v d="$body" -v b="${bytes[$img]}" 'BEGIN {printf ", bodies %.4f x", d / b}')" >&2
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

# start_bg NAME CMD...: runs CMD in the background, its stdout's first line (an address)
# into $work/NAME.addr, its stderr into $work/NAME.log; sets bgpid and bgaddr.
start_bg() {
  local name=$1
  shift
  rm -f "$work/$name.addr"
  "$@" >"$work/$name.addr" 2>"$work/$name.log" &
  bgpid=$!
  pids+=($bgpid)
  for _ in $(seq 100); do [ -s "$work/$name.addr" ] && break; sleep 0.05; done
  bgaddr=$(head -1 "$work/$name.addr" 2>/dev/null || true)
  [ -n "$bgaddr" ] || { echo "$name did not start:"; cat "$work/$name.log"; exit 1; }
}
stop_bg() {
  local p
  for p in "$@"; do
    if [ -n "$p" ]; then
      kill "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
}

# limit is defined below; wan.sh needs it for pk-resume too.
# limit PROFILE IMAGE WIRE CDN: what a client with 16 connections could do (bench/README.md).
# The round trips before the first blob byte that no client avoids: TCP and the manifest
# (2), the TLS handshake (1, TLS 1.3) on a TLS wire, and with the CDN the registry's
# redirect, then TCP (and TLS) to the CDN's host, which is known only from the redirect.
# Then the larger of the bytes at 16 connections' rate plus one round trip, and what
# the 16 connections carry on average: each request's round trip (two with the CDN: the
# registry's redirect, then the CDN's answer) and its bytes at one connection's rate.
limit() { # profile image wire cdn
  read -r rtt crate trate _ <<<"${link[$1]}"
  awk -v rtt="${rtt%ms}" -v c="$crate" -v t="$trate" -v b="${bytes[$2]}" -v n="${blobs[$2]}" \
    -v tls="$([ "$3" = http ] && echo 0 || echo 1)" -v cdn="$([ "$4" = on ] && echo 1 || echo 0)" 'BEGIN {
    r = rtt / 1000; rate = 16 * c; if (t > 0 && t < rate) rate = t
    setup = (2 + tls + cdn * (2 + tls)) * r
    x = b / rate + r; y = (n * (1 + cdn) * r + b / c) / 16
    printf "%.3f", setup + (x > y ? x : y) }'
}
# limit_v1 PROFILE IMAGE: the limit as this script defined it before the TLS wires and the
# CDN (kept so that older tables can be compared): round trips only, 16 at a time.
limit_v1() { # profile image
  read -r rtt crate trate _ <<<"${link[$1]}"
  awk -v rtt="${rtt%ms}" -v c="$crate" -v t="$trate" -v b="${bytes[$2]}" -v n="${blobs[$2]}" 'BEGIN {
    r = rtt / 1000; rate = 16 * c; if (t > 0 && t < rate) rate = t
    x = b / rate + r; y = int((n + 15) / 16) * r
    printf "%.3f", 2 * r + (x > y ? x : y) }'
}

t_start=$(date +%s)
row=0
checkoff=()
echo "load at the start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$work/load.txt" >&2
for prof in "${profiles[@]}"; do
  read -r rtt crate trate ttl <<<"${link[$prof]}"
  pflags=(-rtt "$rtt" -conn-rate "$crate" -total-rate "$trate")
  echo "profile $prof: rtt $rtt, $crate B/s per connection, total ${trate/#0/no cap}, CDN URLs live $ttl" >&2
  if ! "$bin/wanproxy" -check "${pflags[@]}" | tee "$work/check-$prof.txt" >&2; then
    echo "warning: the proxy's self-check for $prof is off by more than 10% (a busy machine?)" >&2
    checkoff+=("$prof")
  fi
  for wire in "${wires[@]}"; do
    for cdn in "${cdns[@]}"; do
      tlsf=() cpid_="" cdnpid="" frontpid=""
      case $wire in
        h1) tlsf=(-tls "$ca" -h2=false) ;;
        h2) tlsf=(-tls "$ca" -h2=true) ;;
      esac
      scheme=http
      [ "$wire" = http ] || scheme=https
      upstream=$reg
      if [ "$cdn" = on ]; then
        # Blob storage: its own front (checks the signed URLs) on its own shaped link.
        start_bg cdnfront "$bin/tlsfront" -serve-cdn -listen 127.0.0.1:0 -upstream "$reg" "${tlsf[@]}"
        cdnpid=$bgpid
        clog=$work/proxy-cdn.log
        start_bg proxy-cdn "$bin/wanproxy" -listen 127.0.0.1:0 -upstream "$bgaddr" "${pflags[@]}"
        cpid_=$bgpid
        pcdn=$bgaddr
        copaque=()
        [ "${CDN_OPAQUE:-0}" = 1 ] && copaque=(-opaque)
        start_bg front "$bin/tlsfront" -listen 127.0.0.1:0 -upstream "$reg" "${tlsf[@]}" -cdn "$scheme://$pcdn" -ttl "$ttl" "${copaque[@]}"
        frontpid=$bgpid upstream=$bgaddr
      elif [ "$wire" != http ]; then
        start_bg front "$bin/tlsfront" -listen 127.0.0.1:0 -upstream "$reg" "${tlsf[@]}"
        frontpid=$bgpid upstream=$bgaddr
      fi
      plog=$work/proxy-$prof.log
      start_bg "proxy-$prof" "$bin/wanproxy" -listen 127.0.0.1:0 -upstream "$upstream" "${pflags[@]}"
      ppid_=$bgpid preg=$bgaddr
      plog=$work/proxy-$prof.log
      curl -fs -o /dev/null --cacert "$ca/ca.pem" -w "$prof $wire cdn=$cdn: GET /v2/ on a new connection %{time_total} s\n" "$scheme://$preg/v2/" >&2 ||
        echo "warning: GET /v2/ through the proxy failed" >&2
      for img in "${images[@]}"; do
        for r in $(seq "$ROUNDS"); do
          for k in $(order $((row % nt))); do runone "$prof" "$wire" "$cdn" "$img" "${tools[$k]}"; done
          row=$((row + 1))
        done
      done
      ctr_stop
      stop_bg "$ppid_" "$cpid_" "$frontpid" "$cdnpid"
      cpid_=""
    done
  done
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$work/load.txt" >&2
t_total=$(($(date +%s) - t_start))

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { # profile wire cdn image tool column -> values of the successful runs
  awk -F'\t' -v p="$1" -v w="$2" -v c="$3" -v i="$4" -v t="$5" -v k="$6" '$1==p && $2==w && $3==c && $4==i && $5==t && $6!="fail" {print $k}' "$results"
}
peers=(ctr ctr-tuned crane skopeo)
printf '\n%-8s %-4s %-4s %-4s %-12s %8s %8s %8s %8s %6s %8s %8s %8s\n' image link wire cdn tool median_s vs_limit vs_v1 vs_best conns bytes_x body_x peakRSS_MiB
: >"$work/summary.txt"
declare -A med bx bb
for img in "${images[@]}"; do
  for prof in "${profiles[@]}"; do
    lim1=$(limit_v1 "$prof" "$img")
    for wire in "${wires[@]}"; do
      for cdn in "${cdns[@]}"; do
        lim=$(limit "$prof" "$img" "$wire" "$cdn")
        best=nan bestname=none
        for t in "${peers[@]}"; do
          has "$t" || continue
          m=$(col "$prof" "$wire" "$cdn" "$img" "$t" 6 | median)
          [ "$m" = nan ] && continue
          if [ "$best" = nan ] || awk -v a="$m" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$m bestname=$t; fi
        done
        for t in "${tools[@]}"; do
          m=$(col "$prof" "$wire" "$cdn" "$img" "$t" 6 | median)
          conns=$(col "$prof" "$wire" "$cdn" "$img" "$t" 8 | median)
          down=$(col "$prof" "$wire" "$cdn" "$img" "$t" 9 | median)
          rss=$(col "$prof" "$wire" "$cdn" "$img" "$t" 7 | sort -g | tail -1)
          x=$(awk -v d="$down" -v b="${bytes[$img]}" 'BEGIN {printf "%.3f", d / b}')
          # The largest of the runs: the figure a target on every run is held to.
          body=$(col "$prof" "$wire" "$cdn" "$img" "$t" 10 | awk '$1 != "-"' | sort -g | tail -1)
          y=-
          [ -z "$body" ] || y=$(awk -v d="$body" -v b="${bytes[$img]}" 'BEGIN {printf "%.4f", d / b}')
          med[$prof/$wire/$cdn/$img/$t]=$m bx[$prof/$wire/$cdn/$img/$t]=$x bb[$prof/$wire/$cdn/$img/$t]=$y
          awk -v i="$img" -v p="$prof" -v w="$wire" -v c="$cdn" -v t="$t" -v m="$m" -v l="$lim" -v l1="$lim1" -v b="$best" \
            -v n="$conns" -v x="$x" -v y="$y" -v r="${rss:-0}" 'BEGIN {
            printf "%-8s %-4s %-4s %-4s %-12s %8.2f %8.2f %8.2f %8.2f %6s %8s %8s %8.1f\n", i, p, w, c, t, m, m/l, m/l1, m/b, n, x, y, r/1024 }'
        done
        echo "$img $prof $wire cdn=$cdn: link limit $lim s (before TLS and the CDN were counted: $lim1 s), best peer $bestname $best s" >>"$work/summary.txt"
      done
    done
  done
done
echo
cat "$work/summary.txt"
# The same medians as a matrix, in Markdown: seconds (bytes on the wire / blob bytes;
# where a front counts them, the most blob body bytes it served in a run / blob bytes).
echo
printf '| image | link | wire | CDN |'; for t in "${tools[@]}"; do printf ' %s |' "$t"; done; printf ' link limit |\n|---|---|---|---|'
for _ in "${tools[@]}"; do printf -- '---|'; done; printf -- '---|\n'
for img in "${images[@]}"; do
  for prof in "${profiles[@]}"; do
    for wire in "${wires[@]}"; do
      for cdn in "${cdns[@]}"; do
        printf '| %s | %s | %s | %s |' "$img" "$prof" "$wire" "$cdn"
        for t in "${tools[@]}"; do
          k=$prof/$wire/$cdn/$img/$t
          if [ "${bb[$k]}" = - ]; then printf ' %s (%s) |' "${med[$k]}" "${bx[$k]}"; else printf ' %s (%s; %s) |' "${med[$k]}" "${bx[$k]}" "${bb[$k]}"; fi
        done
        printf ' %s |\n' "$(limit "$prof" "$img" "$wire" "$cdn")"
      done
    done
  done
done
echo
[ ${#checkoff[@]} -eq 0 ] || echo "WARNING: the proxy's self-check was off by more than 10% for ${checkoff[*]}: the machine may have been too busy for the emulation; see $work/check-*.txt"
echo "($(cat "$work/load.txt" | tr '\n' ';') rounds: $ROUNDS, PULL_FLAGS: '${PULL_FLAGS}', measured in $t_total s; best peer among: ${peers[*]}; bytes_x: bytes the proxies delivered / the image's blob bytes (median); body_x: blob body bytes the fronts served / blob bytes (the largest run; - where no front stands: plain HTTP without the CDN); peak RSS of ctr is the client's, containerd writes; raw: $results)"
