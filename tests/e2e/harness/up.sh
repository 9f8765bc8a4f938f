#!/usr/bin/env bash
# up.sh BASE_DIR -- bring up a REAL local SkyPilot backend with no cloud: a one-node Slurm
# cluster (munged + slurmctld + slurmd on this machine) reached over a private sshd on
# 127.0.0.1, so SkyPilot 0.14.1 can `sky launch` / `sky jobs launch` tasks with `infra: slurm`.
# TEST-ONLY. Idempotent; run as root. Every PID it starts goes to BASE_DIR/pids (down.sh
# stops exactly those). Prints the `export ...` lines a caller needs and writes BASE_DIR/env.sh.
# vicuna-ops' own copy of the shared local-slurm recipe (tests/e2e/README.md), plus: the node
# declares at least 4 CPUs (SlurmdParameters=config_overrides) and ~/.sky/config.yaml gets a
# slurm.pricing row, so cost reports can price the virtual instance types.
#
# Knobs (environment variables, all optional):
#   REMOTE_USER       Unix account SkyPilot logs in as (created here)          [vopsslurm]
#   SSH_PORT          first port tried for the private sshd                     [2222]
#   API_PORT          first port tried for this HOME's SkyPilot API server      [46620]
#                     (not 46580, the default server; not 46590+, where the local skylets go)
#   SLURM_ALIAS       Host alias in ~/.slurm/config (= `infra: slurm/<alias>`)  [localslurm]
#   MEM_HEADROOM_PCT  share of available memory kept out of Slurm               [20]
#   SLURM_CPUS, SLURM_MEM_MB   override the computed node size [CPUs: max(nproc, 4)]
#   PRICE_CPU, PRICE_MEM  the Slurm pricing row written to ~/.sky/config.yaml  [0.04, 0.005]
#   VENV              a venv with SkyPilot: the netpatch (.pth + module) is installed into it
#                     and its `uv` binary is reused for the shim
#   PYTHON_FOR_UV     interpreter that SkyPilot's `uv venv --python 3.10` is mapped to
#                     [/usr/bin/python3.10 if present, else the real path of /usr/bin/python3]
set -euo pipefail

REMOTE_USER=${REMOTE_USER:-vopsslurm}
SSH_PORT=${SSH_PORT:-2222}
API_PORT=${API_PORT:-46620}
SLURM_ALIAS=${SLURM_ALIAS:-localslurm}
MEM_HEADROOM_PCT=${MEM_HEADROOM_PCT:-20}
PRICE_CPU=${PRICE_CPU:-0.04}    # $/vCPU-hour of the Slurm pricing row in ~/.sky/config.yaml
PRICE_MEM=${PRICE_MEM:-0.005}   # $/GB-hour
APT_PACKAGES=(slurm-wlm munge openssh-server openssh-client rsync curl python3)
MARK='written by vicuna-ops tests/e2e/harness/up.sh'

