"""The arguments deploy/'s manifests give mpsync, parsed by the mpsync this
checkout builds: a flag renamed or misspelt fails `make test` rather than a
pod on a cluster.

Usage: check-deploy-args.py MPSYNC RENDERED.yaml...

Each container of the mpsync image runs with its arguments (the kubelet's
$(VAR) expansions replaced by a plausible value, and the elector moved to
a port where nothing listens), for at most two seconds in a folder of its
own. Anything but a command-line error passes: a missing /apps/*.wasm, an
elector that does not answer. clap prints its usage with every
command-line error, and with nothing else.
"""

import re
import subprocess
import sys
import tempfile

import yaml

# What the kubelet would put in for each $(VAR) the manifests use.
VALUES = {"POD_IP": "10.0.0.7"}
NOWHERE = "http://127.0.0.1:1"


def expand(arg):
    return re.sub(r"\$\((\w+)\)", lambda m: VALUES.get(m.group(1), "pod-0"), arg)


def containers(doc):
    spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        yield c


def main():
    mpsync, files = sys.argv[1], sys.argv[2:]
    checked = 0
    failed = 0
    seen = set()
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                for c in containers(doc):
                    if "sync-mpsync" not in c.get("image", ""):
                        continue
                    args = [expand(a) for a in c.get("command", [])[1:] + c.get("args", [])]
                    args = [NOWHERE if prev == "--elector" else a for prev, a in zip([None] + args, args)]
                    key = (doc["metadata"]["name"], c["name"], tuple(args))
                    if key in seen:
                        continue
                    seen.add(key)
                    with tempfile.TemporaryDirectory() as cwd:
                        try:
                            run = subprocess.run(
                                [mpsync, *args],
                                cwd=cwd,
                                env={"MPSYNC_ELECTOR": NOWHERE, "PATH": "/usr/bin:/bin"},
                                capture_output=True,
                                text=True,
                                timeout=2,
                            )
                            stderr = run.stderr
                        except subprocess.TimeoutExpired as e:
                            stderr = (e.stderr or b"").decode(errors="replace")
                    name = f"{doc['metadata']['name']}/{c['name']}"
                    if "Usage:" in stderr:
                        print(f"deploy: {name}: mpsync refuses its arguments:\n{stderr}", file=sys.stderr)
                        failed += 1
                    else:
                        print(f"deploy: {name}: mpsync {args[0]} accepts its arguments")
                    checked += 1
    if checked == 0:
        print("deploy: no container runs the mpsync image", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
