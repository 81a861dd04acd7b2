package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/netns"
)

// Inventory is what the information endpoints report about the load
// balancers configured on this amphora (haproxy.Manager).
type Inventory interface {
	// ListenerIDs returns every listener id of every load balancer, sorted.
	ListenerIDs() []string
	// RunningLoadBalancers returns the load balancers whose haproxy runs.
	RunningLoadBalancers(ctx context.Context) []string
}

// Info gathers what /1.0/info and /1.0/details report. Package versions
// are cached until the package database or the binary changes, so the
// controller's frequent /info calls cost no process spawns.
type Info struct {
	config *config.Store
	// Inventory is set once the load-balancer managers exist; nil means
	// there is nothing configured to report.
	Inventory Inventory
	// LVS reports the UDP/SCTP listeners (nil: none).
	LVS LVSInventory
	// ProcRoot and Root are "/proc" and "/" except in tests.
	ProcRoot, Root string

	mu       sync.Mutex // guards versions
	versions map[string]cachedVersion
}

type cachedVersion struct {
	key   string // identifies the state of the package database / binary
	value *string
}

// NewInfo returns an Info reading the live system.
func NewInfo(cfg *config.Store) *Info {
	return &Info{config: cfg, ProcRoot: "/proc", Root: "/", versions: map[string]cachedVersion{}}
}

// infoBody is GET /1.0/info, keys in the reference's order. The LVS keys
// are always present (null when the package is not installed, rather
// than failing the request like the reference does).
type infoBody struct {
	Hostname          string  `json:"hostname"`
	HAProxyVersion    *string `json:"haproxy_version"`
	APIVersion        string  `json:"api_version"`
	KeepalivedVersion *string `json:"keepalived_version"`
	IPVSAdmVersion    *string `json:"ipvsadm_version"`
}

type netStats struct {
	TX uint64 `json:"network_tx"`
	RX uint64 `json:"network_rx"`
}

type cpuBody struct {
	Total   uint64 `json:"total"`
	User    string `json:"user"`
	System  string `json:"system"`
	SoftIRQ string `json:"soft_irq"`
}

type memoryBody struct {
	Total    int64 `json:"total"`
	Free     int64 `json:"free"`
	Buffers  int64 `json:"buffers"`
	Cached   int64 `json:"cached"`
	SwapUsed int64 `json:"swap_used"`
	Shared   int64 `json:"shared"`
	Slab     int64 `json:"slab"`
}

type diskBody struct {
	Used      uint64 `json:"used"`
	Available uint64 `json:"available"`
}

// detailsBody is GET /1.0/details. Keys and value types are the
// reference's, including its oddities the controller may read
// (cpu.user/system/soft_irq and load as strings, swap_used = SwapCached,
// topology always SINGLE).
type detailsBodyJSON struct {
	Hostname            string              `json:"hostname"`
	HAProxyVersion      *string             `json:"haproxy_version"`
	APIVersion          string              `json:"api_version"`
	Networks            map[string]netStats `json:"networks"`
	Active              bool                `json:"active"`
	HAProxyCount        int                 `json:"haproxy_count"`
	CPUCount            int                 `json:"cpu_count"`
	CPU                 cpuBody             `json:"cpu"`
	Memory              memoryBody          `json:"memory"`
	Disk                diskBody            `json:"disk"`
	Load                []string            `json:"load"`
	ActiveTunedProfiles string              `json:"active_tuned_profiles"`
	Topology            string              `json:"topology"`
	TopologyStatus      string              `json:"topology_status"`
	Listeners           []string            `json:"listeners"`
	Packages            map[string]string   `json:"packages"`
	LVSProcessCount     int                 `json:"lvs_listener_process_count"`
	KeepalivedVersion   *string             `json:"keepalived_version"`
	IPVSAdmVersion      *string             `json:"ipvsadm_version"`
}

func (s *Server) getRoot(c *gin.Context) {
	writeJSON(c, http.StatusOK, struct {
		APIVersion string `json:"api_version"`
	}{APIVersion})
}

func (s *Server) getInfo(c *gin.Context) {
	writeJSON(c, http.StatusOK, s.Info.Summary(c.Request.Context()))
}

func (s *Server) getDetails(c *gin.Context) {
	d, err := s.Info.Details(c.Request.Context())
	if err != nil {
		s.internalError(c, err)
		return
	}
	writeJSON(c, http.StatusOK, d)
}

