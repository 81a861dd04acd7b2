package config

import (
	"net"
	"path/filepath"
	"testing"
)

// FuzzParse: any document is parsed or refused with an error, never a
// panic, and what is accepted is usable: absolute directories, a positive
// interval, a namespace name, a known TLS floor, a listen address.
func FuzzParse(f *testing.F) {
	f.Add([]byte(controllerRendered))
	f.Add([]byte("[DEFAULT]\ndebug = True\n"))
	f.Add([]byte("[amphora_agent]\nservice-manager = Builtin\nmax_request_body_size = 2048\n[haproxy_amphora]\nbind_host = [::1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(Source{Name: "fuzz", Data: data})
		if err != nil {
			return
		}
		if !filepath.IsAbs(c.BasePath) || !filepath.IsAbs(c.BaseCertDir) {
			t.Fatalf("relative directories accepted: %q %q", c.BasePath, c.BaseCertDir)
		}
		if c.HeartbeatInterval <= 0 || c.AgentRequestReadTimeout <= 0 || c.Namespace == "" || c.MaxBodySize < 1024 {
			t.Fatalf("unusable values accepted: %+v", c)
		}
		if _, err := TLSMinVersion(c.AgentTLSProtocol); err != nil {
			t.Fatal(err)
		}
		if _, _, err := net.SplitHostPort(c.ListenAddr()); err != nil {
			t.Fatalf("listen address %q: %v", c.ListenAddr(), err)
		}
	})
}

// FuzzMergeOwnOptions: for any running configuration (read from a
// document, as the agent's is) and any upload, the merged document parses
// and gives every own option the upload does not set its running value,
// and every one it sets the upload's value.
func FuzzMergeOwnOptions(f *testing.F) {
	f.Add([]byte(controllerRendered), []byte("[amphora_agent]\nservice_manager = builtin\nnetwork_namespace = amp-test\npci_rescan_path =\n"))
	f.Add([]byte("[DEFAULT]\ndebug = True"), []byte("[amphora_agent]\nsyslog_socket = \"/run/x.sock\"\n"))
	f.Add([]byte("[amphora_agent]\r\nnetwork_namespace = mine\r\n"), []byte("[amphora_agent]\nnetwork_namespace = theirs\n"))
	f.Fuzz(func(t *testing.T, upload, runningDoc []byte) {
		running, _, err := Parse(Source{Name: "running", Data: runningDoc})
		if err != nil {
			return
		}
		doc, _, err := MergeOwnOptions(upload, running, nil)
		if err != nil {
			return // the upload itself does not parse
		}
		next, _, err := Parse(Source{Name: "merged", Data: doc})
		if err != nil {
			t.Fatalf("the merged document does not parse: %v\n%q", err, doc)
		}
		alone, _, err := Parse(Source{Name: "upload", Data: upload})
		if err != nil {
			t.Fatalf("merged although the upload does not parse: %v", err)
		}
		set, err := optionsSet(upload)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ownOptions {
			want := o.value(running)
			if set[o.section+"/"+o.name] {
				want = o.value(alone)
			}
			if got := o.value(next); got != want {
				t.Fatalf("%s: %q after the merge, want %q\n%q", o.name, got, want, doc)
			}
		}
	})
}
