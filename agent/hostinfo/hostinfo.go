// Package hostinfo probes the amphora for what GET /1.0/info and
// GET /1.0/details report: the versions of haproxy, keepalived and
// ipvsadm, CPU, memory, load (from /proc), disk usage (statfs) and the
// tuned profile. The REST layer (package agent) turns these values into
// the reference's JSON bodies; the data-plane NICs' counters come from
// netns.
//
// Package versions are cached until the package database or the binary
// changes, so the controller's frequent /info calls cost no process
// spawns.
package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/execx"
)

// Probe reads the live system. Its methods are safe for concurrent use.
type Probe struct {
	// HAProxyCmd is the haproxy binary the agent runs ([haproxy_amphora]
	// haproxy_cmd).
	HAProxyCmd string
	// ProcRoot and Root are "/proc" and "/" except in tests.
	ProcRoot, Root string

	mu       sync.Mutex // guards versions
	versions map[string]cachedVersion
}

type cachedVersion struct {
	key   string // identifies the state of the package database / binary
	value *string
}

// New returns a Probe of the live system.
func New(haproxyCmd string) *Probe {
	return &Probe{HAProxyCmd: haproxyCmd, ProcRoot: "/proc", Root: "/", versions: map[string]cachedVersion{}}
}

// Versions are the versions of the data-plane programs; nil when a
// program is not installed.
type Versions struct {
	HAProxy, Keepalived, IPVSAdm *string
}

// Versions probes haproxy, keepalived and ipvsadm.
func (p *Probe) Versions(ctx context.Context) Versions {
	return Versions{
		HAProxy:    p.haproxyVersion(ctx),
		Keepalived: p.packageVersion(ctx, "keepalived", []string{"/usr/sbin/keepalived", "-v"}, keepalivedVersionRE),
		IPVSAdm:    p.packageVersion(ctx, "ipvsadm", []string{"/usr/sbin/ipvsadm", "--version"}, ipvsadmVersionRE),
	}
}

// Hostname is the amphora's host name ("" when unknown).
func Hostname() string {
	h, _ := os.Hostname()
	return h
}

// System is the state of the machine.
type System struct {
	CPUCount      int    // online CPUs, like Python's os.cpu_count()
	CPU           CPU    // the aggregate line of /proc/stat
	Memory        Memory // /proc/meminfo, kB
	Disk          Disk   // statfs of the root file system, bytes
	Load          []string
	TunedProfiles string // /etc/tuned/active_profile, "" when absent
}

// CPU holds the aggregate line of /proc/stat: the sum of its fields and
// three of them as the file writes them.
type CPU struct {
	Total                 uint64
	User, System, SoftIRQ string
}

// Memory holds values of /proc/meminfo, in kB.
type Memory struct {
	Total, Free, Buffers, Cached, SwapCached, Shmem, Slab int64
}

// Disk is the usage of the root file system, in bytes.
type Disk struct {
	Used, Available uint64
}

// System probes the machine. It fails only when /proc cannot be read;
// disk and tuned profile degrade to zero values.
func (p *Probe) System() (*System, error) {
	cpu, err := p.cpu()
	if err != nil {
		return nil, err
	}
	mem, err := p.memory()
	if err != nil {
		return nil, err
	}
	load, err := p.load()
	if err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	var disk Disk
	if err := unix.Statfs(p.Root, &st); err == nil {
		disk = Disk{Used: (st.Blocks - st.Bfree) * uint64(st.Frsize), Available: st.Bavail * uint64(st.Frsize)}
	}
	return &System{
		CPUCount:      numCPU(p.ProcRoot),
		CPU:           cpu,
		Memory:        mem,
		Disk:          disk,
		Load:          load,
		TunedProfiles: tunedProfiles(p.Root),
	}, nil
}

var (
	haproxyVersionRE    = regexp.MustCompile(`(?i)version\s+(\d+\.\d+\S*)`)
	keepalivedVersionRE = regexp.MustCompile(`(?i)keepalived\s+v?(\d+\.\d+\S*)`)
	ipvsadmVersionRE    = regexp.MustCompile(`(?i)ipvsadm\s+v?(\d+\.\d+\S*)`)
)

