#!/usr/bin/env bash
# Renders every kustomization under deploy/ with `kubectl kustomize`,
# validates the result against the Kubernetes 1.37 schemas in strict mode
# (unknown fields are errors), has the mpsync and the elector this checkout
# builds parse the arguments every mpsync and elector container is given
# (scripts/check-deploy-args.py), checks that every Role grants least
# privilege, the elector's Events included (scripts/check-deploy-rbac.py),
# and checks the gateways' Envoy configurations with `envoy --mode validate`
# (the filter's against the filter built by scripts/build-wasm.sh). Tools
# come from scripts/setup.sh; mpsync and the elector from the test build.
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl=.tools/kubectl/bin/kubectl
validate() { PYTHONPATH=.tools/kubernetes-validate .tools/kubernetes-validate/bin/kubernetes-validate "$@"; }
envoy=.tools/envoy/envoy/_bin/envoy
filter=target/wasm32-wasip1/release/leader_filter.wasm
mpsync=$PWD/target/debug/mpsync
elector=$PWD/target/debug/elector

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

found=0
while IFS= read -r kustomization; do
  dir=$(dirname "$kustomization")
  name=${dir//\//-}
  "$kubectl" kustomize "$dir" >"$out/$name.yaml"
  validate --strict --quiet "$out/$name.yaml"
  printf 'deploy: %s renders and validates (%s objects)\n' "$dir" "$(grep -c '^kind:' "$out/$name.yaml")"
  found=$((found + 1))
done < <(find deploy -name kustomization.yaml | sort)
[ "$found" -gt 0 ] || { echo "deploy: no kustomization found" >&2; exit 1; }

for bin in "$mpsync" "$elector"; do
  [ -x "$bin" ] || { echo "deploy: $bin is missing; run cargo build --profile test --bins" >&2; exit 1; }
done
PYTHONPATH=.tools/kubernetes-validate python3 scripts/check-deploy-args.py "$mpsync" "$elector" "$out"/*.yaml
PYTHONPATH=.tools/kubernetes-validate python3 scripts/check-deploy-rbac.py "$out"/*.yaml

[ -f "$filter" ] || { echo "deploy: $filter is missing; run scripts/build-wasm.sh" >&2; exit 1; }
sed "s#/etc/envoy/leader_filter.wasm#$PWD/$filter#" deploy/gateway/envoy.yaml >"$out/envoy.yaml"
"$envoy" --mode validate -c "$out/envoy.yaml" --log-level warn >/dev/null
echo "deploy: deploy/gateway/envoy.yaml passes envoy --mode validate"
# The EDS gateway's endpoint file must exist to validate: an empty one, in
# a folder of the check's own.
mkdir -p "$out/mpsync"
echo '{"version_info":"0","resources":[]}' >"$out/mpsync/web.json"
for config in deploy/gateway-eds/envoy.yaml envoy/examples/gateway-eds.yaml; do
  sed -e "s#/var/run/mpsync#$out/mpsync#g" -e "s#/tmp/mpsync-eds#$out/mpsync#g" "$config" >"$out/eds.yaml"
  "$envoy" --mode validate -c "$out/eds.yaml" --log-level warn >/dev/null
  echo "deploy: $config passes envoy --mode validate"
done
