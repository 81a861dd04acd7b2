package vm

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// TestConfigDrive renders a build request with the controller's own
// CertComputeCreate task and masters the config drive from it: an ISO
// 9660 volume "config-2" whose meta_data.json lists every file the
// controller sent with its content, the key pair, the management port,
// and the controller's user data, where cloud-init's ConfigDrive
// datasource reads them.
func TestConfigDrive(t *testing.T) {
	testutil.RequireOctavia(t)
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/controller/worker/v2/tasks/compute_tasks.py"); err != nil {
		t.Skip("python3-octavia's compute tasks are not installed")
	}
	if _, err := isoTool(); err != nil {
		t.Skip(err)
	}
	isoinfo, err := exec.LookPath("isoinfo")
	if err != nil {
		t.Skip("isoinfo (genisoimage) is not installed: the drive cannot be read back")
	}
	dir := t.TempDir()
	id := testutil.NewUUID()
	pki, err := testutil.NewPKI(filepath.Join(dir, "pki"), id)
	if err != nil {
		t.Fatal(err)
	}
	lab := &Lab{ID: "beef", Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := RenderServerRequest(ctx, AmphoraCreate{
		AmphoraID: id, Topology: "ACTIVE_STANDBY", ServerPEM: pki.ServerPEM, ClientCA: pki.ClientCA,
		Conf: lab.controllerConf(7),
	})
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "amphora-"+id || req.KeyName != lab.KeyName() {
		t.Errorf("request name %q key %q", req.Name, req.KeyName)
	}
	conf := req.ConfigDriveFiles["/etc/octavia/amphora-agent.conf"]
	for _, want := range []string{"amphora_id = " + id, "controller_ip_port_list = 198.18.10.1:5555",
		"heartbeat_interval = 7", "heartbeat_key = " + lab.HeartbeatKey(), "loadbalancer_topology = ACTIVE_STANDBY",
		"agent_server_cert = /etc/octavia/certs/server.pem", "syslog_log_facility = LOG_LOCAL1"} {
		if !strings.Contains(conf, want) {
			t.Errorf("agent config lacks %q:\n%s", want, conf)
		}
	}
	rsyslog := req.ConfigDriveFiles["/etc/rsyslog.d/10-rsyslog.conf"]
	for _, want := range []string{`target="198.18.10.1"`, `port="10514"`, `port="10515"`, "local0.=info call tenant_forwarding", "local1.* call admin_forwarding"} {
		if !strings.Contains(rsyslog, want) {
			t.Errorf("10-rsyslog.conf lacks %q:\n%s", want, rsyslog)
		}
	}
	serverPEM, _ := os.ReadFile(pki.ServerPEM)
	clientCA, _ := os.ReadFile(pki.ClientCA)
	if req.ConfigDriveFiles["/etc/octavia/certs/server.pem"] != string(serverPEM) ||
		req.ConfigDriveFiles["/etc/octavia/certs/client_ca.pem"] != string(clientCA) || len(req.ConfigDriveFiles) != 4 {
		t.Errorf("config drive files: %d, certificates as given: %v", len(req.ConfigDriveFiles),
			req.ConfigDriveFiles["/etc/octavia/certs/server.pem"] == string(serverPEM))
	}
	if !strings.HasPrefix(req.UserData, "#cloud-config") || !strings.Contains(req.UserData, "systemctl restart rsyslog") {
		t.Errorf("user data:\n%s", req.UserData)
	}

	d := &ConfigDrive{
		InstanceID: testutil.NewUUID(), Request: req, PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDnXnQ6w avm-beef",
		Mgmt: MgmtPort{ID: testutil.NewUUID(), NetworkID: testutil.NewUUID(), MAC: "fa:16:3e:00:00:01",
			Address: netip.MustParsePrefix("198.18.10.11/24")},
	}
	iso := filepath.Join(dir, "config.iso")
	if err := d.Build(ctx, iso); err != nil {
		t.Fatal(err)
	}
	read := func(path string) []byte {
		t.Helper()
		out, err := exec.Command(isoinfo, "-i", iso, "-J", "-x", path).Output()
		if err != nil {
			t.Fatalf("isoinfo -x %s: %v", path, err)
		}
		return out
	}
	info, err := exec.Command(isoinfo, "-d", "-i", iso).Output()
	if err != nil || !strings.Contains(string(info), "Volume id: config-2") {
		t.Errorf("isoinfo -d: %v\n%s", err, info)
	}
	var meta struct {
		UUID       string            `json:"uuid"`
		Hostname   string            `json:"hostname"`
		PublicKeys map[string]string `json:"public_keys"`
		Files      []struct {
			Path        string `json:"path"`
			ContentPath string `json:"content_path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(read("/openstack/latest/meta_data.json"), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.UUID != d.InstanceID || meta.Hostname != req.Name || meta.PublicKeys[req.KeyName] != d.PublicKey {
		t.Errorf("meta_data.json: %+v", meta)
	}
	if len(meta.Files) != len(req.ConfigDriveFiles) {
		t.Errorf("meta_data.json lists %d files, want %d", len(meta.Files), len(req.ConfigDriveFiles))
	}
	for _, f := range meta.Files {
		if got := string(read("/openstack" + f.ContentPath)); got != req.ConfigDriveFiles[f.Path] {
			t.Errorf("%s (%s) on the drive differs from the controller's", f.Path, f.ContentPath)
		}
	}
	if got := string(read("/openstack/latest/user_data")); got != req.UserData {
		t.Errorf("user_data differs:\n%s", got)
	}
	var network struct {
		Links []struct {
			MAC string `json:"ethernet_mac_address"`
		} `json:"links"`
		Networks []struct {
			Type      string `json:"type"`
			IPAddress string `json:"ip_address"`
			Netmask   string `json:"netmask"`
		} `json:"networks"`
	}
	if err := json.Unmarshal(read("/openstack/latest/network_data.json"), &network); err != nil {
		t.Fatal(err)
	}
	if len(network.Links) != 1 || network.Links[0].MAC != "fa:16:3e:00:00:01" || len(network.Networks) != 1 ||
		network.Networks[0].Type != "ipv4" || network.Networks[0].IPAddress != "198.18.10.11" || network.Networks[0].Netmask != "255.255.255.0" {
		t.Errorf("network_data.json: %+v", network)
	}
}

func TestNetmask(t *testing.T) {
	for p, want := range map[string]string{"198.18.10.0/24": "255.255.255.0", "10.0.0.0/8": "255.0.0.0",
		"192.0.2.0/26": "255.255.255.192", "0.0.0.0/0": "0.0.0.0", "10.1.2.3/32": "255.255.255.255"} {
		if got := netmask(netip.MustParsePrefix(p)); got != want {
			t.Errorf("netmask(%s) = %s, want %s", p, got, want)
		}
	}
}