// Summary is the body of GET /1.0/info.
func (i *Info) Summary(ctx context.Context) infoBody {
	host, _ := os.Hostname()
	return infoBody{
		Hostname:          host,
		HAProxyVersion:    i.HAProxyVersion(ctx),
		APIVersion:        APIVersion,
		KeepalivedVersion: i.packageVersion(ctx, "keepalived", []string{"/usr/sbin/keepalived", "-v"}, keepalivedVersionRE),
		IPVSAdmVersion:    i.packageVersion(ctx, "ipvsadm", []string{"/usr/sbin/ipvsadm", "--version"}, ipvsadmVersionRE),
	}
}

// Details is the body of GET /1.0/details. It fails only when /proc
// cannot be read at all; optional parts (namespace, packages) degrade.
func (i *Info) Details(ctx context.Context) (*detailsBodyJSON, error) {
	sum := i.Summary(ctx)
	cpu, err := i.cpu()
	if err != nil {
		return nil, err
	}
	mem, err := i.memory()
	if err != nil {
		return nil, err
	}
	load, err := i.load()
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	var disk diskBody
	if err := unix.Statfs(i.Root, &st); err == nil {
		disk = diskBody{Used: (st.Blocks - st.Bfree) * uint64(st.Frsize), Available: st.Bavail * uint64(st.Frsize)}
	}
	d := &detailsBodyJSON{
		Hostname:            sum.Hostname,
		HAProxyVersion:      sum.HAProxyVersion,
		APIVersion:          APIVersion,
		Networks:            i.networks(),
		Active:              true,
		CPUCount:            numCPU(i.ProcRoot),
		CPU:                 cpu,
		Memory:              mem,
		Disk:                disk,
		Load:                load,
		ActiveTunedProfiles: tunedProfiles(i.Root),
		Topology:            config.TopologySingle,
		TopologyStatus:      "OK",
		Listeners:           []string{},
		Packages:            map[string]string{},
		KeepalivedVersion:   sum.KeepalivedVersion,
		IPVSAdmVersion:      sum.IPVSAdmVersion,
	}
	if inv := i.Inventory; inv != nil {
		d.Listeners = inv.ListenerIDs()
		d.HAProxyCount = len(inv.RunningLoadBalancers(ctx))
	}
	if lvs := i.LVS; lvs != nil {
		if ids := lvs.List(); len(ids) > 0 {
			d.Listeners = unionSorted(d.Listeners, ids)
		}
		d.LVSProcessCount = lvs.RunningCount()
	}
	return d, nil
}

var (
	haproxyVersionRE    = regexp.MustCompile(`(?i)version\s+(\d+\.\d+\S*)`)
	keepalivedVersionRE = regexp.MustCompile(`(?i)keepalived\s+v?(\d+\.\d+\S*)`)
	ipvsadmVersionRE    = regexp.MustCompile(`(?i)ipvsadm\s+v?(\d+\.\d+\S*)`)
)

// HAProxyVersion is the version of the haproxy binary the agent runs
// ([haproxy_amphora] haproxy_cmd), e.g. "2.6.12-1+deb12u4" on Debian, the
// same string as the package version the reference reports. The
// controller needs it to start with "<major>.<minor>". nil when haproxy
// is not installed.
func (i *Info) HAProxyVersion(ctx context.Context) *string {
	cmd := i.config.Current().HAProxyCmd
	if v := i.binaryVersion(ctx, "haproxy-bin", []string{cmd, "-v"}, haproxyVersionRE); v != nil {
		return v
	}
	return i.dpkgVersion(ctx, "haproxy")
}

// packageVersion reports the distribution package version (dpkg, then
// rpm), like the reference, falling back to what the binary prints.
func (i *Info) packageVersion(ctx context.Context, pkg string, argv []string, re *regexp.Regexp) *string {
	if v := i.dpkgVersion(ctx, pkg); v != nil {
		return v
	}
	return i.binaryVersion(ctx, pkg+"-bin", argv, re)
}

func fileKey(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "absent"
	}
	return fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
}

func (i *Info) cached(name, key string, get func() *string) *string {
	i.mu.Lock()
	if c, ok := i.versions[name]; ok && c.key == key {
		i.mu.Unlock()
		return c.value
	}
	i.mu.Unlock()
	v := get()
	i.mu.Lock()
	i.versions[name] = cachedVersion{key: key, value: v}
	i.mu.Unlock()
	return v
}

