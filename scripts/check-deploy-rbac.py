"""Least privilege in deploy/'s rendered manifests: every Role grants what
the elector needs and no more.

Usage: check-deploy-rbac.py RENDERED.yaml...

- No ClusterRole or ClusterRoleBinding: the elector works in its own
  namespace.
- No wildcard (`*`) in any Role's apiGroups, resources, resourceNames or
  verbs.
- The elector's Role (metaparticle-sync-elector) lets it create Events on
  its Leases (`create` on `events` in `events.k8s.io`, what
  --kubernetes-events needs), and nothing else on Events: no other verb, and
  no Events of the core group (the elector writes through events.k8s.io/v1
  only).
"""

import sys

import yaml

ELECTOR_ROLE = "metaparticle-sync-elector"


def main():
    problems = []
    roles = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                kind = (doc or {}).get("kind")
                name = (doc or {}).get("metadata", {}).get("name")
                where = f"{path}: {kind} {name}"
                if kind in ("ClusterRole", "ClusterRoleBinding"):
                    problems.append(f"{where}: cluster-wide; the elector needs only its namespace")
                if kind != "Role":
                    continue
                roles += 1
                rules = doc.get("rules", [])
                for rule in rules:
                    for field in ("apiGroups", "resources", "resourceNames", "verbs"):
                        if "*" in rule.get(field, []):
                            problems.append(f"{where}: a wildcard in {field}")
                if name != ELECTOR_ROLE:
                    continue
                on_events = [r for r in rules if "events" in r.get("resources", [])]
                wanted = [r for r in on_events if r.get("apiGroups") == ["events.k8s.io"]]
                if not any("create" in r.get("verbs", []) for r in wanted):
                    problems.append(f"{where}: no create on events in events.k8s.io (the Events at each change of holder)")
                for r in on_events:
                    if r.get("apiGroups") != ["events.k8s.io"]:
                        problems.append(f"{where}: events in {r.get('apiGroups')}: only events.k8s.io is used")
                    elif r.get("verbs") != ["create"]:
                        problems.append(f"{where}: {r.get('verbs')} on events: create is all it needs")
    if roles == 0:
        problems.append("no Role found in the rendered manifests")
    for p in problems:
        print(f"deploy: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"deploy: {roles} Roles grant least privilege (Events: create in events.k8s.io only)")


if __name__ == "__main__":
    main()
