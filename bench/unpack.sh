#!/usr/bin/env bash
# Unpack benchmark (issues 13 and 20): pull + unpack of realistic images, pullkit against
# containerd 2.4 (built from its module at run time, transfer-service pull into overlayfs
# snapshots, tuned for large images and with its defaults), skopeo copy + umoci unpack,
# and (optionally) crane export | tar -x, in one alternating run against Debian's
# docker-registry on loopback. Beside them: each image's machine floor, and the serial
# and parallel inflate of the large image's layer.
#
# The images are built by bench/mkimage from directory trees of this machine (gzip at the
# default level), and share their base layer:
#   app: base (/usr/share without package-lists) + go (/usr/local/go) + include
#        (/usr/include) + python (/usr/lib/python3*) + top (/usr/lib/git-core, and a
#        whiteout of /usr/share/doc)
#   lib: base + lib (/usr/lib/x86_64-linux-gnu)
#   big: one layer of /usr/lib (over 1 GiB of gzip: shared libraries, Python, compilers)
# Every round, each tool (in a balanced order) pulls each image from a clean state
# (everything it wrote before removed, containerd's images, content and snapshots too), so
# every run downloads and unpacks everything. The snapshot tools (pullkit --snapshots,
# ctr24-*) also pull lib right after app into the same state: the row "lib+app", where the
# base's snapshot is reused.
#
# The machine floor of an image (tool "floor", run in the rounds like the others): the CPU
# time of inflating its layers with klauspost's gzip (bench/inflate -mode klauspost) plus
# the CPU time of GNU tar -x of its uncompressed layers into a fresh directory on the
# scratch file system, divided by the number of cores. "inflate-serial" and
# "inflate-parallel" time klauspost's serial reader and pullkit's parallel one
# (internal/inflate) on the image's layers, in memory, wall seconds; "inflate-inorder" the
# same reader with no workers (its own decoder in order, what an unpack on two cores uses).
#
# The outputs go to a scratch file system: by default a journaled ext4 made in a sparse
# file under the work directory and loop-mounted (SCRATCH=DIR uses DIR instead). The
# reason is the host's own: on ext4 without a journal (this VM's root), inode allocation
# skips every inode deleted in the last minutes (fs/ext4/ialloc.c, recently_deleted),
# scanning them one by one, so a run that follows the removal of the last run's 100k files
# spends most of its time in the kernel: 40k small files took 24 s instead of 1.3 s there.
#
# Usage: bench/unpack.sh [ROUNDS]   (default 5)
#   TOOLS="pk-unpack pk-snapshots pk-download ctr24-tuned ctr24-default skopeo-umoci floor inflate-serial inflate-parallel"
#                                  (also: pk-local-unpack pk-local-snapshots crane)
#   IMAGES="app lib big"           images to run
#   BENCH_DIR=DIR                  keep the work directory (registry, layers, crane) between runs
#   PULL_FLAGS="--jobs 8"          flags added to every pullkit pull
#   PULL_BIN=PATH                  a pull binary to use instead of building ./examples/pull
#   SCRATCH=DIR                    write the outputs in DIR (default: a loop-mounted ext4)
#   SCRATCH_SIZE=60G               size of that ext4 (sparse)
# Everything listens on 127.0.0.1 only; containerd runs on a private socket and root.
# containerd 2.4.2 and ctr are built with go install into the work directory's bin/
# (CGO_ENABLED=0, tags no_btrfs no_devmapper no_zfs) the first time.
set -euo pipefail
trap 'echo "unpack.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
PULL_FLAGS=${PULL_FLAGS:-}
work=${BENCH_DIR:-$(mktemp -d /tmp/pullkit-unpack.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
bin=$work/bin
mkdir -p "$bin" "$work/registry" "$work/layers"
# Loopback only: no proxy from the environment for any tool.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

need() { command -v "$1" >/dev/null || { echo "needs $1 ($2)"; exit 1; }; }
need docker-registry "apt-get install docker-registry"
need skopeo "apt-get install skopeo"
need umoci "apt-get install umoci"
need jq "apt-get install jq"
need curl "apt-get install curl"
need python3 "apt-get install python3"
[ -x /usr/bin/time ] || { echo "needs GNU time for wall time and peak RSS (apt-get install time)"; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "needs root: containerd, umoci and tar keep ownership, as an engine does"; exit 1; }

read -r -a tools <<<"${TOOLS:-pk-unpack pk-snapshots pk-download ctr24-tuned ctr24-default skopeo-umoci floor inflate-serial inflate-parallel}"
read -r -a images <<<"${IMAGES:-app lib big}"
has() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

declare -A layerspec=(
  [base]='/usr/share,!/usr/share/package-lists'
  [go]='/usr/local/go'
  [include]='/usr/include'
  [python]='/usr/lib/python3,/usr/lib/python3.11'
  [top]='/usr/lib/git-core,-/usr/share/doc'
  [lib]='/usr/lib/x86_64-linux-gnu'
  [usrlib]='/usr/lib'
)
declare -A imagelayers=([app]="base go include python top" [lib]="base lib" [big]="usrlib")
for i in "${images[@]}"; do [ -n "${imagelayers[$i]:-}" ] || { echo "unknown image $i (app lib big)"; exit 1; }; done

echo "work directory: $work" >&2
go build -o "$bin/mkimage" ./bench/mkimage
go build -o "$bin/inflate" ./bench/inflate
if has ctr24-tuned || has ctr24-default; then install_containerd24 "$bin"; fi
if [ -n "${PULL_BIN:-}" ]; then cp "$PULL_BIN" "$bin/pull"; else go build -o "$bin/pull" ./examples/pull; fi
if has crane && [ ! -x "$bin/crane" ]; then
  echo "installing crane v0.22.1 into $bin" >&2
  GOBIN=$bin go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
fi

pids=()
loopdev=
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "${out:-$work/out}"
  if [ -n "$loopdev" ]; then
    umount "$work/scratch" || true
    losetup -d "$loopdev" || true
    rm -f "$work/scratch.img"
  fi
}
trap cleanup EXIT

# The scratch file system the tools write to.
if [ -n "${SCRATCH:-}" ]; then
  scratch=$(mkdir -p "$SCRATCH" && cd "$SCRATCH" && pwd)
else
  need mkfs.ext4 "apt-get install e2fsprogs"
  need losetup "apt-get install mount"
  scratch=$work/scratch
  mkdir -p "$scratch"
  mountpoint -q "$scratch" && { echo "$scratch is mounted already (a run that died?): umount it first"; exit 1; }
  rm -f "$work/scratch.img"
  truncate -s "${SCRATCH_SIZE:-60G}" "$work/scratch.img"
  mkfs.ext4 -q -F "$work/scratch.img"
  # Direct I/O to the image, so its pages are not cached twice.
  loopdev=$(losetup -f --show --direct-io=on "$work/scratch.img")
  mount "$loopdev" "$scratch"
fi
out=$scratch/out
scratchfs="$(findmnt -n -o FSTYPE,SOURCE --target "$scratch" | tr -s ' ' ' ')"

start_registry "$work"
pids+=($regpid)
accept='application/vnd.docker.distribution.manifest.v2+json'

declare -A mb nlayers
for img in "${images[@]}"; do
  args=()
  for l in ${imagelayers[$img]}; do args+=(-layer "$l=${layerspec[$l]}"); done
  # mkimage reuses the layer files it built (BENCH_DIR) and pushes what the registry lacks.
  "$bin/mkimage" -ref "$reg/bench/$img:latest" -cache "$work/layers" "${args[@]}"
  m=$(curl -fs -H "Accept: $accept" "http://$reg/v2/bench/$img/manifests/latest")
  mb[$img]=$(jq '([.layers[].size] | add) / 1048576 | floor' <<<"$m")
  nlayers[$img]=$(jq '.layers | length' <<<"$m")
done
base_digest=$(curl -fs -H "Accept: $accept" "http://$reg/v2/bench/${images[0]}/manifests/latest" | jq -r '.layers[0].digest')

# The local store for "unpack alone": a layout that holds every blob of the images, so a
# pull into it downloads nothing (the manifest is still asked for) and unpacks from disk.
seeded=$work/seeded
if has pk-local-unpack || has pk-local-snapshots; then
  for img in "${images[@]}"; do "$bin/pull" --plain-http --output "$seeded" "$reg/bench/$img:latest" >/dev/null; done
fi

# containerd 2.4 on private sockets, roots and state, one daemon tuned and one with its
# defaults (see start_containerd24 in lib.sh): overlayfs snapshots, content isolated per
# namespace. Every run ends with the images removed with --sync (content and snapshots
# collected), and the script checks that nothing is left, so every run downloads and
# unpacks everything.
declare -A ctrsock
for mode in tuned default; do
  if has ctr24-$mode; then
    ctrsock[$mode]=$work/containerd-$mode.sock
    tuned=0; [ "$mode" = tuned ] && tuned=1
    start_containerd24 "$scratch/containerd-$mode" "${ctrsock[$mode]}" "$bin" "$tuned" "" overlayfs
    pids+=($ctrdpid)
    eval "ctrdpid_$mode=$ctrdpid"
  fi
done
ctr_clean() { # mode: remove every image of the bench namespace, its content and snapshots
  local mode=$1 sock=${ctrsock[$1]} r left
  for r in $("$bin/ctr" -a "$sock" -n bench images ls -q 2>/dev/null); do
    "$bin/ctr" -a "$sock" -n bench images rm --sync "$r" >/dev/null 2>&1 || true
  done
  left=$("$bin/ctr" -a "$sock" -n bench snapshots --snapshotter overlayfs ls 2>/dev/null | tail -n +2 | wc -l)
  [ "$left" -eq 0 ] || echo "warning: $left snapshots left in containerd ($mode) after the cleanup" >&2
  left=0
  local blobs=$scratch/containerd-$mode/root/io.containerd.content.v1.content/blobs
  [ ! -d "$blobs" ] || left=$(find "$blobs" -type f | wc -l)
  [ "$left" -eq 0 ] || echo "warning: $left blobs left in containerd's ($mode) store after the cleanup" >&2
}

# What the floor and the inflate tools read: each image's layer files (gzip, as pushed)
# and, for tar -x, their uncompressed tars, on the scratch file system.
declare -A layerfiles
if has floor || has inflate-serial || has inflate-parallel || has inflate-inorder; then
  mkdir -p "$scratch/tars"
  for img in "${images[@]}"; do
    for l in ${imagelayers[$img]}; do
      layerfiles[$img]+=" $work/layers/$l.tar.gz"
      [ -s "$scratch/tars/$l.tar" ] || gzip -dc "$work/layers/$l.tar.gz" >"$scratch/tars/$l.tar"
    done
  done
fi
# floor IMAGE DIR: prints the CPU seconds of inflating the image's layers (klauspost) and
# of tar -x of them into DIR, one after the other; the floor is their sum over the cores.
floor_run() {
  local img=$1 dir=$2 inflate_cpu tar_cpu l
  inflate_cpu=$("$bin/inflate" -mode klauspost ${layerfiles[$img]} | awk '{print $3}')
  mkdir -p "$dir"
  tar_cpu=0
  for l in ${imagelayers[$img]}; do
    sync
    /usr/bin/time -f '%U %S' -o "$work/tar.time" tar -x --same-owner -p -f "$scratch/tars/$l.tar" -C "$dir"
    tar_cpu=$(awk -v a="$tar_cpu" '{print a + $1 + $2}' "$work/tar.time")
  done
  awk -v i="$inflate_cpu" -v t="$tar_cpu" -v n="$(nproc)" 'BEGIN {printf "%.3f %.3f %.3f\n", i, t, (i + t) / n}'
}

results=$work/results.tsv
: >"$results"
notes=$work/notes.txt
: >"$notes"
# timed LABEL CMD...: runs CMD under GNU time, appends "secs kb" to $work/times.
timed() {
  local label=$1
  shift
  if /usr/bin/time -f '%e %M' -o "$work/time" "$@" >"$work/tool.log" 2>&1; then
    tail -1 "$work/time" >>"$work/times"
  else
    echo "$label failed:" >&2
    tail -5 "$work/tool.log" >&2
    echo "fail 0" >>"$work/times"
  fi
}
runone() { # round image tool [row]: row names the result (default: the image)
  local round=$1 img=$2 tool=$3 row=${4:-$2}
  local out=$out/$tool ref=$reg/bench/$img:latest
  mkdir -p "$out"
  : >"$work/times"
  sync
  case $tool in
    pk-unpack) timed "$tool" "$bin/pull" --plain-http $PULL_FLAGS --unpack "$out/rootfs-$img" "$ref" ;;
    pk-snapshots) timed "$tool" "$bin/pull" --plain-http $PULL_FLAGS --snapshots "$out/snapshots" "$ref" ;;
    pk-download) timed "$tool" "$bin/pull" --plain-http $PULL_FLAGS --output "$out/layout-$img" "$ref" ;;
    pk-local-unpack) timed "$tool" "$bin/pull" --plain-http $PULL_FLAGS --output "$seeded" --unpack "$out/rootfs-$img" "$ref" ;;
    pk-local-snapshots) timed "$tool" "$bin/pull" --plain-http $PULL_FLAGS --output "$seeded" --snapshots "$out/snapshots" "$ref" ;;
    ctr24-tuned | ctr24-default)
      timed "$tool" "$bin/ctr" -a "${ctrsock[${tool#ctr24-}]}" -n bench images pull --plain-http --snapshotter overlayfs "$ref" ;;
    floor)
      # Not a wall time: the floor's seconds, from CPU times (see the header).
      read -r fin ft fl < <(floor_run "$img" "$out/floor-$img")
      echo "$fl 0" >>"$work/times"
      echo "  floor $img: inflate ${fin}s + tar ${ft}s of CPU" >&2
      printf '%s\t%s\tinflate %s tar %s\n' "$round" "$img" "$fin" "$ft" >>"$work/floors.tsv" ;;
    inflate-serial) timed "$tool" "$bin/inflate" -mode klauspost ${layerfiles[$img]} ;;
    inflate-parallel) timed "$tool" "$bin/inflate" -mode parallel ${layerfiles[$img]} ;;
    inflate-inorder) timed "$tool" "$bin/inflate" -mode inorder ${layerfiles[$img]} ;;
    skopeo-umoci)
      timed skopeo skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$out/oci-$img:latest"
      timed umoci umoci unpack --image "$out/oci-$img:latest" "$out/bundle-$img" ;;
    crane)
      mkdir -p "$out/rootfs-$img"
      timed "$tool" bash -o pipefail -c '"$1" export --insecure "$2" - | tar -x -C "$3"' _ "$bin/crane" "$ref" "$out/rootfs-$img" ;;
    *) echo "unknown tool $tool" >&2; exit 1 ;;
  esac
  case $tool in pk-snapshots | pk-local-snapshots)
    sed -n 's/.*written *//p' "$work/tool.log" | sed "s/^/  $row: /" >>"$notes" ;;
  esac
  # The sum of the wall times, the largest peak RSS; "fail" when a step failed.
  local secs kb
  read -r secs kb < <(awk '$1=="fail"{f=1} {s+=$1; if ($2>m) m=$2} END {if (f) print "fail", m; else printf "%.2f %d\n", s, m}' "$work/times")
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$row" "$tool" "$secs" "$kb" >>"$results"
  echo "  round $round $row $tool: ${secs}s $((kb / 1024)) MiB" >&2
}
clean() { # tool: remove what it wrote
  rm -rf "$out"
  case $1 in ctr24-*) ctr_clean "${1#ctr24-}" ;; esac
  sync
}
reuses() { case $1 in pk-snapshots | pk-local-snapshots | ctr24-*) return 0 ;; esac; return 1; }
runtool() { # round tool: each image from a clean state, then lib after app (snapshot tools)
  local r=$1 t=$2 img
  for img in "${images[@]}"; do
    runone "$r" "$img" "$t"
    if [ "$img" = app ] && has_image lib && reuses "$t"; then runone "$r" lib "$t" lib+app; fi
    clean "$t"
  done
}
has_image() { local i; for i in "${images[@]}"; do [ "$i" = "$1" ] && return 0; done; return 1; }

