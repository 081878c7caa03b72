"""The checks on deploy/k8s that the Kubernetes schemas cannot make: selectors that select,
probes on declared ports, grace periods longer than the drain, and a KEDA trigger that counts
exactly the queues workers consume."""

import pathlib
import re
import sys

import yaml

root = pathlib.Path(sys.argv[1])
docs = [d for f in sorted(root.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


config = by_kind["ConfigMap"][0]["data"]
drain_s = int(config["SLUICE__WORKER__DRAIN_TIMEOUT_MS"]) / 1000
deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
check(set(deployments) == {"sluice-api", "sluice-worker"}, f"deployments: {sorted(deployments)}")


def selects(selector, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


for name, d in deployments.items():
    spec = d["spec"]["template"]["spec"]
    check(selects(d["spec"]["selector"]["matchLabels"], d), f"{name}: its selector misses its pods")
    (c,) = spec["containers"]
    ports = {p["name"] for p in c.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check(probe in c, f"{name}: no {probe}")
        check(c.get(probe, {}).get("httpGet", {}).get("port") in ports, f"{name}: {probe} on an undeclared port")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{name}: readiness is not /readyz")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{name}: liveness is not /healthz")
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec["terminationGracePeriodSeconds"]
    check(grace > drain_s + pre_stop, f"{name}: grace {grace} s is not longer than drain {drain_s} s + preStop {pre_stop} s")
    refs = {e.get("configMapRef", {}).get("name") or e.get("secretRef", {}).get("name") for e in c["envFrom"]}
    check(refs == {"sluice"}, f"{name}: envFrom {refs}")
    check(c["args"] == [name.removeprefix("sluice-")], f"{name}: runs {c['args']}")

(service,) = by_kind["Service"]
check(selects(service["spec"]["selector"], deployments["sluice-api"]), "the Service misses the API pods")
check(not selects(service["spec"]["selector"], deployments["sluice-worker"]), "the Service selects workers")
for pdb in by_kind["PodDisruptionBudget"]:
    hits = [n for n, d in deployments.items() if selects(pdb["spec"]["selector"]["matchLabels"], d)]
    check(len(hits) == 1, f"PDB {pdb['metadata']['name']} selects {hits}")

(scaled,) = by_kind["ScaledObject"]
check(scaled["spec"]["scaleTargetRef"]["name"] == "sluice-worker", "KEDA scales something else than the workers")
(trigger,) = scaled["spec"]["triggers"]
auth = {a["metadata"]["name"]: a for a in by_kind["TriggerAuthentication"]}
check(trigger["metadata"].get("excludeUnacknowledged") == "true", "KEDA counts messages workers already hold")
check(trigger["authenticationRef"]["name"] in auth, "KEDA's authenticationRef names no TriggerAuthentication")
secret_keys = set(by_kind["Secret"][0]["stringData"])
for ref in auth.get(trigger["authenticationRef"]["name"], {}).get("spec", {}).get("secretTargetRef", []):
    check(ref["key"] in secret_keys, f"TriggerAuthentication reads {ref['key']}, which the Secret lacks")
pattern = re.compile(trigger["metadata"]["queueName"])
prefix = config["SLUICE__BROKER__PREFIX"]
consumed = [f"{prefix}.work", f"{prefix}.work.high", f"{prefix}.work.low"] + [f"{prefix}.ordered.{n}" for n in range(16)]
others = [f"{prefix}.dead", f"{prefix}.retry.1000ms", f"{prefix}.retry.300000ms", f"other.work"]
check(all(pattern.fullmatch(q) for q in consumed), "the KEDA trigger misses a queue workers consume")
check(not any(pattern.fullmatch(q) for q in others), "the KEDA trigger counts a queue workers do not consume")

if failures:
    print("deploy/k8s:", *failures, sep="\n  ")
    sys.exit(1)
print(f"deploy/k8s: {len(docs)} objects valid, references and promises hold")
