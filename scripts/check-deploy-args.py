"""The arguments deploy/'s manifests give mpsync and the elector, parsed by
the binaries this checkout builds: a flag renamed or misspelt fails `make
test` rather than a pod on a cluster.

Usage: check-deploy-args.py MPSYNC ELECTOR RENDERED.yaml...

Each container of the mpsync or the elector image runs with its arguments
and the environment variables the manifest gives as values (the kubelet's
$(VAR) expansions replaced by a plausible value; mpsync's elector, and the
elector's own listening addresses, moved to a port where nothing
listens), for at most two seconds in a folder of its own. Anything but a
command-line error passes: a missing /apps/*.wasm, an elector that does
not answer, an elector that finds no cluster to talk to. clap ends every
command-line error with its usage or a pointer to --help (an invalid value
gets only the pointer), and prints neither otherwise.
"""

import re
import subprocess
import sys
import tempfile

import yaml

# What the kubelet would put in for each $(VAR) the manifests use.
VALUES = {"POD_IP": "10.0.0.7"}
NOWHERE = "http://127.0.0.1:1"
# The flags whose value is moved: mpsync's elector; the elector's own
# addresses, to a port of the OS's choosing.
MOVED = {"--elector": NOWHERE, "--listen": "127.0.0.1:0", "--health-listen": "127.0.0.1:0"}


def expand(arg):
    return re.sub(r"\$\((\w+)\)", lambda m: VALUES.get(m.group(1), "pod-0"), arg)


def containers(doc):
    spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        yield c


def check(doc, c, image, binary, label, given, seen):
    """Runs one invocation; 1 if the binary refuses its arguments."""
    # The kubelet expands $(VAR) in a container's command, not in a hook's.
    args = list(given) if label else [expand(a) for a in given]
    args = [MOVED.get(prev, a) for prev, a in zip([None] + args, args)]
    env = {e["name"]: expand(e["value"]) for e in c.get("env", []) if "value" in e}
    env.update({"MPSYNC_ELECTOR": NOWHERE, "PATH": "/usr/bin:/bin"})
    key = (doc["metadata"]["name"], c["name"], tuple(args), tuple(sorted(env.items())))
    if key in seen:
        return 0
    seen.add(key)
    with tempfile.TemporaryDirectory() as cwd:
        try:
            run = subprocess.run([binary, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=2)
            stderr = run.stderr
        except subprocess.TimeoutExpired as e:
            stderr = (e.stderr or b"").decode(errors="replace")
    name = f"{doc['metadata']['name']}/{c['name']}{label}"
    what = "the elector" if image == "sync-elector" else f"mpsync {args[0]}"
    if "Usage:" in stderr or "try '--help'" in stderr:
        print(f"deploy: {name}: {what} refuses its arguments:\n{stderr}", file=sys.stderr)
        return 1
    print(f"deploy: {name}: {what} accepts its arguments")
    return 0


def main():
    binaries = {"sync-mpsync": sys.argv[1], "sync-elector": sys.argv[2]}
    files = sys.argv[3:]
    checked = 0
    failed = 0
    seen = set()
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                for c in containers(doc):
                    image = next((i for i in binaries if i in c.get("image", "")), None)
                    if image is None:
                        continue
                    binary = binaries[image]
                    # The container's own command, and a preStop hook's
                    # (run in the same container, with its environment; the
                    # kubelet expands no $(VAR) in a hook).
                    hook = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                    runs = [("", c.get("command", [])[1:] + c.get("args", []))]
                    if hook:
                        runs.append((" (preStop)", hook[1:]))
                    for label, given in runs:
                        failed += check(doc, c, image, binary, label, given, seen)
                        checked += 1
    if checked == 0:
        print("deploy: no container runs the mpsync or the elector image", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