# The order of the tools changes every round along a Williams design (wan.sh's): over n
# rounds each tool runs once in each position and right after each other tool once.
nt=${#tools[@]}
order() { # row -> indices
  local row=$1 j k=0 seq=()
  for ((j = 0; j < nt; j++)); do
    if ((j == 0)); then k=0; elif ((j % 2)); then k=$(((j + 1) / 2)); else k=$((nt - j / 2)); fi
    seq+=($(((k + row) % nt)))
  done
  echo "${seq[@]}"
}

for mode in "${!ctrsock[@]}"; do ctr_clean "$mode"; done
: >"$work/floors.tsv"
loads=("start: $(cut -d' ' -f1-3 /proc/loadavg)")
t_start=$(date +%s)
for r in $(seq "$ROUNDS"); do
  for k in $(order $(((r - 1) % nt))); do runtool "$r" "${tools[$k]}"; done
  loads+=("round $r: $(cut -d' ' -f1-3 /proc/loadavg)")
done
t_total=$(($(date +%s) - t_start))

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { # image tool column -> values of the successful runs
  awk -F'\t' -v i="$1" -v t="$2" -v c="$3" '$2==i && $3==t && $4!="fail" {print $c}' "$results"
}
declare -A med
rows=("${images[@]}")
if has_image app && has_image lib; then rows+=(lib+app); fi
printf '\n%-7s %-19s %8s %8s %8s %10s\n' image tool median_s min_s max_s peakRSS_MiB
for img in "${rows[@]}"; do
  for t in "${tools[@]}"; do
    [ "$img" != lib+app ] || reuses "$t" || continue
    m=$(col "$img" "$t" 4 | median)
    med[$img/$t]=$m
    lo=$(col "$img" "$t" 4 | sort -g | head -1)
    hi=$(col "$img" "$t" 4 | sort -g | tail -1)
    rss=$(col "$img" "$t" 5 | sort -g | tail -1)
    fails=$(awk -F'\t' -v i="$img" -v t="$t" '$2==i && $3==t && $4=="fail"' "$results" | wc -l)
    awk -v i="$img" -v t="$t" -v m="$m" -v lo="${lo:-nan}" -v hi="${hi:-nan}" -v r="${rss:-0}" -v f="$fails" 'BEGIN {
      printf "%-7s %-19s %8.2f %8.2f %8.2f %10.1f%s\n", i, t, m, lo, hi, r/1024, (f > 0 ? "  (" f " failed)" : "") }'
  done
