#!/usr/bin/env bash
# Run the edgeprune agent container (built from Dockerfile.jetson) on a Jetson, as a regular user
# in the docker group (never as root: the agent runs uploaded models).
#
#     device/run-docker.sh [extra agent options...]       e.g. --max-upload-mb 512
#
# Settings (environment variables):
#   EDGEPRUNE_IMAGE       image to run                 (default edgeprune-agent:r36.4.0)
#   EDGEPRUNE_TOKEN_FILE  the bearer token on the host (default ~/.config/edgeprune/agent.token,
#                         created with a new random token if missing)
#   EDGEPRUNE_STORE       host folder for the store    (default ~/edgeprune-agent-store)
#   EDGEPRUNE_BIND        host address to publish on   (default 127.0.0.1: tunnel in with ssh -L)
#   EDGEPRUNE_PORT        host port                    (default 8765)
#
# The GPU comes through the NVIDIA runtime; power rails, clocks and temperatures through the host's
# jtop service socket, which needs the host's jtop group (and jetson-stats of the same version in
# the image: docker build --build-arg JTOP_VERSION=...). Run nvpmodel and jetson_clocks on the
# host; the container only reads their state.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
  echo "run-docker.sh: do not run the agent as root; run this as a user in the docker group" >&2
  echo "  (sudo usermod -aG docker \$USER, then log in again)" >&2
  exit 2
fi

IMAGE=${EDGEPRUNE_IMAGE:-edgeprune-agent:r36.4.0}
TOKEN_FILE=${EDGEPRUNE_TOKEN_FILE:-${XDG_CONFIG_HOME:-$HOME/.config}/edgeprune/agent.token}
STORE=${EDGEPRUNE_STORE:-$HOME/edgeprune-agent-store}
BIND=${EDGEPRUNE_BIND:-127.0.0.1}
PORT=${EDGEPRUNE_PORT:-8765}

if [ ! -s "$TOKEN_FILE" ]; then
  mkdir -p "$(dirname "$TOKEN_FILE")"
  (umask 077 && python3 -c "import secrets; print(secrets.token_urlsafe(32))" > "$TOKEN_FILE")
  echo "run-docker.sh: created a new token in $TOKEN_FILE; copy it to the host for --token-file" >&2
fi
mkdir -p "$STORE"

groups=(--group-add video)
jtop_mount=()
if [ -S /run/jtop.sock ]; then
  groups+=(--group-add "$(getent group jtop | cut -d: -f3)")
  jtop_mount=(-v /run/jtop.sock:/run/jtop.sock)
else
  echo "run-docker.sh: /run/jtop.sock not found (is jtop.service running?); power will be reported as unavailable" >&2
fi

# The container runs as this user, so the store and the token stay theirs.
exec docker run --rm --init --name edgeprune-agent \
  --runtime nvidia \
  --user "$(id -u):$(id -g)" "${groups[@]}" \
  -e HOME=/var/lib/edgeprune-agent \
  -p "$BIND:$PORT:8765" \
  -v "$STORE:/var/lib/edgeprune-agent" \
  -v "$(realpath "$TOKEN_FILE"):/run/secrets/edgeprune-agent-token:ro" \
  ${jtop_mount[@]+"${jtop_mount[@]}"} \
  "$IMAGE" \
  --store /var/lib/edgeprune-agent --token-file /run/secrets/edgeprune-agent-token "$@"
