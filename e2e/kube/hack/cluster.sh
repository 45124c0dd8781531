#!/usr/bin/env bash
# A single-node Kubernetes on this machine, from the binaries build.sh cached:
#   cluster.sh up      etcd, containerd, kube-apiserver, -controller-manager, -scheduler, kubelet,
#                      kube-proxy (iptables mode), images imported, CoreDNS running
#   cluster.sh down    stops everything it started (by PID), removes every trace, restores sysctls
#   cluster.sh check   fails if any trace is left (processes, mounts, cgroups, links, chains, route)
#
# Everything listens on 127.0.0.1 or on the bridge address 10.244.0.1 (the pods must reach the
# API server for CoreDNS, and that is the only host address a pod has a route to). Pods get routes
# to the pod and service CIDRs only, the host blackholes the service CIDR, and a FORWARD guard drops
# anything from the bridge that is not for the bridge: nothing leaves the machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
: "${KUBE_WORK:?}" "${KUBE_CACHE:?}"
W=$KUBE_WORK
KBIN=$KUBE_CACHE/bin
BR=podnskube0
GW=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
DNS_VIP=10.96.0.10
NODE=podns-e2e
CGROOT=podns-e2e-kube
GUARD=PODNSKUBE-GUARD
ETCD_PORT=23790
export KUBECONFIG=$W/admin.kubeconfig
# kubectl of the same version, built with the rest (kustomize inside it applies the components).
export PATH=$KBIN:$PATH
CTR=(ctr --address "$W/containerd.sock" -n k8s.io)
log() { printf '%s cluster: %s\n' "$(date -u +%T)" "$*" >&2; }

start() { # name cmd... — start in the background, PID to $W/pids/name, output to $W/logs/name.log
  local name=$1; shift
  # Its own session: a Ctrl-C to the driver's process group must not kill etcd or containerd
  # under the teardown, which needs them to stop the pods cleanly. (setsid execs: same PID.)
  setsid "$@" >"$W/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$W/pids/$name"
}

wait_for() { # seconds description cmd...
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}

certs() {
  local d=$W/pki
  mkdir -p "$d"; cd "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=podns-e2e-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' "$GW" >san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 2 -extfile san.ext 2>/dev/null
  # One client identity for every component and the driver: a member of system:masters.
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/CN=admin/O=system:masters" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 2 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
  kubectl config set-cluster e2e --server="https://$GW:6443" --certificate-authority="$d/ca.crt" --embed-certs >/dev/null
  kubectl config set-credentials admin --client-certificate="$d/admin.crt" --client-key="$d/admin.key" --embed-certs >/dev/null
  kubectl config set-context e2e --cluster=e2e --user=admin >/dev/null
  kubectl config use-context e2e >/dev/null
}

network() {
  # Remember what we change on the host, to restore it in `down`.
  cat /proc/sys/net/ipv4/ip_forward >"$W/saved.ip_forward"
  cat /proc/sys/net/bridge/bridge-nf-call-iptables >"$W/saved.brnf" 2>/dev/null || echo 0 >"$W/saved.brnf"
  ip link add "$BR" type bridge
  ip addr add "$GW/24" dev "$BR"
  ip link set "$BR" up
  ip route add blackhole "$SVC_CIDR"
  # kube-proxy DNATs pod -> VIP -> pod on the same bridge: the reply is bridged, and only
  # br_netfilter lets conntrack un-DNAT it. Forwarding: VIP traffic is routed through the host.
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # The guard: whatever enters from the bridge may only go back to the bridge.
  iptables -N "$GUARD"
  iptables -A "$GUARD" -i "$BR" -o "$BR" -j RETURN
  iptables -A "$GUARD" -i "$BR" -j DROP
  iptables -A "$GUARD" -o "$BR" ! -s "$POD_CIDR" -j RETURN
  iptables -I FORWARD 1 -j "$GUARD"
  mkdir -p "$W/cni/net.d" "$W/cni/ipam"
  cat >"$W/cni/net.d/10-podns-e2e.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "podns-e2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BR", "isGateway": true, "isDefaultGateway": false,
      "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$W/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GW", "rangeStart": "10.244.0.10"}]],
        "routes": [{"dst": "$SVC_CIDR"}]
      }
    },
    {"type": "loopback"}
  ]
}
JSON
}