log() { printf '[up %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: [VENV=/path/to/venv] $0 BASE_DIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (it installs packages, starts Slurm and creates a user)"
case "$1" in /*) ;; *) die "BASE_DIR must be an absolute path";; esac
BASE=$(realpath -m "$1")
PIDS=$BASE/pids
T0=$(date +%s.%N)

# ---------------------------------------------------------------- pid bookkeeping
pid_of() { [ -f "$PIDS" ] && awk -v n="$1" '$1==n{p=$2} END{if(p)print p}' "$PIDS" || true; }
# alive NAME BINARY: the recorded PID still runs BINARY (guards against PID reuse).
alive() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  local want; want=$(readlink -f "$2")   # e.g. /usr/sbin/slurmctld -> slurmctld-wlm
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in "$want"|"$want (deleted)") return 0;; esac
  return 1
}
record() {
  touch "$PIDS"
  { grep -v "^$1 " "$PIDS" || true; echo "$1 $2"; } > "$PIDS.tmp"
  mv "$PIDS.tmp" "$PIDS"
  log "started $1 (pid $2)"
}
# start NAME BINARY LOGFILE CMD...: run the daemon in its foreground mode, in a session of its
# own (setsid execs, so $! ends up running BINARY) so a Ctrl-C of the caller does not reach it.
start() {
  local name=$1 bin=$2 logf=$3; shift 3
  setsid "$@" >>"$logf" 2>&1 </dev/null &
  local pid=$!
  record "$name" "$pid"
  sleep 0.5
  alive "$name" "$bin" || { tail -20 "$logf" >&2; die "$name (pid $pid) is not running $bin (log: $logf)"; }
}
wait_for() {  # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
port_pids() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
prev_env() {  # value of a variable in an earlier env.sh, read in a subshell
  [ -f "$BASE/env.sh" ] || return 0
  ( . "$BASE/env.sh" >/dev/null 2>&1; eval "printf '%s' \"\${$1:-}\"" )
}

# ---------------------------------------------------------------- 1. packages
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep apt's maintainer scripts from starting munge/slurm/ssh system services.
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; added_policy=1
  fi
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get update -q; fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  [ "$added_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
else
  log "apt packages present: ${APT_PACKAGES[*]}"
fi

# ---------------------------------------------------------------- 2. layout
mkdir -p "$BASE"/{home/.ssh,home/.slurm,home/.sky,remote-home,shim/bin,sshd,slurm/state,slurm/spool,netpatch,logs}
chmod 755 "$BASE" "$BASE/shim" "$BASE/shim/bin" "$BASE/netpatch"
chmod 700 "$BASE/home" "$BASE/home/.ssh" "$BASE/sshd"
touch "$PIDS"
NODE=$(hostname -s)

# ---------------------------------------------------------------- 3. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if alive munged /usr/sbin/munged; then
  log "munged already running (pid $(pid_of munged))"
elif munge_ok; then
  log "a munged not started by up.sh answers on /run/munge; reusing it (down.sh will not stop it)"
else
  start munged /usr/sbin/munged "$BASE/logs/munged.out" setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  wait_for 15 munged munge_ok
fi

# ---------------------------------------------------------------- 4. slurm.conf + daemons
SLURM_CONF_SYS=/etc/slurm/slurm.conf
if alive slurmctld /usr/sbin/slurmctld; then
  log "slurmctld already running (pid $(pid_of slurmctld)); keeping $SLURM_CONF_SYS"
else
  for p in 6817 6818; do
    if port_busy $p; then die "port $p (Slurm) is held by pid(s) $(port_pids $p | xargs) which up.sh did not start; stop that Slurm first"; fi
  done
  # CPUs are bookkeeping only (no cgroups): the e2e suite needs up to 4 one-CPU allocations at
  # once (serve: controller + 2 workers, plus one relaunching), more than a 2-core machine has.
  cpus=${SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  avail_mb=$(awk '/^MemAvailable:/{print int($2/1024)}' /proc/meminfo)
  total_mb=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
  mem=${SLURM_MEM_MB:-$(( avail_mb * (100 - MEM_HEADROOM_PCT) / 100 ))}
  [ "$mem" -le $(( total_mb - 1024 )) ] || mem=$(( total_mb - 1024 ))
  # Use slurmd's own view of the topology when its CPU count is what we want.
  hw=$(slurmd -C 2>/dev/null | head -1 || true)
  topo="CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1"
  if [ "$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")" = "$cpus" ]; then
    topo=$(grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$hw" || echo "$topo")
  fi
  cat > "$BASE/slurm/slurm.conf" <<EOF
# $MARK for $BASE -- test-only one-node cluster.
# Node size: $topo, RealMemory=$mem MiB (${MEM_HEADROOM_PCT}% of the ${avail_mb} MiB available at $(date -Is) kept free).
ClusterName=localslurm
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/slurm/state
SlurmdSpoolDir=$BASE/slurm/spool
SlurmctldPidFile=$BASE/slurm/slurmctld.pid
SlurmdPidFile=$BASE/slurm/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# The node may declare more CPUs than the machine has (SLURM_CPUS); without this slurmd's
# real count would drain it ("Low socket*core*thread count").
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MpiDefault=none
SlurmctldLogFile=$BASE/slurm/slurmctld.log
SlurmdLogFile=$BASE/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=spare Nodes=$NODE MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mkdir -p /etc/slurm
  if [ -f "$SLURM_CONF_SYS" ] && ! grep -q "$MARK" "$SLURM_CONF_SYS" && [ ! -e "$SLURM_CONF_SYS.pre-local-slurm" ]; then
    cp -p "$SLURM_CONF_SYS" "$SLURM_CONF_SYS.pre-local-slurm"
    log "kept the previous $SLURM_CONF_SYS as $SLURM_CONF_SYS.pre-local-slurm"
  fi
  # Slurm clients (sbatch/squeue run by SkyPilot over ssh, scancel in tests) read the default path.
  install -m 644 "$BASE/slurm/slurm.conf" "$SLURM_CONF_SYS"
  log "wrote $SLURM_CONF_SYS: $topo RealMemory=$mem"
  start slurmctld /usr/sbin/slurmctld "$BASE/logs/slurmctld.out" /usr/sbin/slurmctld -D -i
  wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
fi
if alive slurmd /usr/sbin/slurmd; then
  log "slurmd already running (pid $(pid_of slurmd))"
else
  start slurmd /usr/sbin/slurmd "$BASE/logs/slurmd.out" /usr/sbin/slurmd -D
fi
node_ok() { sinfo -h -N -n "$NODE" -o %T | grep -Eqx '(idle|mixed|allocated|completing)'; }
if ! (wait_for 30 "node $NODE" node_ok) 2>/dev/null; then
  scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
  wait_for 30 "node $NODE to be idle" node_ok
fi
log "slurm node: $(sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%m')"

# ---------------------------------------------------------------- 5. uv shim
# SkyPilot's node setup runs `curl -LsSf https://astral.sh/uv/install.sh | sh` (unreachable
# here) and then `uv venv --python 3.10` (not installed here). The curl shim answers that one
# URL with a local installer; the uv wrapper maps 3.10 to the system interpreter.
UV_REAL=$BASE/shim/uv-real
if [ ! -x "$UV_REAL" ]; then
  src=""
  if [ -n "${VENV:-}" ] && [ -x "$VENV/bin/uv" ]; then src=$VENV/bin/uv
  elif command -v uv >/dev/null 2>&1; then src=$(command -v uv)
  else
    log "no uv found; pip-installing the uv package into $BASE/uv-venv"
    python3 -m venv "$BASE/uv-venv"
    "$BASE/uv-venv/bin/pip" install -q uv
    src=$BASE/uv-venv/bin/uv
  fi
  cp "$(readlink -f "$src")" "$UV_REAL.tmp"; chmod 755 "$UV_REAL.tmp"; mv "$UV_REAL.tmp" "$UV_REAL"
  log "uv shim binary from $src ($("$UV_REAL" --version))"
fi
if [ -n "${PYTHON_FOR_UV:-}" ]; then PY=$PYTHON_FOR_UV
elif [ -x /usr/bin/python3.10 ]; then PY=/usr/bin/python3.10
else PY=$(readlink -f /usr/bin/python3); fi
cat > "$BASE/shim/uv-wrapper" <<EOF
#!/bin/bash
# $MARK (test-only): SkyPilot hard-codes \`uv venv --python 3.10\`; this host has no 3.10
# and uv cannot download one offline, so 3.10 is mapped to $PY.
args=(); prev=""
for a in "\$@"; do
  if [ "\$prev" = "--python" ] && [ "\$a" = "3.10" ]; then a=$PY; fi
  [ "\$a" = "--python=3.10" ] && a="--python=$PY"
  args+=("\$a"); prev="\$a"
done
exec $UV_REAL "\${args[@]}"
EOF
cat > "$BASE/shim/uv-install.sh" <<EOF
# $MARK (test-only): stands in for https://astral.sh/uv/install.sh
set -e
d="\${UV_INSTALL_DIR:-\$HOME/.local/bin}"
mkdir -p "\$d"
cp $BASE/shim/uv-wrapper "\$d/uv.tmp.\$\$" && chmod 755 "\$d/uv.tmp.\$\$" && mv -f "\$d/uv.tmp.\$\$" "\$d/uv"
EOF
cat > "$BASE/shim/bin/curl" <<EOF
#!/bin/bash
# $MARK (test-only): serve a local uv installer instead of https://astral.sh/uv/install.sh
for a in "\$@"; do
  if [ "\$a" = "https://astral.sh/uv/install.sh" ]; then exec cat $BASE/shim/uv-install.sh; fi
done
exec /usr/bin/curl "\$@"
EOF
chmod 755 "$BASE/shim/uv-wrapper" "$BASE/shim/bin/curl"; chmod 644 "$BASE/shim/uv-install.sh"

# ---------------------------------------------------------------- 6. remote user
RHOME=$BASE/remote-home
if ! id "$REMOTE_USER" >/dev/null 2>&1; then
  useradd -d "$RHOME" -s /bin/bash -U "$REMOTE_USER"
  log "created user $REMOTE_USER (home $RHOME)"
elif [ "$(getent passwd "$REMOTE_USER" | cut -d: -f6)" != "$RHOME" ]; then
  usermod -d "$RHOME" "$REMOTE_USER"
  log "moved home of existing user $REMOTE_USER to $RHOME"
fi
usermod -p '*' "$REMOTE_USER"   # useradd leaves '!' (locked); sshd refuses locked accounts
for f in .profile .bashrc .bash_logout; do
  [ -e "$RHOME/$f" ] || { [ -e "/etc/skel/$f" ] && cp "/etc/skel/$f" "$RHOME/$f"; } || true
done
touch "$RHOME/.profile"
# Debian's /etc/profile resets PATH for login shells, so the shim must come from ~/.profile.
CERTS=/etc/ssl/certs/ca-certificates.crt
{ echo "# >>> $MARK >>>"
  echo "export PATH=$BASE/shim/bin:\$PATH"
  echo "export UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never$( [ -f $CERTS ] && echo " SSL_CERT_FILE=$CERTS")"
  echo "# <<< $MARK <<<"
  awk -v b="# >>> $MARK >>>" -v e="# <<< $MARK <<<" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$RHOME/.profile"
} > "$RHOME/.profile.tmp"
mv "$RHOME/.profile.tmp" "$RHOME/.profile"
KEY=$BASE/home/.ssh/slurm_key
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "local-slurm@$BASE" -f "$KEY"
mkdir -p "$RHOME/.ssh"
cp "$KEY.pub" "$RHOME/.ssh/authorized_keys"
chown -R "$REMOTE_USER:$REMOTE_USER" "$RHOME"
chmod 755 "$RHOME"; chmod 700 "$RHOME/.ssh"; chmod 600 "$RHOME/.ssh/authorized_keys"

# ---------------------------------------------------------------- 7. private sshd
HOSTKEY=$BASE/sshd/ssh_host_ed25519_key
[ -f "$HOSTKEY" ] || ssh-keygen -q -t ed25519 -N '' -C "local-slurm-host" -f "$HOSTKEY"
install -d -m 755 /run/sshd   # privilege-separation directory
if alive sshd /usr/sbin/sshd; then
  PORT=$(awk '$1=="Port"{print $2}' "$BASE/sshd/sshd_config")
  log "sshd already running (pid $(pid_of sshd), port $PORT)"
else
  PORT=$(free_port "$SSH_PORT")
  [ "$PORT" = "$SSH_PORT" ] || log "port $SSH_PORT is busy; using $PORT"
  cat > "$BASE/sshd/sshd_config" <<EOF
# $MARK -- private sshd for the local Slurm login node (test-only)
Port $PORT
ListenAddress 127.0.0.1
HostKey $HOSTKEY
PidFile $BASE/sshd/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PermitRootLogin no
AllowUsers $REMOTE_USER
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 100:30:200
MaxSessions 100
EOF
  /usr/sbin/sshd -t -f "$BASE/sshd/sshd_config"
  start sshd /usr/sbin/sshd "$BASE/logs/sshd.log" /usr/sbin/sshd -D -e -f "$BASE/sshd/sshd_config"
fi
SSH=(ssh -q -i "$KEY" -p "$PORT" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "$REMOTE_USER@127.0.0.1")
wait_for 20 "ssh login as $REMOTE_USER on port $PORT" "${SSH[@]}" true
# What SkyPilot's commands will see: a login shell of the remote user.
probe=$("${SSH[@]}" bash --login -s 2>&1 <<EOF
command -v curl
sinfo -h -o %P
curl -LsSf https://astral.sh/uv/install.sh | grep -c uv-wrapper
$BASE/shim/uv-wrapper --version
EOF
) || die "login-shell check failed: $probe"
grep -q "^$BASE/shim/bin/curl\$" <<<"$probe" || die "the shim is not first on the remote login PATH: $probe"
log "remote login shell ok: $(tr '\n' ' ' <<<"$probe")"

# ---------------------------------------------------------------- 8. client HOME
cat > "$BASE/home/.slurm/config" <<EOF
# $MARK
Host $SLURM_ALIAS
  HostName 127.0.0.1
  Port $PORT
  User $REMOTE_USER
  IdentityFile $KEY
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
EOF
SKYCFG=$BASE/home/.sky/config.yaml
if [ ! -f "$SKYCFG" ] || grep -q "$MARK" "$SKYCFG"; then
  cat > "$SKYCFG" <<EOF
# $MARK (test-only)
# Only Slurm is allowed, so nothing ever reaches for a cloud; the managed-jobs controller
# runs inside the local API server (consolidation mode) instead of on a controller cluster.
allowed_clouds:
  - slurm
jobs:
  controller:
    consolidation_mode: true
# A price for the virtual instance types (SkyPilot's Slurm catalog reads it from here), so
# cost reports have something to multiply: \$/vCPU-hour and \$/GB-hour.
slurm:
  pricing:
    cpu: $PRICE_CPU
    memory: $PRICE_MEM
EOF
else
  log "keeping the hand-edited $SKYCFG"
fi
# A user hash of its own gives this HOME its own ssh ControlMaster directory
# (/tmp/sky_ssh_<hash>), so down.sh can close exactly its connections.
[ -s "$BASE/home/.sky/user_hash" ] || printf 'ls%s' "$(printf '%s' "$BASE" | md5sum | cut -c1-6)" > "$BASE/home/.sky/user_hash"

# ---------------------------------------------------------------- 9. netpatch
cat > "$BASE/netpatch/local_slurm_netpatch.py" <<'EOF'
"""TEST-ONLY patch for SkyPilot on a machine with no Internet (local-slurm/up.sh).

SkyPilot's managed-jobs controller calls
sky.backends.backend_utils.async_check_network_connection() (HEAD https://8.8.8.8 /
https://1.1.1.1) before it trusts a cluster status; offline that never succeeds and the
controller waits forever. This import hook turns that check and check_network_connection()
into no-ops. It acts only when LOCAL_SLURM_NETPATCH=1 is in the environment (env.sh sets it),
so the .pth is inert in every other process of the venv.
"""
import importlib.abc
import importlib.machinery
import os
import sys

_TARGET = 'sky.backends.backend_utils'


class _Finder(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)

            async def _async_ok():
                return None

            module.async_check_network_connection = _async_ok
            module.check_network_connection = lambda: None
            module.LOCAL_SLURM_NETPATCHED = True

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get('LOCAL_SLURM_NETPATCH') == '1' and not any(
        isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
EOF
echo 'import local_slurm_netpatch' > "$BASE/netpatch/local_slurm_netpatch.pth"
chmod 644 "$BASE/netpatch/"*
if [ -n "${VENV:-}" ]; then
  [ -x "$VENV/bin/python" ] || die "VENV=$VENV has no bin/python"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$BASE/netpatch/local_slurm_netpatch.py" "$BASE/netpatch/local_slurm_netpatch.pth" "$site/"
  LOCAL_SLURM_NETPATCH=1 "$VENV/bin/python" -c 'import sky.backends.backend_utils as b; assert b.LOCAL_SLURM_NETPATCHED; b.check_network_connection()' \
    || die "netpatch did not take effect in $VENV"
  log "netpatch installed into $site"
fi

# ---------------------------------------------------------------- 10. env.sh
prev_api=$(prev_env SKYPILOT_API_SERVER_LOCAL_PORT)
api_port_ok() {  # free, or held by a SkyPilot API server whose HOME is ours
  local p=$1 pid
  port_busy "$p" || return 0
  for pid in $(port_pids "$p"); do
    grep -qzxF "HOME=$BASE/home" "/proc/$pid/environ" 2>/dev/null && return 0
  done
  return 1
}
if [ -n "$prev_api" ] && api_port_ok "$prev_api"; then APORT=$prev_api
else APORT=$API_PORT; until api_port_ok "$APORT"; do APORT=$((APORT + 1)); done; fi
cat > "$BASE/env.sh" <<EOF
# $MARK -- source this before running SkyPilot against the local Slurm backend.
export HOME=$BASE/home
export SKYPILOT_API_SERVER_LOCAL_PORT=$APORT
export SKYPILOT_DISABLE_USAGE_COLLECTION=1
export LOCAL_SLURM_NETPATCH=1
export LOCAL_SLURM_BASE=$BASE
export LOCAL_SLURM_USER=$REMOTE_USER
export LOCAL_SLURM_SSH_PORT=$PORT
export LOCAL_SLURM_ALIAS=$SLURM_ALIAS
export LOCAL_SLURM_NODE=$NODE
unset SKYPILOT_API_SERVER_ENDPOINT SKYPILOT_CONFIG SKYPILOT_GLOBAL_CONFIG SKYPILOT_PROJECT_CONFIG
EOF
chmod 644 "$BASE/env.sh"

log "ready in $(python3 -c "import time; print(round(time.time() - $T0, 1))") s; pids: $(tr '\n' ' ' < "$PIDS")"
[ -n "${VENV:-}" ] || log "netpatch not installed anywhere: rerun with VENV=/path/to/venv, or copy $BASE/netpatch/local_slurm_netpatch.{py,pth} into that venv's site-packages"
echo "# Export these (or: . $BASE/env.sh), then use the SkyPilot of a venv holding the netpatch:"
grep '^export\|^unset' "$BASE/env.sh"
