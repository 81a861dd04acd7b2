package testutil

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// RemoteOptions describe an agent the test did not start itself: one
// running inside a container or a virtual machine.
type RemoteOptions struct {
	Host      string // management address the agent binds (bind_host)
	Port      int    // bind_port
	AmphoraID string // the CN/SAN of its server certificate
	PKI       *PKI   // the PKI its certificates come from
	// Dir is a scratch directory of the test (HOME of the Octavia client).
	Dir string
	// LogFile, optional, is where the test collects the agent's log
	// (for example the container's journal); Log reads it.
	LogFile string
}

// Remote returns an Agent for a process running elsewhere, reachable at
// host:port: URL, Client, Do, TLSConfig, Octavia and RenderSpec work as
// for a started agent. The test controls the process's lifecycle itself:
// Start and Restart must not be called (there is no binary to run), Stop
// and PID do nothing.
func Remote(t testing.TB, o RemoteOptions) *Agent {
	t.Helper()
	if o.Host == "" || o.Port == 0 || o.AmphoraID == "" || o.PKI == nil || o.Dir == "" {
		t.Fatalf("testutil.Remote: Host, Port, AmphoraID, PKI and Dir are required: %+v", o)
	}
	return &Agent{
		t: t, Dir: o.Dir, AmphoraID: o.AmphoraID, Host: o.Host, Port: o.Port, PKI: o.PKI,
		BasePath: "/var/lib/octavia", CertDir: "/var/lib/octavia/certs", LogFile: o.LogFile,
	}
}

// AwaitAnswer polls GET / over mTLS with the controller's client
// certificate until the agent answers 200 or ctx ends; it returns the
// last failure then.
func (a *Agent) AwaitAnswer(ctx context.Context) error {
	client := a.Client(a.PKI.ClientPEM)
	client.Timeout = 2 * time.Second
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL("/"), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET / answered %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent at %s did not answer: %w (last: %v)", a.URL("/"), ctx.Err(), last)
		case <-tick.C:
		}
	}
}
