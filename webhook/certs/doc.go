// Package certs gives the webhook its serving certificate, in one of two modes
// (PODNS_CERT_MODE):
//
//   - Self: the webhook needs no add-on. The replicas share a CA kept in a Secret, each issues
//     its own ECDSA P-256 serving certificate from it, both are rotated after two thirds of their
//     life, and every webhook's caBundle in the MutatingWebhookConfiguration is kept equal to the
//     CA (see Self for the RBAC this takes).
//   - External: tls.crt and tls.key from a directory (cert-manager), re-read on change.
//
// Both serve through tls.Config.GetCertificate, so a new certificate takes effect at the next
// handshake without a restart, and report readiness through Ready.
package certs
