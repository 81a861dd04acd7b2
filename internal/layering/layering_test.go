// Package layering holds the test that keeps the package layers true:
// a package imports only packages of the layers below its own
// (ARCHITECTURE.md). Run it with "go test ./internal/layering".
package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// module is the import path of this module.
const module = "github.com/octavia-go/amphora-agent"

// layers lists the packages from the top down, by path prefix (a prefix
// covers the package and everything below it; the longest prefix wins).
// A package may import packages of lower layers only. A new package
// must find its place here, or the test fails and says so.
var layers = [][]string{
	// programs: the agent binary, the benchmark driver, the development
	// PKI generator, the image tests, "make vm"'s command
	{"cmd", "bench", "internal/testutil/devpki", "image", "test/vm/cmd"},
	// the VM harness (test/vm: its tests and "make vm" use it)
	{"test"},
	// the REST API and the heartbeat
	{"agent", "agent/heartbeat"},
	// what the API and the heartbeat read: configuration, host probes
	{"agent/config", "agent/hostinfo"},
	// the data-plane services
	{"haproxy", "keepalived"},
	// what the services run on: the service manager, the network
	// namespace, the agent's certificate; the agent's syslog delivery
	{"service", "netns", "certs", "internal/logging"},
	// test support (imported by tests and the benchmark driver only)
	{"internal/testutil"},
	// small helpers without knowledge of the amphora
	{"internal"},
}

// layerOf returns the layer of a package of this module, -1 when the
// table does not place it.
func layerOf(path string) int {
	rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	best, bestLen := -1, -1
	for i, l := range layers {
		for _, prefix := range l {
			if (rel == prefix || strings.HasPrefix(rel, prefix+"/")) && len(prefix) > bestLen {
				best, bestLen = i, len(prefix)
			}
		}
	}
	return best
}

type pkg struct {
	ImportPath string
	Imports    []string
}

// packages lists the packages of the module with their (non-test)
// imports, as "go list -json ./..." reports them.
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	return pkgs
}

// TestLayers fails when a package imports a package of its own layer or
// of a layer above it.
func TestLayers(t *testing.T) {
	for _, p := range packages(t) {
		from := layerOf(p.ImportPath)
		if from < 0 {
			t.Errorf("%s is in no layer: add it to the table in internal/layering and ARCHITECTURE.md", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if imp != module && !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := layerOf(imp)
			if to <= from {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package may import only lower layers",
					p.ImportPath, from, imp, to)
			}
		}
	}
}

// The table itself: every layer holds something, and each prefix is in
// one layer.
func TestLayerTable(t *testing.T) {
	seen := map[string]bool{}
	for i, l := range layers {
		if len(l) == 0 {
			t.Errorf("layer %d is empty", i)
		}
		for _, prefix := range l {
			if seen[prefix] {
				t.Errorf("%s is in two layers", prefix)
			}
			seen[prefix] = true
		}
	}
	if got := layerOf(module + "/haproxy/promproxy"); got != layerOf(module+"/haproxy") {
		t.Errorf("a sub-package belongs to its parent's layer: %d", got)
	}
	if got := layerOf(module + "/elsewhere"); got != -1 {
		t.Errorf("an unknown package got layer %d", got)
	}
}
