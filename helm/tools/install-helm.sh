#!/usr/bin/env bash
# Builds Helm v3 from source with the Go toolchain into the project's .tools/bin.
# Only the Go module proxy is needed (no release download). Go's own build and module
# caches stay in their default places, so a rebuild is quick, and the script does
# nothing when the pinned version is already installed with the same build flags.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="${ROOT}/.tools/bin"
HELM="${BIN_DIR}/helm"

command -v go >/dev/null || { echo "install-helm: Go is needed to build Helm" >&2; exit 1; }

# Official builds stamp the release and the Kubernetes version of their client-go into the
# binary; without the latter, `helm template` assumes Kubernetes 1.20. Read it from Helm's
# own go.mod, as Helm's Makefile does.
go_mod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, part, "."); print part[2] }' "${go_mod}")"
[[ -n "${k8s_minor}" ]] || { echo "install-helm: no client-go version in ${go_mod}" >&2; exit 1; }

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for package in chartutil lint/rules; do
  ldflags+=" -X helm.sh/helm/v3/pkg/${package}.k8sVersionMajor=1"
  ldflags+=" -X helm.sh/helm/v3/pkg/${package}.k8sVersionMinor=${k8s_minor}"
done

# `go install` records the module version and the flags in the binary: compare both.
if [[ -x "${HELM}" ]]; then
  built="$(go version -m "${HELM}" 2>/dev/null || true)"
  if grep -qE "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+${HELM_VERSION}[[:space:]]" <<<"${built}" \
    && grep -qF -- "-ldflags=\"${ldflags}\"" <<<"${built}"; then
    exit 0
  fi
fi

mkdir -p "${BIN_DIR}"
echo "install-helm: building helm ${HELM_VERSION} (Kubernetes 1.${k8s_minor}) into ${BIN_DIR}" >&2
GOBIN="${BIN_DIR}" CGO_ENABLED=0 go install -ldflags "${ldflags}" \
  "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"${HELM}" version --short
