#!/usr/bin/env bash
# Install the edgeprune agent natively on a Jetson (JetPack 6 / L4T r36; JetPack 5 works too) as a
# systemd service. Run from a checkout of this repository, as root:
#
#     sudo device/setup.sh            # install or upgrade, then (re)start the service
#     sudo device/setup.sh --no-start # install only
#
# What it does, step by step (each is safe to repeat):
#   1. apt: python3-venv, python3-pip; TensorRT's Python bindings (python3-libnvinfer) if absent.
#   2. a system user "edgeprune" in the groups jtop (power rails through /run/jtop.sock) and video.
#   3. a venv at /opt/edgeprune/venv that sees the system site-packages (the apt TensorRT and
#      jetson-stats live there; neither installs cleanly from PyPI on L4T), with edgeprune[device,trt].
#   4. /etc/edgeprune/agent.token (a new random token, kept if present; mode 0640 root:edgeprune)
#      and /etc/edgeprune/agent.toml (from device/agent.example.toml, kept if present).
#   5. the unit device/edgeprune-agent.service, enabled and started.
#
# The agent binds 127.0.0.1:8765. From the host, tunnel to it:
#     ssh -L 8765:127.0.0.1:8765 user@jetson
#     edgeprune bench BUNDLE --agent http://127.0.0.1:8765 --token-file agent.token
set -euo pipefail

START=1
for arg in "$@"; do
  case "$arg" in
    --no-start) START=0 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo $0)" >&2
  exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/edgeprune
VENV=$PREFIX/venv
CONF_DIR=/etc/edgeprune
SERVICE_USER=edgeprune
UNIT=edgeprune-agent.service

if [ ! -f /etc/nv_tegra_release ]; then
  echo "setup.sh: warning: /etc/nv_tegra_release is missing; this does not look like a Jetson." >&2
fi
if [ ! -f "$REPO/pyproject.toml" ]; then
  echo "setup.sh: $REPO is not an edgeprune checkout (no pyproject.toml)" >&2
  exit 2
fi

echo "==> 1/5 system packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv python3-pip
if ! python3 -c "import tensorrt" 2>/dev/null; then
  apt-get install -y -qq --no-install-recommends python3-libnvinfer \
    || echo "setup.sh: warning: no TensorRT Python bindings; the agent will offer onnxruntime only." >&2
fi

echo "==> 2/5 service user"
if ! getent group jtop >/dev/null; then
  # jetson-stats creates this group when it installs; create it now so the unit can start
  # before jtop is installed (sudo pip3 install jetson-stats, then reboot, for power figures).
  groupadd --system jtop
  echo "setup.sh: note: jetson-stats (jtop) is not installed; power will be reported as unavailable." >&2
fi
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/edgeprune-agent --no-create-home \
    --shell /usr/sbin/nologin "$SERVICE_USER"
fi
usermod -a -G jtop,video "$SERVICE_USER"

echo "==> 3/5 virtual environment in $VENV"
mkdir -p "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$REPO[device,trt]"
"$VENV/bin/edgeprune" agent serve --help >/dev/null

echo "==> 4/5 token and configuration in $CONF_DIR"
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [ ! -s "$CONF_DIR/agent.token" ]; then
  (umask 027 && "$VENV/bin/python" -c "import secrets; print(secrets.token_urlsafe(32))" > "$CONF_DIR/agent.token")
fi
chown root:"$SERVICE_USER" "$CONF_DIR/agent.token"
chmod 0640 "$CONF_DIR/agent.token"
if [ ! -f "$CONF_DIR/agent.toml" ]; then
  install -m 0644 "$REPO/device/agent.example.toml" "$CONF_DIR/agent.toml"
fi

echo "==> 5/5 systemd unit"
install -m 0644 "$REPO/device/$UNIT" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable "$UNIT" >/dev/null
if [ "$START" -eq 1 ]; then
  systemctl restart "$UNIT"
  for _ in $(seq 1 30); do
    if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/v1/health', timeout=2)" 2>/dev/null; then
      echo "edgeprune agent is up on 127.0.0.1:8765 (journalctl -u edgeprune-agent for its log)"
      break
    fi
    sleep 1
  done
  systemctl is-active --quiet "$UNIT" || { echo "setup.sh: the agent did not start; see journalctl -u $UNIT" >&2; exit 1; }
fi
echo "Copy the token to the host (keep it private): sudo cat $CONF_DIR/agent.token"
