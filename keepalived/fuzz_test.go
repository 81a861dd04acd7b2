package keepalived

import (
	"bytes"
	"strings"
	"testing"
)

// lvsSeed is what the controller renders for a UDP listener with a
// health monitor, one enabled and one disabled member.
const lvsSeed = `# Configuration for Loadbalancer 5b9e0f3c-7f8e-4a1e-9b55-2f1d1c8f0a11
# Configuration for Listener 0f7c8a30-4e23-4b0c-9a6a-3d9f0e7d2b41

net_namespace amphora-haproxy

virtual_server_group ipv4-group {
    198.51.100.100 53
}

virtual_server group ipv4-group {
    lb_algo rr
    lb_kind NAT
    protocol UDP
    delay_loop 30
    delay_before_retry 30
    retry 3

    # Configuration for Pool 7a1f6c2e-0b3d-4d8e-a2c9-5e4f3b2a1c0d
    # Configuration for HealthMonitor 9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a
    # Configuration for Member 3c0e1d2f-1111-4111-8111-111111111111
    real_server 198.18.2.21 53 {
        weight 1
        MISC_CHECK {
            misc_path "/usr/bin/amphora-agent health-check udp 198.18.2.21 53"
            misc_timeout 5
        }
    }

    # Member 3c0e1d2f-2222-4222-8222-222222222222 is disabled

}
`

// FuzzParseLVSConfig: the scan of an LVS configuration never fails and
// what it returns is consistent.
func FuzzParseLVSConfig(f *testing.F) {
	f.Add([]byte(lvsSeed))
	f.Add([]byte(strings.ReplaceAll(lvsSeed, "198.51.100.100 53", "2001:db8::100 53\n    198.51.100.100 53")))
	f.Add([]byte("# Listener 0f7c8a30-4e23-4b0c-9a6a-3d9f0e7d2b41 is disabled\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := ParseLVSConfig(data)
		for _, v := range c.VIPs {
			if !v.IsValid() {
				t.Fatalf("invalid VIP %v", v)
			}
		}
		for _, m := range c.Members {
			if m.ID == "" {
				t.Fatalf("member without id: %+v", c.Members)
			}
		}
		_ = c.VIPAddresses()
	})
}

// FuzzClassify: keepalived's diagnostics are sorted into fatal and
// tolerated lines, each line at most once, nothing invented.
func FuzzClassify(f *testing.F) {
	f.Add([]byte("SECURITY VIOLATION - scripts are being executed but script_security not enabled.\n(bad.conf: Line 2) Unknown keyword 'bogus_keyword'\n"))
	f.Add([]byte("Config files missing '/nonexistent'.\n"))
	f.Add([]byte("There are 3 missing '}'s or extra '{'s\n\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		for _, classify := range []func([]byte) ([]string, []string){Classify, ClassifyLVS} {
			fatal, tol := classify(out)
			if len(fatal)+len(tol) > bytes.Count(out, []byte("\n"))+1 {
				t.Fatalf("%d+%d lines out of %q", len(fatal), len(tol), out)
			}
			for _, l := range append(fatal, tol...) {
				if !strings.Contains(string(out), l) {
					t.Fatalf("line %q is not in the output", l)
				}
			}
		}
	})
}

// FuzzWithoutNamespace: blanking net_namespace keeps the line numbers
// keepalived's diagnostics refer to.
func FuzzWithoutNamespace(f *testing.F) {
	f.Add([]byte(lvsSeed))
	f.Add([]byte("net_namespace x\nnet_namespace"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := withoutNamespace(data)
		if bytes.Count(out, []byte("\n")) != bytes.Count(data, []byte("\n")) {
			t.Fatalf("line count changed: %q -> %q", data, out)
		}
		for _, l := range bytes.Split(out, []byte("\n")) {
			if f := bytes.Fields(l); len(f) > 0 && string(f[0]) == "net_namespace" {
				t.Fatalf("net_namespace left in %q", out)
			}
		}
	})
}
