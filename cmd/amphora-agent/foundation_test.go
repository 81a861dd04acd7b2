package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// peerFingerprint returns the SHA-256 of the certificate the agent
// presents on a new TLS connection.
func peerFingerprint(t *testing.T, a *testutil.Agent) [32]byte {
	t.Helper()
	conn, err := tls.Dial("tcp", net.JoinHostPort(a.Host, itoa(a.Port)), a.TLSConfig(a.PKI.ClientPEM))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
}

func fileFingerprint(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(data, data)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(pair.Certificate[0])
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestMutualTLS(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{})

	t.Run("controller client gets through", func(t *testing.T) {
		st, hdr, body := a.Do("GET", "/", nil)
		if st != 200 || string(body) != `{"api_version":"1.0"}` || hdr.Get("Content-Type") != "application/json" {
			t.Fatalf("GET / = %d %q %q", st, hdr.Get("Content-Type"), body)
		}
	})
	for _, tc := range []struct{ name, cert string }{
		{"no client certificate", ""},
		{"client certificate from a rogue CA", a.PKI.RogueClientPEM},
	} {
		t.Run(tc.name+" is refused at the TLS layer", func(t *testing.T) {
			conn, err := tls.Dial("tcp", net.JoinHostPort(a.Host, itoa(a.Port)), a.TLSConfig(tc.cert))
			if err == nil {
				// TLS 1.3: the server's verdict arrives with the first read.
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Write([]byte("GET /1.0/info HTTP/1.1\r\nHost: x\r\n\r\n"))
				if err == nil {
					buf := make([]byte, 512)
					var n int
					n, err = conn.Read(buf)
					if err == nil {
						t.Fatalf("request answered: %q", buf[:n])
					}
				}
				conn.Close()
			}
			var alert tls.AlertError
			if !errors.As(err, &alert) && !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if strings.Contains(a.Log(), `path=/1.0/info`) {
				t.Fatal("the request reached a handler")
			}
		})
	}
	t.Run("TLS 1.1 client is refused", func(t *testing.T) {
		cfg := a.TLSConfig(a.PKI.ClientPEM)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
		if _, err := tls.Dial("tcp", net.JoinHostPort(a.Host, itoa(a.Port)), cfg); err == nil {
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("TLS 1.2 and 1.3 clients are accepted", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			cfg := a.TLSConfig(a.PKI.ClientPEM)
			cfg.MinVersion, cfg.MaxVersion = v, v
			conn, err := tls.Dial("tcp", net.JoinHostPort(a.Host, itoa(a.Port)), cfg)
			if err != nil {
				t.Fatalf("version %x: %v", v, err)
			}
			conn.Close()
		}
	})
}

func TestServerCertificateRotation(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{})
	serverPEM := a.Dir + "/server.pem"
	oldFP := fileFingerprint(t, a.PKI.ServerPEM)
	if got := peerFingerprint(t, a); got != oldFP {
		t.Fatal("agent does not serve its configured certificate")
	}

	t.Run("garbage is refused and the old certificate keeps serving", func(t *testing.T) {
		before, _ := os.ReadFile(serverPEM)
		for _, body := range []string{"garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
			st, hdr, resp := a.Do("PUT", "/1.0/certificate", []byte(body))
			if st != 400 || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("PUT garbage = %d %s", st, resp)
			}
		}
		// A certificate without its key is not a key pair either.
		certOnly, _ := os.ReadFile(a.PKI.ServerCA)
		if st, _, resp := a.Do("PUT", "/1.0/certificate", certOnly); st != 400 {
			t.Fatalf("PUT certificate without key = %d %s", st, resp)
		}
		// A well-formed pair the controller would refuse (the right
		// name, an unknown issuer) must not lock it out.
		rogue, _ := os.ReadFile(a.PKI.RogueServerPEM)
		if st, _, resp := a.Do("PUT", "/1.0/certificate", rogue); st != 400 || !strings.Contains(string(resp), "issued by") {
			t.Fatalf("PUT certificate from an unknown CA = %d %s", st, resp)
		}
		after, _ := os.ReadFile(serverPEM)
		if string(before) != string(after) {
			t.Fatal("server.pem changed after a refused upload")
		}
		if peerFingerprint(t, a) != oldFP {
			t.Fatal("served certificate changed after a refused upload")
		}
	})

	t.Run("new connections see the uploaded certificate", func(t *testing.T) {
		newPEM, err := os.ReadFile(a.PKI.Server2PEM)
		if err != nil {
			t.Fatal(err)
		}
		if st, _, body := a.Do("PUT", "/1.0/certificate", newPEM); st != 202 || string(body) != `{"message":"OK"}` {
			t.Fatalf("PUT /1.0/certificate = %d %s", st, body)
		}
		stored, _ := os.ReadFile(serverPEM)
		if string(stored) != string(newPEM) {
			t.Fatal("agent_server_cert does not hold the upload")
		}
		if fi, _ := os.Stat(serverPEM); fi.Mode().Perm() != 0o600 {
			t.Fatalf("server.pem mode %v", fi.Mode().Perm())
		}
		if got, want := peerFingerprint(t, a), fileFingerprint(t, a.PKI.Server2PEM); got != want {
			t.Fatal("new connection still gets the old certificate")
		}
		if strings.Contains(a.Log(), "PRIVATE KEY") {
			t.Fatal("key material in the log")
		}
	})
}

