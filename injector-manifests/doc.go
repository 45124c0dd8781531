// Package manifests holds the podns Kustomize components (components/podns,
// components/podns-legacy), their examples, and the tests that render them with
// kustomize's krusty, decode the output strictly into Kubernetes API types and check
// it against the Pod Security Standards. It is its own Go module so that the
// Kubernetes and Kustomize test dependencies stay out of the podns binaries.
package manifests
