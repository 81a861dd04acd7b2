package haproxy

import (
	"bytes"
	"strings"
	"testing"
)

func TestRewriteToStreams(t *testing.T) {
	long := strings.Repeat("x", 3*maxLineHead+17)
	v26 := Version{Major: 2, Minor: 6}
	for _, tc := range []struct {
		name, in, want string
		v              Version
	}{
		{"group in global dropped", "global\n    group haproxy\n    daemon\nfrontend f\n    group x\n", "global\n    daemon\nfrontend f\n    group x\n", v26},
		{"no final newline", "global\n    daemon", "global\n    daemon", v26},
		{"over-long line kept whole", "global\n    log " + long + "\nfrontend f\n", "global\n    log " + long + "\nfrontend f\n", v26},
		{"over-long group line dropped whole", "global\n    group " + long + "\n    daemon\n", "global\n    daemon\n", v26},
		{"over-long last line without newline", "backend b\n#" + long, "backend b\n#" + long, v26},
		{"external-check on old haproxy", "backend b\n    option external-check\n    mode tcp\n", "backend b\n    mode tcp\n", Version{Major: 1, Minor: 5}},
		{"external-check kept on new haproxy", "backend b\n    option external-check\n", "backend b\n    option external-check\n", v26},
		{"empty", "", "", v26},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := RewriteTo(&out, strings.NewReader(tc.in), tc.v); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got %d bytes %.120q, want %d bytes %.120q", out.Len(), out.String(), len(tc.want), tc.want)
			}
			if got := string(Rewrite([]byte(tc.in), tc.v)); got != tc.want {
				t.Errorf("Rewrite differs from RewriteTo: %.120q", got)
			}
		})
	}
}