func TestRoutingAndErrors(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{})
	cases := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "//", 200, `{"api_version":"1.0"}`},
		{"GET", "/1.0/nothing", 404, `{"error":"404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.","http_code":404}`},
		{"GET", "/1.0/info/", 404, ""},
		{"DELETE", "/", 405, `{"error":"405 Method Not Allowed: The method is not allowed for the requested URL.","http_code":405}`},
		{"POST", "/1.0/info", 405, ""},
	}
	for _, tc := range cases {
		st, hdr, body := a.Do(tc.method, tc.path, nil)
		if st != tc.status || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s = %d %q %s", tc.method, tc.path, st, hdr.Get("Content-Type"), body)
		}
		if tc.body != "" && string(body) != tc.body {
			t.Errorf("%s %s body %s, want %s", tc.method, tc.path, body, tc.body)
		}
	}
	// HEAD mirrors GET without a body.
	req, _ := http.NewRequest("HEAD", a.URL("/1.0/info"), nil)
	resp, err := a.Client(a.PKI.ClientPEM).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD /1.0/info: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestBodyLimit(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{Options: map[string]string{"amphora_agent/max_request_body_size": "4096"}})
	big := []byte(strings.Repeat("x", 5000))
	st, _, body := a.Do("PUT", "/1.0/certificate", big)
	if st != 400 || !strings.Contains(string(body), "Request body too large") {
		t.Fatalf("oversized body = %d %s", st, body)
	}
	st, _, body = a.Do("PUT", "/1.0/config", big)
	if st != 400 {
		t.Fatalf("oversized config = %d %s", st, body)
	}
}

func TestInfoAndDetails(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{})
	st, _, body := a.Do("GET", "/1.0/info", nil)
	if st != 200 {
		t.Fatalf("GET /1.0/info = %d %s", st, body)
	}
	var info map[string]any
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if info["hostname"] != host || info["api_version"] != "1.0" {
		t.Fatalf("info %s", body)
	}
	for _, k := range []string{"haproxy_version", "keepalived_version", "ipvsadm_version"} {
		if _, ok := info[k]; !ok {
			t.Fatalf("info lacks %s: %s", k, body)
		}
	}
	if v, ok := info["haproxy_version"].(string); ok {
		if parts := strings.Split(v, "."); len(parts) < 2 {
			t.Fatalf("haproxy_version %q does not start with major.minor", v)
		}
	}
	// Keys in the reference's order.
	if !strings.HasPrefix(string(body), `{"hostname":`) {
		t.Fatalf("key order: %s", body)
	}

	st, _, body = a.Do("GET", "/1.0/details", nil)
	if st != 200 {
		t.Fatalf("GET /1.0/details = %d %s", st, body)
	}
	var d struct {
		CPU struct {
			Total   int64  `json:"total"`
			User    string `json:"user"`
			System  string `json:"system"`
			SoftIRQ string `json:"soft_irq"`
		} `json:"cpu"`
		CPUCount     int `json:"cpu_count"`
		Memory       map[string]int64
		Disk         map[string]int64
		Load         []string
		Networks     map[string]map[string]int64
		Active       bool
		Topology     string
		Packages     map[string]any
		HAProxyCount int `json:"haproxy_count"`
		Listeners    []string
		LVS          *int `json:"lvs_listener_process_count"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("details %s: %v", body, err)
	}
	if d.CPU.Total <= 0 || d.CPU.User == "" || d.CPUCount < 1 || d.Memory["total"] <= 0 || d.Disk["available"] <= 0 ||
		len(d.Load) != 3 || !d.Active || d.Topology != "SINGLE" || d.Packages == nil || d.Listeners == nil || d.LVS == nil {
		t.Fatalf("details: %s", body)
	}
}

func TestConfigUpdate(t *testing.T) {
	a := testutil.StartAgent(t, testutil.Options{})
	before, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	// A document the agent could not start with is refused, the file kept.
	bad := strings.Replace(string(before), "heartbeat_interval = 10", "heartbeat_interval = often", 1)
	st, _, body := a.Do("PUT", "/1.0/config", []byte(bad))
	if st != 400 || !strings.Contains(string(body), "heartbeat_interval") {
		t.Fatalf("bad config = %d %s", st, body)
	}
	if now, _ := os.ReadFile(a.ConfigFile); string(now) != string(before) {
		t.Fatal("config file changed after a refused upload")
	}
	good := strings.Replace(string(before), "heartbeat_key = insecure", "heartbeat_key = rotated", 1)
	good = strings.Replace(good, "heartbeat_interval = 10", "heartbeat_interval = 3", 1)
	st, _, body = a.Do("PUT", "/1.0/config", []byte(good))
	if st != 202 || string(body) != `{"message":"OK"}` {
		t.Fatalf("PUT /1.0/config = %d %s", st, body)
	}
	now, _ := os.ReadFile(a.ConfigFile)
	if string(now) != good {
		t.Fatal("config file does not hold the upload")
	}
	if fi, _ := os.Stat(a.ConfigFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode %v", fi.Mode().Perm())
	}
	if !strings.Contains(a.Log(), "agent configuration updated") || !strings.Contains(a.Log(), "heartbeat_interval=3s") {
		t.Fatalf("new options not applied:\n%s", a.Log())
	}
	if strings.Contains(a.Log(), "rotated") {
		t.Fatal("heartbeat key in the log")
	}
}
