#!/usr/bin/env bash
# The main job, end to end: a cluster (the embedded local one unless KUBECONFIG is set), our CRDs,
# the original Jupyternetes example template and instance, and `jupyternetes-ssa reconcile --once`
# with `kadense` as a catalogue namespace (its templates serve every namespace; README, "Tenancy").
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KUBECONFIG:-}" ]; then
  jupyternetes-ssa local-cluster up
  eval "$(jupyternetes-ssa local-cluster env)"
fi
command -v kubectl >/dev/null || { echo "kubectl is needed on PATH" >&2; exit 1; }

jupyternetes-ssa crds | kubectl apply --server-side -f -
kubectl wait --for condition=Established crd/jupyternotebookinstances.kadense.io crd/jupyternotebooktemplates.kadense.io
kubectl create namespace kadense --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f examples/seed-template.yaml -f examples/seed-instance.yaml

echo "--- first pass: create"
jupyternetes-ssa reconcile --once --catalog-namespace kadense
kubectl wait --for=jsonpath='{.status.phase}'=Running pod/8dc366d8a0f05869bfdb6e7eb3d83f65-notebook --timeout=60s
echo "--- second pass: status follows the pod"
jupyternetes-ssa reconcile --once --catalog-namespace kadense
kubectl get jupyternotebookinstances,pods,pvc -n default -o wide
kubectl get jni 8dc366d8a0f05869bfdb6e7eb3d83f65 -n default -o jsonpath='{.status}{"\n"}'
