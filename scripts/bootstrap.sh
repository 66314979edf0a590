#!/usr/bin/env bash
# Install what ParkWatch needs on Debian/Ubuntu, idempotently:
#   - system packages: mosquitto and influxdb (used as private instances on project ports;
#     any system services they bring keep running untouched), python3-venv, and chromium (the
#     headless browser tests/test_scorecard_cli.py renders the printable scorecard with), and
#     postgresql and rabbitmq-server (their server binaries, for private instances in the tests;
#     no system service is used);
#   - uv (pinned, from PyPI) in .tools/, then the project environment .venv/ from uv.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have python3 || missing+=(python3)
have mosquitto || missing+=(mosquitto)
have influxd || missing+=(influxdb)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
have chromium || missing+=(chromium)
# PostgreSQL server binaries (initdb, pg_ctl, postgres) for the private clusters the PostgreSQL
# alarm-store and partition tests start; Debian keeps them in /usr/lib/postgresql/<v>/bin.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# RabbitMQ's MQTT plugin: the second broker implementation the ingest client is proven against
# (tests/test_mqtt_session.py starts a private node; the system service is not used).
have rabbitmq-server || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
  python3 -m venv .tools
  .tools/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

# Use the machine's python3 (>= 3.11); never download an interpreter.
export UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3
.tools/bin/uv sync --frozen --quiet
