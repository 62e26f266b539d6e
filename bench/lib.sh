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