// haproxyVersion is the version of the haproxy binary the agent runs,
// e.g. "2.6.12-1+deb12u4" on Debian, the same string as the package
// version the reference reports. The controller needs it to start with
// "<major>.<minor>". nil when haproxy is not installed.
func (p *Probe) haproxyVersion(ctx context.Context) *string {
	if v := p.binaryVersion(ctx, "haproxy-bin", []string{p.HAProxyCmd, "-v"}, haproxyVersionRE); v != nil {
		return v
	}
	return p.dpkgVersion(ctx, "haproxy")
}

// packageVersion reports the distribution package version (dpkg, then
// rpm), like the reference, falling back to what the binary prints.
func (p *Probe) packageVersion(ctx context.Context, pkg string, argv []string, re *regexp.Regexp) *string {
	if v := p.dpkgVersion(ctx, pkg); v != nil {
		return v
	}
	return p.binaryVersion(ctx, pkg+"-bin", argv, re)
}

func fileKey(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "absent"
	}
	return fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
}

func (p *Probe) cached(name, key string, get func() *string) *string {
	p.mu.Lock()
	if c, ok := p.versions[name]; ok && c.key == key {
		p.mu.Unlock()
		return c.value
	}
	p.mu.Unlock()
	v := get()
	p.mu.Lock()
	p.versions[name] = cachedVersion{key: key, value: v}
	p.mu.Unlock()
	return v
}

// The package tools, by absolute path: never whatever $PATH (the agent's
// environment) finds first.
const (
	dpkgQuery = "/usr/bin/dpkg-query"
	rpmQuery  = "/usr/bin/rpm"
)

func (p *Probe) dpkgVersion(ctx context.Context, pkg string) *string {
	if _, err := os.Stat("/var/lib/dpkg/status"); err == nil {
		return p.cached("dpkg:"+pkg, fileKey("/var/lib/dpkg/status"), func() *string {
			out, err := runShort(ctx, dpkgQuery, "-W", "-f=${Version}", pkg)
			if v := strings.TrimSpace(string(out)); err == nil && v != "" {
				return &v
			}
			return nil
		})
	}
	if _, err := os.Stat("/var/lib/rpm"); err == nil {
		return p.cached("rpm:"+pkg, fileKey("/var/lib/rpm"), func() *string {
			out, err := runShort(ctx, rpmQuery, "-q", "--queryformat", "%{VERSION}", pkg)
			if v := strings.TrimSpace(string(out)); err == nil && v != "" {
				return &v
			}
			return nil
		})
	}
	return nil
}

func (p *Probe) binaryVersion(ctx context.Context, name string, argv []string, re *regexp.Regexp) *string {
	return p.cached(name, argv[0]+"@"+fileKey(argv[0]), func() *string {
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
func (p *Probe) cpu() (CPU, error) {
	f, err := os.Open(filepath.Join(p.ProcRoot, "stat"))
	if err != nil {
		return CPU{}, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return CPU{}, err
	}
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return CPU{}, errors.New("unexpected /proc/stat format")
	}
	var total uint64
	for _, v := range fields[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return CPU{}, errors.New("unexpected /proc/stat value " + v)
		}
		total += n
	}
	return CPU{Total: total, User: fields[1], System: fields[3], SoftIRQ: fields[7]}, nil
}

func (p *Probe) memory() (Memory, error) {
	data, err := os.ReadFile(filepath.Join(p.ProcRoot, "meminfo"))
	if err != nil {
		return Memory{}, err
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
	return Memory{
		Total: kb["MemTotal"], Free: kb["MemFree"], Buffers: kb["Buffers"], Cached: kb["Cached"],
		SwapCached: kb["SwapCached"], Shmem: kb["Shmem"], Slab: kb["Slab"],
	}, nil
}

func (p *Probe) load() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(p.ProcRoot, "loadavg"))
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
