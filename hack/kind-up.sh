#!/usr/bin/env bash
# A real cluster on a laptop: kind + the image + the chart + the examples.
# Needs docker, kind, kubectl and helm. Run from the repository root: make kind-up
set -euo pipefail

CLUSTER=${CLUSTER:-modelway}
IMAGE=${IMAGE:-modelway:dev}
NS=${NS:-modelway-system}
APP_NS=${APP_NS:-my-team}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kubectl config use-context "kind-$CLUSTER"

docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

helm upgrade --install modelway charts/modelway --namespace "$NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout 5m

# The app namespace: opted in, then providers, routes and the demo app (its pod gets the sidecar).
kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$APP_NS" modelway.io/inject=enabled --overwrite
kubectl apply -n "$APP_NS" -f examples/k8s/

cat <<MSG

Modelway is up on kind cluster '$CLUSTER'.
  Put real API keys in examples/k8s/credentials.yaml (keep the label modelway.io/credentials=true:
  the controller reads no other Secrets), then:
    kubectl -n $APP_NS apply -f examples/k8s/credentials.yaml
  Watch the demo app's requests, and the sidecar that carries them:
    kubectl -n $APP_NS logs deploy/demo-app -c app -f
    kubectl -n $APP_NS logs deploy/demo-app -c modelway-proxy -f
  The routes and how many sidecars run them:
    kubectl -n $APP_NS get modelroutes
  Tear down: kind delete cluster --name $CLUSTER
MSG