done

ratio() { # label a b [c]: a / b, or a / max(b, c)
  local label=$1 a=${med[$2]:-nan} b=${med[$3]:-nan} c=${4:+${med[$4]:-nan}}
  [ "$a" != nan ] && [ "$b" != nan ] && [ "${c:-0}" != nan ] || return 0
  awk -v l="$label" -v a="$a" -v b="$b" -v c="${c:-0}" 'BEGIN {d = (c > b ? c : b); printf "  %-52s %6.2f\n", l, a / d}'
}
echo
echo "ratios of medians (targets: <= 0.40 of containerd 2.4 tuned, <= 1.25 of the floor; parallel inflate >= 1.8 x serial)"
for img in "${images[@]}"; do
  echo " $img (${nlayers[$img]} layers, ${mb[$img]} MiB of gzip):"
  ratio "pk-unpack / ctr24-tuned" "$img/pk-unpack" "$img/ctr24-tuned"
  ratio "pk-snapshots / ctr24-tuned" "$img/pk-snapshots" "$img/ctr24-tuned"
  ratio "pk-unpack / ctr24-default" "$img/pk-unpack" "$img/ctr24-default"
  ratio "pk-snapshots / ctr24-default" "$img/pk-snapshots" "$img/ctr24-default"
  ratio "pk-unpack / floor" "$img/pk-unpack" "$img/floor"
  ratio "pk-snapshots / floor" "$img/pk-snapshots" "$img/floor"
  ratio "inflate-serial / inflate-parallel (speed-up)" "$img/inflate-serial" "$img/inflate-parallel"
  ratio "inflate-serial / inflate-inorder (speed-up)" "$img/inflate-serial" "$img/inflate-inorder"
  ratio "pk-unpack / skopeo-umoci" "$img/pk-unpack" "$img/skopeo-umoci"
  ratio "pk-unpack / crane" "$img/pk-unpack" "$img/crane"
  ratio "pk-unpack / max(pk-download, pk-local-unpack)" "$img/pk-unpack" "$img/pk-download" "$img/pk-local-unpack"
  ratio "pk-snapshots / max(pk-download, pk-local-snapshots)" "$img/pk-snapshots" "$img/pk-download" "$img/pk-local-snapshots"