containerd_up() {
  mkdir -p "$W/containerd"
  cat >"$W/containerd/config.toml" <<TOML
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This VM lacks CAP_SYS_RESOURCE: without it runc fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$KBIN"
    conf_dir = "$W/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
TOML
  start containerd containerd --config "$W/containerd/config.toml"
  wait_for 60 containerd "${CTR[@]}" version
}

images() {
  local t=$W/images bin=$W/bin
  mkdir -p "$t"
  "$bin/ociimage" -name registry.k8s.io/pause:3.10 -o "$t/pause.tar" -entrypoint /pause "$bin/pause=/pause"
  "$bin/ociimage" -name podns.test/coredns:e2e -o "$t/coredns.tar" -entrypoint /coredns -user 65532:65532 "$COREDNS_BIN=/coredns"
  "$bin/ociimage" -name podns.test/dnsclient:e2e -o "$t/dnsclient.tar" -entrypoint /dnsclient "$bin/dnsclient=/dnsclient"
  if [[ -n ${PODNS_IMAGES_DIR:-} ]]; then
    # Archives built from Dockerfile.stub / Dockerfile.init by the images' own script.
    cp "$PODNS_IMAGES_DIR"/stub.tar "$PODNS_IMAGES_DIR"/initc.tar "$t"/
  else
    # Same names and contract as Dockerfile.stub / Dockerfile.init: FROM scratch, /stub as
    # 65532:65532, /initc as root.
    "$bin/ociimage" -name ghcr.io/podns/stub:v0.1.0 -o "$t/stub.tar" -entrypoint /stub -user 65532:65532 "$PODNS_BIN/stub=/stub"
    "$bin/ociimage" -name ghcr.io/podns/initc:v0.1.0 -o "$t/initc.tar" -entrypoint /initc "$PODNS_BIN/initc=/initc"
  fi
  # The admission webhook (Dockerfile.webhook's contract: FROM scratch, /webhook as 65532:65532),
  # under a test name that manifests/overlays/webhook sets with Kustomize `images:`.
  if [[ -n ${PODNS_IMAGES_DIR:-} && -f $PODNS_IMAGES_DIR/webhook.tar ]]; then
    cp "$PODNS_IMAGES_DIR"/webhook.tar "$t"/
  else
    "$bin/ociimage" -name podns.test/webhook:e2e -o "$t/webhook.tar" -entrypoint /webhook -user 65532:65532 "$PODNS_BIN/webhook=/webhook"
  fi
  for i in "$t"/*.tar; do "${CTR[@]}" images import "$i" >/dev/null; done
  if ! "${CTR[@]}" images ls -q | grep -qx podns.test/webhook:e2e; then
    # An archive from images/build.sh carries the release name: give it the test name too.
    "${CTR[@]}" images tag "$("${CTR[@]}" images ls -q | grep -m1 '^ghcr.io/podns/webhook:')" podns.test/webhook:e2e >/dev/null
  fi
  "${CTR[@]}" images ls -q >&2
}

control_plane() {
  mkdir -p "$W/etcd"
  start etcd etcd --name podns-e2e --data-dir "$W/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster podns-e2e=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
  local p=$W/pki
  # --enable-aggregator-routing: the API server calls admission webhooks (podns's) at their
  # Service's endpoints, not its ClusterIP: the host blackholes the service CIDR, so a ClusterIP
  # is unroutable from the host (connect fails before kube-proxy's OUTPUT DNAT is reached), while
  # a pod IP is on the bridge.
  start kube-apiserver "$KBIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$GW" --advertise-address="$GW" --secure-port=6443 \
    --service-cluster-ip-range="$SVC_CIDR" --client-ca-file="$p/ca.crt" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate="$p/admin.crt" --kubelet-client-key="$p/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --enable-aggregator-routing=true \
    --authorization-mode=RBAC --allow-privileged=true --endpoint-reconciler-type=lease \
    --profiling=false
  wait_for 180 kube-apiserver kubectl get --raw /readyz
  start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --use-service-account-credentials=false --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
  start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
}

node() {
  mkdir -p "$W/kubelet"
  # Pods with dnsPolicy Default (CoreDNS) get this: no host nameserver ever reaches a pod.
  echo '# podns e2e: the host resolver is not used in the cluster' >"$W/host-resolv.conf"
  for c in /sys/fs/cgroup/*/; do [[ -d $c && ! -L ${c%/} ]] && mkdir -p "$c$CGROOT"; done
  cat >"$W/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GW
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $W/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROOT
failSwapOn: false
failCgroupV1: false
clusterDNS: [$DNS_VIP]
clusterDomain: cluster.local
resolvConf: $W/host-resolv.conf
containerRuntimeEndpoint: unix://$W/containerd.sock
imageServiceEndpoint: unix://$W/containerd.sock
podCIDR: $POD_CIDR
# A shared build machine: no evictions, no image GC.
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
# Pod logs under the work dir, not the host's /var/log/pods: the teardown stops the kubelet before
# it removes the logs of the pods it stopped, and the work dir goes with the teardown.
podLogsDir: $W/pod-logs
fileCheckFrequency: 10s
YAML
  start kubelet "$KBIN/kubelet" --config="$W/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
    --hostname-override="$NODE" --node-ip="$GW" --root-dir="$W/kubelet" --cert-dir="$W/kubelet/pki" -v=1
  cat >"$W/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$GW/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
# 0: leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start kube-proxy "$KBIN/kube-proxy" --config="$W/kube-proxy.yaml"
  wait_for 180 "node Ready" bash -c "kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
}