// The package tools, by absolute path: never whatever $PATH (the agent's
// environment) finds first.
const (
	dpkgQuery = "/usr/bin/dpkg-query"
	rpmQuery  = "/usr/bin/rpm"
)

func (i *Info) dpkgVersion(ctx context.Context, pkg string) *string {
	if _, err := os.Stat("/var/lib/dpkg/status"); err == nil {
		return i.cached("dpkg:"+pkg, fileKey("/var/lib/dpkg/status"), func() *string {
			out, err := runShort(ctx, dpkgQuery, "-W", "-f=${Version}", pkg)
			if v := strings.TrimSpace(string(out)); err == nil && v != "" {
				return &v
			}
			return nil
		})
	}
	if _, err := os.Stat("/var/lib/rpm"); err == nil {
		return i.cached("rpm:"+pkg, fileKey("/var/lib/rpm"), func() *string {
			out, err := runShort(ctx, rpmQuery, "-q", "--queryformat", "%{VERSION}", pkg)
			if v := strings.TrimSpace(string(out)); err == nil && v != "" {
				return &v
			}
			return nil
		})
	}
	return nil
}

func (i *Info) binaryVersion(ctx context.Context, name string, argv []string, re *regexp.Regexp) *string {
	return i.cached(name, argv[0]+"@"+fileKey(argv[0]), func() *string {
		out, err := runShort(ctx, argv...)
		if err != nil && len(out) == 0 {
			return nil
		}
		m := re.FindSubmatch(out)
		if m == nil {
			return nil
		}
		v := string(m[1])
		return &v
	})
}

func runShort(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return execx.Run(ctx, argv...)
}

// cpu parses the aggregate line of /proc/stat the way the reference does.
func (i *Info) cpu() (cpuBody, error) {
	f, err := os.Open(filepath.Join(i.ProcRoot, "stat"))
	if err != nil {
		return cpuBody{}, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return cpuBody{}, err
	}
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return cpuBody{}, errors.New("unexpected /proc/stat format")
	}
	var total uint64
	for _, v := range fields[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuBody{}, errors.New("unexpected /proc/stat value " + v)
		}
		total += n
	}
	return cpuBody{Total: total, User: fields[1], System: fields[3], SoftIRQ: fields[7]}, nil
}

func (i *Info) memory() (memoryBody, error) {
	data, err := os.ReadFile(filepath.Join(i.ProcRoot, "meminfo"))
	if err != nil {
		return memoryBody{}, err
	}
	kb := map[string]int64{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) != 2 || string(f[1]) != "kB" {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err == nil {
			kb[string(k)] = n
		}
	}
	return memoryBody{
		Total: kb["MemTotal"], Free: kb["MemFree"], Buffers: kb["Buffers"], Cached: kb["Cached"],
		SwapUsed: kb["SwapCached"], Shared: kb["Shmem"], Slab: kb["Slab"],
	}, nil
}

func (i *Info) load() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(i.ProcRoot, "loadavg"))
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return nil, errors.New("unexpected /proc/loadavg format")
	}
	return f[:3], nil
}

// numCPU counts online CPUs like os.cpu_count() (not the affinity mask).
func numCPU(procRoot string) int {
	data, err := os.ReadFile(filepath.Join(procRoot, "stat"))
	if err != nil {
		return 1
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "cpu") && len(line) > 3 && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

func tunedProfiles(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "etc/tuned/active_profile"))
	if err != nil {
		return ""
	}
	if len(data) > 1024 {
		data = data[:1024]
	}
	return strings.TrimSpace(string(data))
}

// networks reports byte counters of the eth* links in the data-plane
// namespace. A missing namespace is reported as no networks; it is never
// created here (GAPS D1).
func (i *Info) networks() map[string]netStats {
	out := map[string]netStats{}
	ns, err := netns.OpenNamespace(i.config.Current().Namespace)
	if err != nil {
		return out
	}
	defer ns.Close()
	var links []netlink.Link
	for range 5 {
		if links, err = ns.Handle().LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return out
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, "eth") && a.Statistics != nil {
			out[a.Name] = netStats{TX: a.Statistics.TxBytes, RX: a.Statistics.RxBytes}
		}
	}
	return out
}
