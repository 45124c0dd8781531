// Command docgen writes the configuration reference, docs/configuration.md, from the stub's,
// initc's and the webhook's Config struct tags and exit codes (stub/config.Program,
// initc/config.Program, webhook/config.Program), the same values their -help prints. `make docs` runs it from the repository root:
//
//	go run ./internal/cli/docgen -o docs/configuration.md
//
// Without -o it writes to stdout. Its test fails when the committed file is stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"

	initc "github.com/podns/podns/initc/config"
	"github.com/podns/podns/internal/cli"
	stub "github.com/podns/podns/stub/config"
	webhook "github.com/podns/podns/webhook/config"
)

// Generate returns the whole reference: the stub first, then initc, then the webhook.
func Generate() []byte {
	var b bytes.Buffer
	cli.Reference(&b, stub.Program, initc.Program, webhook.Program)
	return b.Bytes()
}

func main() {
	out := flag.String("o", "", "file to write (default: stdout)")
	flag.Parse()
	if err := write(*out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func write(path string, stdout io.Writer) error {
	if path == "" {
		_, err := stdout.Write(Generate())
		return err
	}
	return os.WriteFile(path, Generate(), 0o644)
}
