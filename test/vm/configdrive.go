package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"
)

// ServerRequest is what the Octavia controller asks Nova for when it
// creates an amphora: the keyword arguments of its compute driver's
// build(), recorded by test/interop/amphora_create.py from the
// controller's own CertComputeCreate task.
type ServerRequest struct {
	Name             string            `json:"name"`
	KeyName          string            `json:"key_name"`
	ConfigDriveFiles map[string]string `json:"config_drive_files"`
	UserData         string            `json:"user_data"`
	NetworkIDs       []string          `json:"network_ids"`
	PortIDs          []string          `json:"port_ids"`
}

// AmphoraCreate describes one amphora creation as the controller sees it.
type AmphoraCreate struct {
	AmphoraID string
	Topology  string // SINGLE or ACTIVE_STANDBY
	ServerPEM string // path of the amphora's server certificate + key
	ClientCA  string // path of the CA of the controller's client certificates
	// Conf are octavia.conf overrides: group -> option -> value.
	Conf map[string]map[string]any
}

// RenderServerRequest runs the controller's CertComputeCreate task
// (python3-octavia) and returns the build request it makes.
func RenderServerRequest(ctx context.Context, c AmphoraCreate) (*ServerRequest, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(map[string]any{
		"amphora_id": c.AmphoraID, "server_pem": c.ServerPEM, "client_ca": c.ClientCA,
		"topology": c.Topology, "conf": c.Conf,
	})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(root, "test/interop/amphora_create.py"))
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir()}
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("amphora_create.py: %v: %s", err, stderr.Bytes())
	}
	var req ServerRequest
	if err := json.Unmarshal(out, &req); err != nil {
		return nil, fmt.Errorf("amphora_create.py output %q: %w", out, err)
	}
	return &req, nil
}

// MgmtPort is the amphora's port on the management network
// (amp_boot_network_list), as Nova describes it in network_data.json.
type MgmtPort struct {
	ID        string // Neutron port id
	NetworkID string
	MAC       string
	Address   netip.Prefix // fixed IP and subnet prefix length
	MTU       int
}

// ConfigDrive is what Nova puts on a config drive for one server.
type ConfigDrive struct {
	InstanceID string // Nova server uuid
	Request    *ServerRequest
	// PublicKey is the key pair key_name names (one OpenSSH public key line).
	PublicKey string
	Mgmt      MgmtPort
}

// Build writes the config drive as Nova does (ISO 9660 labelled
// config-2, made with genisoimage and Nova's options) to path. Layout:
//
//	openstack/latest/meta_data.json     uuid, name, hostname, keys, "files"
//	openstack/latest/user_data          the controller's cloud-config
//	openstack/latest/network_data.json  the management port, static
//	openstack/latest/vendor_data*.json  {}
//	openstack/content/NNNN              the injected files' contents
func (d *ConfigDrive) Build(ctx context.Context, path string) error {
	tree, err := os.MkdirTemp(filepath.Dir(path), ".configdrive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	latest := filepath.Join(tree, "openstack", "latest")
	content := filepath.Join(tree, "openstack", "content")
	for _, dir := range []string{latest, content} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	seed := make([]byte, 512)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	type file struct {
		Path        string `json:"path"`
		ContentPath string `json:"content_path"`
	}
	var files []file
	paths := make([]string, 0, len(d.Request.ConfigDriveFiles))
	for p := range d.Request.ConfigDriveFiles {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for i, p := range paths {
		name := fmt.Sprintf("%04d", i)
		if err := os.WriteFile(filepath.Join(content, name), []byte(d.Request.ConfigDriveFiles[p]), 0o644); err != nil {
			return err
		}
		files = append(files, file{Path: p, ContentPath: "/content/" + name})
	}
	meta := map[string]any{
		"uuid": d.InstanceID, "name": d.Request.Name, "hostname": d.Request.Name,
		"launch_index": 0, "availability_zone": "nova", "project_id": "octavia",
		"meta": map[string]string{}, "devices": []any{}, "dedicated_cpus": []any{},
		"random_seed": base64.StdEncoding.EncodeToString(seed),
	}
	if d.Request.KeyName != "" {
		meta["public_keys"] = map[string]string{d.Request.KeyName: d.PublicKey}
		meta["keys"] = []map[string]string{{"name": d.Request.KeyName, "type": "ssh", "data": d.PublicKey}}
	}
	if len(files) > 0 {
		meta["files"] = files
	}
	link := "tap" + d.Mgmt.ID[:11]
	mtu := d.Mgmt.MTU
	if mtu == 0 {
		mtu = 1500
	}
	mask := netip.PrefixFrom(d.Mgmt.Address.Addr(), d.Mgmt.Address.Bits())
	network := map[string]any{
		"links": []any{map[string]any{
			"id": link, "vif_id": d.Mgmt.ID, "type": "ovs", "mtu": mtu, "ethernet_mac_address": d.Mgmt.MAC,
		}},
		"networks": []any{map[string]any{
			"id": "network0", "type": "ipv4", "link": link, "ip_address": d.Mgmt.Address.Addr().String(),
			"netmask": netmask(mask), "routes": []any{}, "network_id": d.Mgmt.NetworkID, "services": []any{},
		}},
		"services": []any{},
	}
	for name, v := range map[string]any{
		"meta_data.json": meta, "network_data.json": network,
		"vendor_data.json": map[string]any{}, "vendor_data2.json": map[string]any{},
	} {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(latest, name), data, 0o644); err != nil {
			return err
		}
	}
	if d.Request.UserData != "" {
		if err := os.WriteFile(filepath.Join(latest, "user_data"), []byte(d.Request.UserData), 0o644); err != nil {
			return err
		}
	}
	mk, err := isoTool()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, mk, "-o", path, "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
		"-publisher", "amphora-agent test/vm", "-quiet", "-J", "-r", "-V", "config-2", tree)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(mk), err, out)
	}
	return nil
}

// isoTool finds genisoimage (Nova's default mkisofs_cmd) or a
// compatible mkisofs.
func isoTool() (string, error) {
	for _, name := range []string{"genisoimage", "mkisofs", "xorrisofs"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no genisoimage, mkisofs or xorrisofs (scripts/deps.sh installs genisoimage)")
}

// netmask is the dotted mask of an IPv4 prefix.
func netmask(p netip.Prefix) string {
	bits := p.Bits()
	var m [4]byte
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return netip.AddrFrom4(m).String()
}