done
if [ -s "$notes" ]; then
  echo
  echo "snapshots (pullkit's own lines; lib+app is lib pulled after app into the same directory, base $base_digest):"
  sort "$notes" | uniq -c | sed 's/^ */  /'
fi
# The medians as a Markdown matrix.
echo
printf '| image |'; for t in "${tools[@]}"; do printf ' %s |' "$t"; done; printf '\n|---|'
for _ in "${tools[@]}"; do printf -- '---|'; done; echo
for img in "${rows[@]}"; do
  printf '| %s |' "$img"
  for t in "${tools[@]}"; do printf ' %s |' "${med[$img/$t]:--}"; done
  echo
done
echo
for mode in "${!ctrsock[@]}"; do
  p=$(eval echo "\$ctrdpid_$mode")
  [ -r "/proc/$p/status" ] && echo "containerd ($mode) peak RSS over the run: $(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$p/status")"
done
if [ -s "$work/floors.tsv" ]; then
  echo "floor CPU seconds per round (inflate with klauspost, tar -x): $(awk -F'\t' '{printf "%s r%s %s; ", $2, $1, $3}' "$work/floors.tsv")"
fi
echo "load average (1, 5, 15 min): ${loads[*]}"
echo "(rounds: $ROUNDS, PULL_FLAGS: '${PULL_FLAGS}', measured in $t_total s on $(nproc) cores, outputs on $scratchfs; times are wall seconds, skopeo-umoci the sum of the two, floor the CPU floor; peak RSS of ctr24-* is the client's (containerd unpacks), of skopeo-umoci and crane the larger process's; raw: $results)"
