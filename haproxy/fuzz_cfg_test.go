package haproxy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func addConfigSeeds(f *testing.F, add func(cfg []byte)) {
	f.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "octavia_tls_lb.cfg"))
	if err != nil {
		f.Fatal(err)
	}
	add(data)
	add([]byte("global\n    group haproxy\n    stats socket /x.sock\nfrontend a\n    bind :80\n    option external-check\n"))
	add([]byte("listen l\n\tbind [::1]:1,[::2]:2, 10.0.0.1:3\n"))
}

// FuzzParseConfig: the agent's scan of an uploaded haproxy configuration
// (stats socket, frontends and modes, bind addresses) never fails, and
// what it returns is usable.
func FuzzParseConfig(f *testing.F) {
	addConfigSeeds(f, func(cfg []byte) { f.Add(cfg) })
	f.Fuzz(func(t *testing.T, cfg []byte) {
		p := Parse(cfg)
		seen := map[string]bool{}
		for _, a := range p.BindAddresses {
			if a == "" || seen[a] || strings.ContainsAny(a, "[] \t\n") {
				t.Fatalf("bind address %q unusable or repeated in %q", a, p.BindAddresses)
			}
			seen[a] = true
		}
		for _, fe := range p.Frontends {
			if fe.Name == "" || fe.Mode == "" || strings.Contains(fe.Name, "prometheus") {
				t.Fatalf("frontend %+v", fe)
			}
		}
		if strings.ContainsAny(p.StatsSocket, " \t\n") {
			t.Fatalf("stats socket %q", p.StatsSocket)
		}
	})
}

// FuzzRewrite: the compatibility rewrite only drops whole lines, and
// applying it twice changes nothing more.
func FuzzRewrite(f *testing.F) {
	addConfigSeeds(f, func(cfg []byte) { f.Add(cfg, 2, 6); f.Add(cfg, 1, 5) })
	f.Fuzz(func(t *testing.T, cfg []byte, major, minor int) {
		v := Version{major, minor}
		out := Rewrite(cfg, v)
		// the streamed rewrite (uploads) gives the same whatever the
		// reads' sizes
		var streamed bytes.Buffer
		if err := RewriteTo(&streamed, iotest.HalfReader(bytes.NewReader(cfg)), v); err != nil || !bytes.Equal(streamed.Bytes(), out) {
			t.Fatalf("RewriteTo in small reads: %v\n%q\n%q", err, streamed.Bytes(), out)
		}
		if !bytes.Equal(Rewrite(out, v), out) {
			t.Fatalf("not idempotent:\n%q\n%q", out, Rewrite(out, v))
		}
		// out is cfg with whole lines removed, in order
		in := bytes.SplitAfter(cfg, []byte("\n"))
		i := 0
		for _, l := range bytes.SplitAfter(out, []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			for i < len(in) && !bytes.Equal(in[i], l) {
				i++
			}
			if i == len(in) {
				t.Fatalf("line %q is not an input line", l)
			}
			i++
		}
	})
}

// FuzzParseVersion: any `haproxy -v` output gives a version or an error.
func FuzzParseVersion(f *testing.F) {
	f.Add([]byte("HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/\n"))
	f.Add([]byte("HA-Proxy version 1.5.18 2016/05/10\n"))
	f.Add([]byte("HAProxy version 3.1-dev4-1 2024/07/24\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		v, err := ParseVersion(out)
		if err == nil && (v.Major < 0 || v.Minor < 0) {
			t.Fatalf("version %v from %q", v, out)
		}
	})
}
