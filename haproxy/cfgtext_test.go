package haproxy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The examples of API.md §5.4.
func TestPeerName(t *testing.T) {
	for id, want := range map[string]string{
		"6e9fd1a2-1234-4cde-8f00-aabbccddeeff": "Vd6hhb5DDJex3fU0GEML66WVcMI",
		"amp_123":                              "WCbTKE70m_IHc_MucbXK5CkEoWQ",
	} {
		if got := PeerName(id); got != want {
			t.Errorf("PeerName(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestRewrite(t *testing.T) {
	in := "global\n    group haproxy\n    daemon\nbackend b\n    group x\n    server s 1.2.3.4:80 check\n    option external-check\n"
	want := "global\n    daemon\nbackend b\n    group x\n    server s 1.2.3.4:80 check\n    option external-check\n"
	if diff := cmp.Diff(want, string(Rewrite([]byte(in), Version{2, 6}))); diff != "" {
		t.Errorf("haproxy 2.6 (-want +got):\n%s", diff)
	}
	want = "global\n    daemon\nbackend b\n    group x\n    server s 1.2.3.4:80 check\n"
	if diff := cmp.Diff(want, string(Rewrite([]byte(in), Version{1, 5}))); diff != "" {
		t.Errorf("haproxy 1.5 (-want +got):\n%s", diff)
	}
}

// Parse reads what the agent needs back out of a configuration: the stats
// socket, the listeners with their type, and the addresses to advertise
// (the reference's rule: comma lists contribute every address, the first
// plain address ends the line).
func TestParse(t *testing.T) {
	cfg := "global\n    daemon\n    stats socket /var/lib/octavia/lb.sock mode 0666 level user\n" +
		"defaults\n    mode http\n" +
		"frontend a\n    bind 203.0.113.2:80\n    bind [2001:db8::4]:443 ssl crt /x.pem\n" +
		"\tbind 198.51.100.7:81,198.51.100.8:81 , 198.51.100.9:82 v4v6\n    bind-process 1\n" +
		"frontend b\n    mode tcp\n    bind 203.0.113.2:81\n" +
		"frontend c\n    bind 203.0.113.2:443 ssl crt-list /l.pem\n" +
		"frontend prometheus-exporter\n    bind 127.0.0.1:9101\n" +
		"backend x\n    mode tcp\n"
	want := ParsedConfig{
		StatsSocket:   "/var/lib/octavia/lb.sock",
		Frontends:     []Frontend{{"a", "HTTP"}, {"b", "TCP"}, {"c", "TERMINATED_HTTPS"}},
		BindAddresses: []string{"203.0.113.2", "2001:db8::4", "198.51.100.7", "198.51.100.8", "198.51.100.9", "127.0.0.1"},
	}
	if diff := cmp.Diff(want, Parse([]byte(cfg))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
