package fsutil

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNames: an id or certificate name that passes reaches a path as one
// plain element, never a way out of its directory.
func FuzzNames(f *testing.F) {
	f.Add("6e9fd1a2-1234-4cde-8f00-aabbccddeeff")
	f.Add("0f7c8a30-4e23-4b0c-9a6a-3d9f0e7d2b41.pem")
	f.Add("da39a3ee5e6b4b0d3255bfef95601890afd80709.pem")
	f.Add("../x.pem")
	f.Fuzz(func(t *testing.T, name string) {
		for _, ok := range []bool{ValidID(name), ValidPEMName(name)} {
			if !ok {
				continue
			}
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") ||
				filepath.Base(name) != name || !filepath.IsLocal(name) || strings.HasPrefix(name, ".") {
				t.Fatalf("%q passes", name)
			}
		}
	})
}
