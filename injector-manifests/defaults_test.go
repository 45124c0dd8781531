package manifests_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"testing"
)

// binaryConfigs are the Config structs of the two binaries, in the root module. They are read as
// source (this module does not import the root one) for their `env` and `envDefault` tags.
var binaryConfigs = []string{"../stub/config/config.go", "../initc/config/config.go"}

// envDefaults returns, per file, every variable of its Config struct and its envDefault ("" when
// it has none).
func envDefaults(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, path := range binaryConfigs {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		vars := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			field, ok := n.(*ast.Field)
			if !ok || field.Tag == nil {
				return true
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				t.Fatalf("%s: tag %s: %v", path, field.Tag.Value, err)
			}
			tag := reflect.StructTag(raw)
			if name := tag.Get("env"); name != "" {
				vars[name] = tag.Get("envDefault")
			}
			return true
		})
		if len(vars) == 0 {
			t.Fatalf("%s: no env-tagged fields", path)
		}
		out[path] = vars
	}
	return out
}

// TestConfigMapEqualsBinaryDefaults: every key in podns-config must be a variable of at least one
// binary and equal its default there, so including the component changes no behaviour and the
// ConfigMap is an honest list of defaults.
func TestConfigMapEqualsBinaryDefaults(t *testing.T) {
	bins := envDefaults(t)
	for key, val := range defaults {
		known := false
		for path, vars := range bins {
			def, ok := vars[key]
			if !ok {
				continue
			}
			known = true
			if def != val {
				t.Errorf("podns-config %s=%q, but %s defaults to %q", key, val, path, def)
			}
		}
		if !known {
			t.Errorf("podns-config %s is not a variable of %v", key, binaryConfigs)
		}
	}
}

// TestManifestsMatchBinaryDefaults: the components set neither the state dir, the DNS and HTTP
// listen addresses, the nameserver nor the resolv.conf path, and rely on the binaries' defaults matching the mount
// path, the probes' port, the sysctl and each other.
func TestManifestsMatchBinaryDefaults(t *testing.T) {
	bins := envDefaults(t)
	stub, initc := bins[binaryConfigs[0]], bins[binaryConfigs[1]]
	for _, c := range []struct{ bin, name, got, want string }{
		{"stub", "PODNS_STATE_DIR", stub["PODNS_STATE_DIR"], stateDir},
		{"initc", "PODNS_STATE_DIR", initc["PODNS_STATE_DIR"], stateDir},
		{"stub", "PODNS_HTTP_LISTEN", stub["PODNS_HTTP_LISTEN"], ":" + strconv.Itoa(httpPort)},
		// 53: the port the sysctl opens to non-root, and the only one a resolv.conf can name.
		{"stub", "PODNS_LISTEN", stub["PODNS_LISTEN"], "127.0.0.1:53"},
		{"initc", "PODNS_NAMESERVER", initc["PODNS_NAMESERVER"], "127.0.0.1"},
		{"initc", "PODNS_RESOLV_CONF", initc["PODNS_RESOLV_CONF"], "/etc/resolv.conf"},
		// The stub reads the search list and ndots from the same file initc rewrote; the
		// component mounts nothing over it, so both must default to the kubelet's path.
		{"stub", "PODNS_RESOLV_CONF", stub["PODNS_RESOLV_CONF"], "/etc/resolv.conf"},
	} {
		if c.got != c.want {
			t.Errorf("%s default %s=%q, the manifests assume %q", c.bin, c.name, c.got, c.want)
		}
	}
	// initc reads these from the downward API env the component sets.
	for _, v := range []string{"PODNS_POD_IP", "PODNS_HOST_IP"} {
		if _, ok := initc[v]; !ok {
			t.Errorf("initc has no variable %s; the component sets it", v)
		}
	}
}