coredns() {
  kubectl apply -f "$HERE/manifests/coredns.yaml" >&2
  kubectl -n kube-system rollout status deploy/coredns --timeout=180s >&2
}

up() {
  [[ -e $W/pids ]] && { log "$W exists: run 'cluster.sh down' first"; exit 1; }
  mkdir -p "$W/pids" "$W/logs"
  # Snapshot of what existed before us, so `check` only blames what we made.
  ls /run/netns 2>/dev/null | sort >"$W/before.netns" || true
  local t0=$(date +%s)
  certs; network; containerd_up; images; control_plane; node; coredns
  log "cluster up in $(( $(date +%s) - t0 ))s"
}

stop_pid() { # name — SIGTERM, then SIGKILL after 15 s; only the PID we recorded
  local f=$W/pids/$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

ours() { # PIDs of processes whose command line names our work dir (shims, containers' runc)
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$W/" && echo "${p#/proc/}"
  done
  return 0
}

cgprocs() { # PIDs still in our cgroups (containers whose shim died)
  find /sys/fs/cgroup/*/"$CGROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
  return 0
}

down() {
  [[ -d $W ]] || { log "nothing to tear down"; return 0; }
  log "teardown"
  if [[ -f $W/pids/kubelet && -f $W/pids/kube-apiserver ]]; then
    # Let the kubelet stop the pods itself: CNI DEL removes veths and IPs the clean way.
    timeout 20 kubectl delete deploy,statefulset,daemonset,replicaset,job,cronjob --all -A --wait=false >/dev/null 2>&1 || true
    timeout 20 kubectl delete pods --all -A --grace-period=2 --wait=false >/dev/null 2>&1 || true
    local deadline=$(( $(date +%s) + 90 ))
    while (( $(date +%s) < deadline )); do
      [[ -z $("${CTR[@]}" tasks ls -q 2>/dev/null) ]] && break
      sleep 1
    done
    local left; left=$("${CTR[@]}" tasks ls -q 2>/dev/null | wc -l)
    (( left == 0 )) || log "$left containers still running after 90 s: killing them through containerd"
  fi
  stop_pid kubelet
  if [[ -f $W/pids/containerd ]]; then
    local c
    for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  [[ -x $KBIN/kube-proxy && -f $W/pids/kube-proxy ]] && { stop_pid kube-proxy; "$KBIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; }
  for n in kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do stop_pid "$n"; done
  # Stragglers that name our work dir (container shims): by PID.
  local pid
  for pid in $(ours) $(cgprocs); do kill -9 "$pid" 2>/dev/null || true; done
  # Mounts under the work dir and the network namespaces containerd pinned, deepest first.
  awk -v w="$W/" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  local ns
  for ns in $(comm -13 "$W/before.netns" <(ls /run/netns 2>/dev/null | sort) 2>/dev/null | grep '^cni-' || true); do
    umount -l "/run/netns/$ns" 2>/dev/null || true; rm -f "/run/netns/$ns"
  done
  # Pod veths die with their namespaces; any left are ours by their master.
  for l in $(ip -o link show master "$BR" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$l" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  ip route del blackhole "$SVC_CIDR" 2>/dev/null || true
  iptables -D FORWARD -j "$GUARD" 2>/dev/null || true
  iptables -t raw -S PREROUTING 2>/dev/null | { grep -F podns-e2e-loss || true; } | sed 's/^-A/-D/' | while read -r r; do eval iptables -t raw "$r" || true; done
  iptables -F "$GUARD" 2>/dev/null || true; iptables -X "$GUARD" 2>/dev/null || true
  local t ch
  for t in filter nat mangle raw; do
    for ch in $(iptables -t "$t" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}'); do
      iptables -t "$t" -S | awk -v c="$ch" '$1=="-A" && $0 ~ ("-j " c "( |$)") && $2 != c' | sed 's/^-A/-D/' | while read -r r; do eval iptables -t "$t" "$r" 2>/dev/null || true; done
    done
    for ch in $(iptables -t "$t" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}'); do iptables -t "$t" -F "$ch" 2>/dev/null || true; done
    for ch in $(iptables -t "$t" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}'); do iptables -t "$t" -X "$ch" 2>/dev/null || true; done
  done
  for t in filter nat mangle; do
    for ch in $(ip6tables -t "$t" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do ip6tables -t "$t" -F "$ch" 2>/dev/null || true; done
    for ch in $(ip6tables -t "$t" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}'); do ip6tables -t "$t" -X "$ch" 2>/dev/null || true; done
  done
  nft delete table ip kube-proxy 2>/dev/null || true; nft delete table ip6 kube-proxy 2>/dev/null || true
  # cgroups: depth-first rmdir of our root in every hierarchy.
  for c in /sys/fs/cgroup/*/"$CGROOT"; do [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  [[ -f $W/saved.ip_forward ]] && cat "$W/saved.ip_forward" >/proc/sys/net/ipv4/ip_forward
  [[ -f $W/saved.brnf ]] && cat "$W/saved.brnf" >/proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true
  # Keep the logs for the report, drop the state.
  mkdir -p "$W.logs" && cp -a "$W/logs/." "$W.logs/" 2>/dev/null || true
  rm -rf "$W"
  log "teardown done (logs kept in $W.logs)"
}

check() {
  local bad=0
  local procs; procs=$(echo $(ours) $(cgprocs))
  [[ -n $procs ]] && { log "LEFT: processes $procs"; bad=1; }
  grep -qF "$W/" /proc/self/mountinfo && { log "LEFT: mounts under $W"; bad=1; }
  ls /run/netns 2>/dev/null | grep -q '^cni-' && { log "LEFT: cni network namespaces"; bad=1; }
  compgen -G "/sys/fs/cgroup/*/$CGROOT" >/dev/null && { log "LEFT: cgroups $CGROOT"; bad=1; }
  ip link show "$BR" >/dev/null 2>&1 && { log "LEFT: bridge $BR"; bad=1; }
  ip -o link show type veth 2>/dev/null | grep -q "master $BR" && { log "LEFT: veths"; bad=1; }
  ip route show type blackhole | grep -qF "$SVC_CIDR" && { log "LEFT: blackhole route"; bad=1; }
  local t
  for t in filter nat mangle raw; do
    iptables -t "$t" -S 2>/dev/null | grep -qE "^-N (KUBE-|CNI-|$GUARD)" && { log "LEFT: iptables chains in $t"; bad=1; }
  done
  iptables -t raw -S PREROUTING 2>/dev/null | grep -qF podns-e2e-loss && { log "LEFT: UDP loss rule"; bad=1; }
  [[ -d $W ]] && { log "LEFT: $W"; bad=1; }
  (( bad == 0 )) && log "teardown check: nothing left"
  return $bad
}

case ${1:-} in
  up) up ;;
  down) down ;;
  check) check ;;
  *) echo "usage: $0 up|down|check" >&2; exit 2 ;;
esac
