// Command webhook is podns's mutating admission webhook: it adds podns to every Pod created in a
// namespace labelled podns.io/inject=enabled (README, "Inject at admission"; docs/manual.md, "The
// admission webhook"). Binary bin/webhook, image ghcr.io/podns/webhook:<version>
// (Dockerfile.webhook). What it injects is decided in package inject; this package is the server
// around it. Every setting is a PODNS_* variable: docs/configuration.md#webhook, and
// `webhook -help` prints the same.
//
// # Endpoints
//
//   - 9443 HTTPS (PODNS_WEBHOOK_LISTEN): /mutate-pod is the webhook sidecar.podns.io (sidecar
//     mode; restricted for a pod labelled podns.io/mode=restricted); /mutate-pod-restricted is
//     restricted.podns.io (restricted mode).
//   - 9254 HTTP (PODNS_HTTP_LISTEN): /metrics (controller-runtime's registry with
//     controller_runtime_webhook_*, what package inject registers, Go and process collectors,
//     podns_build_info); /healthz (200 while the process serves); /readyz (200 once a serving
//     certificate is served on 9443 and, in self mode, the last check found every webhook's
//     caBundle equal to the CA bundle; 503 with the reason otherwise, and from SIGTERM on).
//
// The server is controller-runtime's (webhook.NewServer, TLS 1.2+, HTTP/1.1 only, the certificate
// through tls.Config.GetCertificate); a panic in a handler answers that request with an error
// instead of ending the process. On SIGTERM /readyz turns 503 at once, admission goes on for
// PODNS_SHUTDOWN_GRACE (5 s) so the Service's endpoints drop the replica first — with
// failurePolicy Fail a rollout would otherwise refuse pods — then requests in flight are drained
// and the process exits 0.
//
// The cluster DNS address (the stub's upstream in restricted mode) is PODNS_CLUSTER_DNS, or else
// the clusterIP of Service kube-system/kube-dns, read once at start; when neither exists the
// webhook exits 2 saying to set PODNS_CLUSTER_DNS. The API server is reached with
// controller-runtime's config loader: KUBECONFIG when set, else the in-cluster ServiceAccount.
//
// # Certificates
//
// PODNS_CERT_MODE=self (default) needs no add-on (package certs):
//
//   - The replicas share one CA (ECDSA P-256, 1 year) in the Secret podns-webhook-ca of the
//     webhook's namespace (ca.crt, ca.key, and previous-ca.crt during a CA rotation). The first
//     replica to find it missing creates it; a replica that loses the create race reads the
//     winner's. Writes carry the resourceVersion read, so two replicas never overwrite each other.
//   - Each replica issues its own serving certificate (ECDSA P-256, 30 days, key only in memory)
//     for <svc>, <svc>.<ns>, <svc>.<ns>.svc and 127.0.0.1 (a webhook registered by URL on
//     loopback, as the API-server test does).
//   - Every minute a replica re-reads the Secret and the MutatingWebhookConfiguration
//     (PODNS_WEBHOOK_CONFIGURATION) and writes the CA bundle into every webhook's
//     clientConfig.caBundle where it differs: a caBundle someone else changed is put back within
//     a minute. A periodic check, not a watch: it needs only get and update.
//   - Both replicas compute the same bundle from the same Secret, so they do not fight. A replica
//     whose read of the Secret is older than another's CA rotation sees a newer CA in the
//     caBundle, re-reads the Secret instead of writing, and converges.
//   - Rotation after two thirds of a certificate's life: the serving certificate after 20 days;
//     the CA after 8 months, the old CA staying in the bundle (and in previous-ca.crt) until it
//     expires, so certificates of either CA verify while the replicas move over. A replica serves
//     a certificate of the new CA only once it has seen the caBundle carry it.
//
// PODNS_CERT_MODE=external: tls.crt and tls.key from PODNS_CERT_DIR (cert-manager's Secret),
// re-read on change (fsnotify, and every 10 s); cert-manager's cainjector owns the caBundle. The
// webhook then needs no RBAC on Secrets or on the MutatingWebhookConfiguration.
//
// # RBAC it needs
//
// No list or watch: the webhook has no cache or informer.
//
//   - Self mode: get, update on admissionregistration.k8s.io mutatingwebhookconfigurations named
//     podns-webhook (ClusterRole; no patch: webhook/certs writes the object back whole with
//     Update); get, update on the Secret podns-webhook-ca and create on
//     secrets (the API server cannot restrict create by name) in the webhook's namespace (Role).
//   - PODNS_CLUSTER_DNS unset: get on the Service kube-system/kube-dns (Role in kube-system).
package main
