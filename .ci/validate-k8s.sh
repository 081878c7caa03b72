#!/usr/bin/env bash
# Validates deploy/k8s offline: every built-in kind against the Kubernetes API schemas that
# PyPI's kubernetes-validate bundles (strict: unknown fields fail), then what no schema can
# check (KEDA's kinds have none there): the references between the manifests and the promises
# their comments make.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
if ! out=$(kubernetes-validate --strict --no-warn deploy/k8s/*.yaml 2>&1); then
  echo "$out"
  exit 1
fi
echo "$out" | grep -v '^INFO' || true
python3 .ci/check-k8s.py deploy/k8s
