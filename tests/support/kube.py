"""The Kubernetes version the tests validate against: the node image of the kind version
that scripts/install-tools.sh installs (kind v0.30.0 -> kindest/node v1.34.0)."""

KUBERNETES_VERSION = "1.34.0"
