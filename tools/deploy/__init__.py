"""Deployment tooling: render the Kubernetes overlays offline, check them against our policy,
and fetch the Triton model repository into a pod (the init container of deploy/k8s)."""
