"""Checks deploy/k8s against what delegate needs, since no cluster runs in CI.

Parses every manifest with PyYAML, checks the properties docs/scale-out.md promises
(non-root, read-only root filesystem, readiness on /ping, preStop + drain window, a PDB that
matches the pods, credentials only from Secrets) and runs the real binary's
`delegate config check` on deploy/k8s/delegate.toml with the placeholders filled in.

Usage: python k8s_manifests.py  (DELEGATE_BIN: the delegate binary, default target/debug/delegate)
"""

import base64
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def load(name):
    docs = list(yaml.safe_load_all((K8S / name).read_text()))
    check(len(docs) == 1, f"{name}: expected one document, found {len(docs)}")
    return docs[0]


kustomization = load("kustomization.yaml")
listed = set(kustomization["resources"])
on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
check(listed == on_disk, f"kustomization resources {sorted(listed)} != files {sorted(on_disk)}")
generated = kustomization["configMapGenerator"][0]
check(generated["name"] == "delegate-config", "the ConfigMap is generated as delegate-config")
check(generated["files"] == ["delegate.toml"], "the ConfigMap holds delegate.toml")

docs = {load(name)["kind"]: load(name) for name in sorted(listed)}
for kind in ["Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"]:
    check(kind in docs, f"missing a {kind}")

ns = docs["Namespace"]["metadata"]
check(ns["name"] == kustomization["namespace"], "namespace name matches the kustomization")
check(ns["labels"].get("pod-security.kubernetes.io/enforce") == "restricted", "namespace enforces restricted")
check(docs["ServiceAccount"].get("automountServiceAccountToken") is False, "no service account token")

dep = docs["Deployment"]["spec"]
pod = dep["template"]["spec"]
labels = dep["template"]["metadata"]["labels"]
check(dep["selector"]["matchLabels"].items() <= labels.items(), "selector matches the pod labels")
check(dep["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "rollouts never go below the desired count")
check(pod.get("automountServiceAccountToken") is False, "pod mounts no service account token")
psc = pod["securityContext"]
check(psc.get("runAsNonRoot") is True, "pod runs as non-root")
check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "RuntimeDefault seccomp")

dockerfile = (ROOT / "Dockerfile").read_text()
check("USER nonroot:nonroot" in dockerfile and psc.get("runAsUser") == 65532,
      "runAsUser is the image's nonroot user (65532)")

(container,) = pod["containers"]
csc = container["securityContext"]
check(csc.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
check(csc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
check(csc.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports.get("http") == 8080, "the public port is 8080 (the AgentCore contract)")
for probe in ["readinessProbe", "livenessProbe", "startupProbe"]:
    get = container[probe]["httpGet"]
    check(get["path"] == "/ping" and get["port"] == "http", f"{probe} is GET /ping on the public port")

args = container["args"]
check(args[:2] == ["serve", "--config"], "the container serves a config file")
config_path = pathlib.PurePosixPath(args[2])
mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
config_mount = mounts.get(str(config_path.parent))
check(config_mount is not None and config_mount.get("readOnly") is True, "config mounted read-only")
check(config_mount is not None and volumes[config_mount["name"]].get("configMap", {}).get("name") == "delegate-config",
      "the config volume is the generated ConfigMap")

env = {e["name"]: e for e in container["env"]}
for name, e in env.items():
    check("value" not in e, f"env {name} has a literal value; credentials come from Secrets")

config_text = (K8S / "delegate.toml").read_text()
config = tomllib.loads(config_text)
referenced = set(re.findall(r'\{\s*env\s*=\s*"([A-Z0-9_]+)"', config_text))
referenced |= {config.get("admin", {}).get("token_env")} - {None}
for name in sorted(referenced):
    check(name in env and "secretKeyRef" in env[name].get("valueFrom", {}),
          f"{name} (named in delegate.toml) comes from a Secret")

cache_dir = pathlib.PurePosixPath(config["engine"]["cache_dir"])
writable = [m for path, m in mounts.items() if cache_dir.is_relative_to(path) and not m.get("readOnly")]
check(len(writable) == 1 and "emptyDir" in volumes[writable[0]["name"]],
      "engine.cache_dir is on a writable emptyDir (the root filesystem is read-only)")

grace = pod["terminationGracePeriodSeconds"]
pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
drain = config["server"].get("shutdown_grace_seconds", 30)
check(grace > pre_stop + drain, f"terminationGracePeriodSeconds {grace} > preStop {pre_stop} + drain {drain}")
check(config["vault"]["cache"]["backend"] == "redis", "replicas share the vault through Redis")
for plugin in config["plugin"]:
    check(plugin.get("source", "").startswith("oci://") and "@sha256:" in plugin["source"],
          f"plugin {plugin['name']} is pinned by digest")

pdb = docs["PodDisruptionBudget"]["spec"]
check(pdb["selector"]["matchLabels"].items() <= labels.items(), "the PDB selects the pods")
check(0 < pdb["minAvailable"] < dep["replicas"], "the PDB leaves room for one eviction")
svc = docs["Service"]["spec"]
check(svc["selector"].items() <= labels.items(), "the Service selects the pods")
check([p["targetPort"] for p in svc["ports"]] == ["http"], "the Service exposes only the public port")
netpol = docs["NetworkPolicy"]["spec"]
check(netpol["podSelector"]["matchLabels"].items() <= labels.items(), "the NetworkPolicy selects the pods")
check(set(netpol["policyTypes"]) == {"Ingress", "Egress"}, "the NetworkPolicy restricts both directions")

# The real binary validates the real file, with the placeholders filled in.
filled = re.sub(r"<([A-Z_]+)>", lambda m: {
    "MANIFEST_DIGEST": "0" * 64,
    "REGISTRY": "registry.example.com",
    "INSTANCE": "example",
}.get(m.group(1), "00000000-0000-0000-0000-000000000001"), config_text)
check(not re.search(r"<[A-Za-z_]+>", filled), "every placeholder is filled in")
dummy = {name: "k8s-manifest-check-" + "x" * 40 for name in referenced}
dummy["DELEGATE_VAULT_KEY"] = base64.b64encode(os.urandom(32)).decode()
binary = os.environ.get("DELEGATE_BIN", str(ROOT / "target" / "debug" / "delegate"))
with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "delegate.toml"
    path.write_text(filled)
    run = subprocess.run([binary, "config", "check", str(path)], capture_output=True, text=True,
                         env={**os.environ, **dummy})
    check(run.returncode == 0, f"delegate config check failed: {run.stderr.strip()}")
    for value in dummy.values():
        check(value not in run.stdout + run.stderr, "config check printed a secret value")

if failures:
    for f in failures:
        print(f"k8s manifests: {f}", file=sys.stderr)
    sys.exit(1)
print(f"k8s manifests: ok ({len(docs)} manifests, delegate.toml checked by {pathlib.Path(binary).name})")
