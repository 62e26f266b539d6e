# Sourced by the bench scripts: the servers they start, on loopback only.

# start_registry DIR starts Debian's docker-registry on a free loopback port, its storage
# in DIR/registry (kept between runs with BENCH_DIR), and waits until it answers. It sets
# reg (host:port) and regpid.
start_registry() {
  local work=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  regpid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  curl -fs -o /dev/null "http://127.0.0.1:$port/v2/" || { echo "docker-registry did not start:"; tail "$work/registry.log"; exit 1; }
  reg=127.0.0.1:$port
}

# start_containerd DIR SOCK starts containerd 1.6 with its
# root, state and config under DIR, listening on the private socket SOCK (and SOCK.ttrpc),
# with nothing that needs more than a content store and the native snapshotter: no CRI
# (which would pull on its own), no other snapshotters, no tracing, and content isolated
# per namespace. It waits until ctr answers, sets ctrdpid, and exits the script if
# containerd does not start.
start_containerd() {
  local ctrd=$1 sock=$2
  rm -rf "$ctrd"
  mkdir -p "$ctrd"
  cat >"$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
TOML
  containerd --config "$ctrd/config.toml" >"$ctrd/log" 2>&1 &
  ctrdpid=$!
  for _ in $(seq 100); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr -a "$sock" version >/dev/null || { echo "containerd did not start:"; tail "$ctrd/log"; exit 1; }
}

# containerd 2.4 (issue 19): the peer engines compare with. install_containerd24 BIN
# builds cmd/containerd and cmd/ctr of github.com/containerd/containerd/v2 at v2.4.2 from
# the Go module proxy into BIN (once; nothing built is committed). start_containerd24 DIR
# SOCK BIN TUNED [CAFILE] starts it with its root, state and config under DIR on the
# private socket SOCK: no CRI, the native snapshotter for the transfer service's unpack,
# content isolated per namespace; TUNED=1 sets the transfer service as containerd's docs
# suggest for large images (max_concurrent_downloads = 16, concurrent_layer_fetch_buffer
# = 8388608, max_concurrent_unpacks = 2), TUNED=0 keeps its defaults (3, off, 1). CAFILE,
# when given, is the CA its transfer service trusts (SSL_CERT_FILE). It sets ctrdpid.
install_containerd24() {
  local bin=$1
  [ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] && "$bin/containerd" --version 2>/dev/null | grep -q ' 2\.4\.2' && return 0
  echo "building containerd and ctr v2.4.2 into $bin" >&2
  GOBIN=$bin CGO_ENABLED=0 GOFLAGS=-mod=mod go install -tags "no_btrfs no_devmapper no_zfs" \
    github.com/containerd/containerd/v2/cmd/containerd@v2.4.2 github.com/containerd/containerd/v2/cmd/ctr@v2.4.2
}

start_containerd24() {
  local ctrd=$1 sock=$2 bin=$3 tuned=$4 ca=${5:-}
  rm -rf "$ctrd"
  mkdir -p "$ctrd"
  local xfer=""
  if [ "$tuned" = 1 ]; then
    xfer='  max_concurrent_downloads = 16
  concurrent_layer_fetch_buffer = 8388608
  max_concurrent_unpacks = 2'
  fi
  cat >"$ctrd/config.toml" <<TOML
version = 3
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
[plugins."io.containerd.transfer.v1.local"]
$xfer
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
TOML
  if [ -n "$ca" ]; then
    SSL_CERT_FILE=$ca "$bin/containerd" --config "$ctrd/config.toml" >"$ctrd/log" 2>&1 &
  else
    "$bin/containerd" --config "$ctrd/config.toml" >"$ctrd/log" 2>&1 &
  fi
  ctrdpid=$!
  for _ in $(seq 100); do "$bin/ctr" -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/ctr" -a "$sock" version >/dev/null || { echo "containerd 2.4 did not start:"; tail "$ctrd/log"; exit 1; }
}

# start_containerd24_overlay BIN DIR SOCK tuned|default starts containerd 2.4 (from BIN,
# built by install_containerd24) with its
# root, state and config under DIR, on the private socket SOCK, for bench/unpack.sh:
# overlayfs snapshots (where start_containerd24 unpacks into native ones), no
# CRI (which would pull on its own), content isolated per namespace. "tuned" sets the
# transfer service's knobs its documentation suggests for large images (they live in
# [plugins.'io.containerd.transfer.v1.local'] in 2.4's config schema):
# max_concurrent_downloads = 16, concurrent_layer_fetch_buffer = 8 MiB (parallel
# ranged layer fetch), max_concurrent_unpacks = 2; "default" leaves them at 3, off and 1.
# It waits until ctr answers, sets ctrd24pid, and exits the script if containerd does
# not start.
start_containerd24_overlay() {
  local bin=$1 ctrd=$2 sock=$3 mode=$4 tune=
  rm -rf "$ctrd"
  mkdir -p "$ctrd"
  if [ "$mode" = tuned ]; then
    tune='max_concurrent_downloads = 16
  concurrent_layer_fetch_buffer = 8388608
  max_concurrent_unpacks = 2'
  fi
  cat >"$ctrd/config.toml" <<TOML
version = 3
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = [
  "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.native", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins.'io.containerd.internal.v1.opt']
  path = "$ctrd/opt"
[plugins.'io.containerd.metadata.v1.bolt']
  content_sharing_policy = "isolated"
[plugins.'io.containerd.transfer.v1.local']
  $tune
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
TOML
  "$bin/containerd" --config "$ctrd/config.toml" >"$ctrd/log" 2>&1 &
  ctrd24pid=$!
  for _ in $(seq 100); do "$bin/ctr" -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/ctr" -a "$sock" version >/dev/null || { echo "containerd 2.4 did not start:"; tail "$ctrd/log"; exit 1; }
}
