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

# containerd 2.4 (issue 19): the peer engines compare with. install_containerd24 BIN
# builds cmd/containerd and cmd/ctr of github.com/containerd/containerd/v2 at v2.4.2 from
# the Go module proxy into BIN (once; nothing built is committed). start_containerd24 DIR
# SOCK BIN TUNED [CAFILE [SNAPSHOTTER]] starts it with its root, state and config under DIR
# on the private socket SOCK: no CRI (which would pull on its own), the transfer service
# unpacking into SNAPSHOTTER (native by default; bench/unpack.sh takes overlayfs, the
# other snapshotters off), content isolated per namespace; TUNED=1 sets the transfer
# service as containerd's docs suggest for large images (max_concurrent_downloads = 16,
# concurrent_layer_fetch_buffer = 8388608, max_concurrent_unpacks = 2), TUNED=0 keeps its
# defaults (3, off, 1). CAFILE, when not empty, is the CA its transfer service trusts
# (SSL_CERT_FILE). It waits until ctr answers, sets ctrdpid, and exits the script if
# containerd does not start.
install_containerd24() {
  local bin=$1
  [ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] && "$bin/containerd" --version 2>/dev/null | grep -q ' 2\.4\.2' && return 0
  echo "building containerd and ctr v2.4.2 into $bin" >&2
  GOBIN=$bin CGO_ENABLED=0 GOFLAGS=-mod=mod go install -tags "no_btrfs no_devmapper no_zfs" \
    github.com/containerd/containerd/v2/cmd/containerd@v2.4.2 github.com/containerd/containerd/v2/cmd/ctr@v2.4.2
}

start_containerd24() {
  local ctrd=$1 sock=$2 bin=$3 tuned=$4 ca=${5:-} snap=${6:-native} xfer="" off="" s
  rm -rf "$ctrd"
  mkdir -p "$ctrd"
  if [ "$tuned" = 1 ]; then
    xfer='  max_concurrent_downloads = 16
  concurrent_layer_fetch_buffer = 8388608
  max_concurrent_unpacks = 2'
  fi
  for s in native overlayfs blockfile erofs; do
    [ "$s" = "$snap" ] || off="$off \"io.containerd.snapshotter.v1.$s\","
  done
  cat >"$ctrd/config.toml" <<TOML
version = 3
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
 $off
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
    snapshotter = "$snap"
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
