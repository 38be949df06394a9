#!/usr/bin/env bash
# Install what Sampan needs on a Debian 12 machine, as root. Idempotent and quick when
# everything is already there: Debian packages are installed only when missing, and the
# virtualenv is rebuilt only when pyproject.toml changed (a stamp file records its hash).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Debian packages the project uses at run time and in its tests.
#   containerd, runc, containernetworking-plugins: the node agent's container runtime and CNI
#   catatonit: Sampan builds its own pause image from Debian's static catatonit
#   iptables, conntrack: Services (kube-proxy's iptables mode) and stale UDP flows
#   ipset: NetworkPolicy enforcement (pod IP sets matched from iptables)
#   systemd: systemd-analyze verifies the unit `sampan install` writes (works without systemd
#     as PID 1; installing the package does not make it the init)
#   busybox-static, umoci, skopeo, zstd: the tests build their own small images
#   postgresql: the PostgreSQL datastore driver's tests start a private server from it
#   etcd-server, etcd-client: the embedded etcd of `sampan server --cluster-init` and the etcd
#     driver's tests (the Debian service is not used); etcdctl for users and benchmarks
#   docker-registry, apache2-utils: the private-registry test runs its own registry with
#     htpasswd auth and TLS (the Debian service is not used)
#   prometheus: the metrics e2e test runs a private Prometheus server (own port, data dir and
#     config) scraping the API server and the kubelet (the Debian service is not used)
#   nginx: the ingress controller's data plane (Sampan runs its own nginx with its own config
#     under <data-dir>/agent/ingress; the Debian nginx service is not used)
#   npm: scripts/vendor-ui.py fetches the web UI's htmx and xterm.js (pinned, sha512-checked)
#   chromium, chromium-driver: the web UI's browser tests drive headless chromium through the
#     system chromedriver with selenium (no browser download)
#   python3: Debian's interpreter and standard library go into the manager's cluster agent
#     image, which every agent builds locally (kubelet/runtime/agent_image.py)
DEB_PACKAGES=(
  python3 python3-venv ca-certificates systemd
  containerd runc containernetworking-plugins catatonit iptables conntrack ipset iproute2
  busybox-static umoci skopeo zstd
  postgresql
  etcd-server etcd-client
  nginx
  docker-registry apache2-utils
  prometheus
  npm chromium chromium-driver
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# python3-venv is only needed when the python3 in use cannot make a venv by itself.
if [ ${#missing[@]} -gt 0 ] && "$PYTHON" -m venv --help >/dev/null 2>&1; then
  filtered=()
  for pkg in "${missing[@]}"; do [ "$pkg" = python3-venv ] || filtered+=("$pkg"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
# npm is only needed as a command: a machine whose Node.js ships its own npm (NodeSource's
# nodejs package, which conflicts with Debian's npm) has what vendor-ui.py needs.
if [ ${#missing[@]} -gt 0 ] && command -v npm >/dev/null 2>&1; then
  filtered=()
  for pkg in "${missing[@]}"; do [ "$pkg" = npm ] || filtered+=("$pkg"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts its own nginx (default site on port 80) on install; Sampan runs a private
  # nginx for Ingresses, so the packaged service we just installed is stopped and disabled.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    { systemctl disable --now nginx || invoke-rc.d nginx stop; } >/dev/null 2>&1 || true
  fi
  # Debian's etcd-server starts a system etcd on 2379/2380 where an init system runs it;
  # Sampan runs its own etcd (embedded, or private ones in tests), so that one is stopped.
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    { systemctl disable --now etcd || invoke-rc.d etcd stop; } >/dev/null 2>&1 || true
  fi
fi
# Debian starts the packaged PostgreSQL cluster on install; Sampan's tests run their own
# private servers and do not need it (it is left as the system has it).

stamp="$VENV/.install-stamp"
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install: preparing the virtualenv in $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -U pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi

# The web UI's JavaScript and CSS (htmx, xterm.js), vendored into the package when missing.
if [ ! -f src/sampan/ui/static/vendor/xterm.js ] || [ ! -f src/sampan/ui/static/vendor/htmx.min.js ]; then
  "$PYTHON" scripts/vendor-ui.py
fi

# Bytecode for Sampan's own modules (an editable install has none), as Debian's py3compile
# does for a packaged module: a start then reads .pyc instead of compiling some 300 modules, even
# where PYTHONDONTWRITEBYTECODE keeps Python from caching them itself. Only changed files are
# compiled again (~0.2 s when none did).
"$VENV/bin/python" -m compileall -q src/sampan bench

# kubectl: the system one when present (the README's acceptance uses it).
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install: note: no kubectl on PATH; 'sampan kubectl' and the kubectl tests need one" >&2
fi
