package heartbeat

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzLoadCounters: any counters file (the reference's, ours, damaged)
// loads or is refused; what loads is written back in a form that loads
// to the same values.
func FuzzLoadCounters(f *testing.F) {
	f.Add([]byte(`{"0f7c8a30-4e23-4b0c-9a6a-3d9f0e7d2b41": {"bin": 10, "bout": 20, "ereq": 0, "stot": 3}}`))
	f.Add([]byte(`{"a\"b\\c\u00e9\ud83d\ude00": {"bin": -1, "bout": 9223372036854775807}}`))
	f.Add([]byte("null"))
	f.Add([]byte("  \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), CountersFile)
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		c, err := loadCounters(path)
		if err != nil {
			return
		}
		if err := saveCounters(path, c); err != nil {
			t.Fatal(err)
		}
		back, err := loadCounters(path)
		if err != nil {
			t.Fatalf("our own file does not load: %v\n%s", err, c.marshal())
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("written %v, read back %v", c, back)
		}
	})
}
