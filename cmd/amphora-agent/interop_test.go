package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// TestOctaviaClientFoundation drives the agent with the Octavia
// controller's own REST client (python3-octavia), hostname check included.
func TestOctaviaClientFoundation(t *testing.T) {
	testutil.RequireOctavia(t)
	a := testutil.StartAgent(t, testutil.Options{})
	conf, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	newConf := strings.Replace(string(conf), "heartbeat_key = insecure", "heartbeat_key = from-controller", 1)
	newCert, err := os.ReadFile(a.PKI.Server2PEM)
	if err != nil {
		t.Fatal(err)
	}
	res := a.Octavia(
		testutil.OctaviaCall{Call: "api_version"},
		testutil.OctaviaCall{Call: "driver_versions"},
		testutil.OctaviaCall{Call: "get_info"},
		testutil.OctaviaCall{Call: "get_details"},
		testutil.OctaviaCall{Call: "update_agent_config", Args: []any{newConf}},
		testutil.OctaviaCall{Call: "update_cert_for_rotation", Args: []any{string(newCert)}},
		testutil.OctaviaCall{Call: "get_info"}, // over a new connection with the rotated certificate
	)
	for i, r := range res {
		if !r.OK {
			t.Fatalf("call %d failed: %s: %s\nagent log:\n%s", i, r.Error, r.Message, a.Log())
		}
	}
	var ver map[string]string
	if err := json.Unmarshal(res[0].Result, &ver); err != nil || ver["api_version"] != "1.0" {
		t.Fatalf("api version %s", res[0].Result)
	}
	var dv struct {
		Versions   []string `json:"haproxy_versions"`
		APIVersion string   `json:"api_version"`
	}
	if err := json.Unmarshal(res[1].Result, &dv); err != nil || dv.APIVersion != "1.0" || len(dv.Versions) != 2 {
		t.Fatalf("driver versions %s", res[1].Result)
	}
	var details map[string]any
	if err := json.Unmarshal(res[3].Result, &details); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"active_tuned_profiles", "cpu_count", "memory"} {
		if _, ok := details[k]; !ok {
			t.Fatalf("details lacks %s", k)
		}
	}
	if got, _ := os.ReadFile(a.ConfigFile); string(got) != newConf {
		t.Fatal("config file not updated by update_agent_config")
	}
	if got, _ := os.ReadFile(a.Dir + "/server.pem"); string(got) != string(newCert) {
		t.Fatal("server certificate not updated by update_cert_for_rotation")
	}
}
