// Command webhook is podns's mutating admission webhook: it adds podns to every Pod created in a
// namespace labelled podns.io/inject=enabled. See the README, "Inject at admission".
package main

import (
	_ "github.com/podns/podns/webhook/inject"
	_ "sigs.k8s.io/controller-runtime/pkg/webhook"
)

func main() {}
