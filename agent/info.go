package agent

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/hostinfo"
)

// Host is what the information endpoints report about the machine
// (*hostinfo.Probe).
type Host interface {
	// Versions are those of haproxy, keepalived and ipvsadm (nil when
	// not installed).
	Versions(ctx context.Context) hostinfo.Versions
	// System is CPU, memory, disk, load and tuned profile; it fails only
	// when /proc cannot be read.
	System() (*hostinfo.System, error)
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
	writeJSON(c, http.StatusOK, s.summary(c.Request.Context()))
}

// summary is the body of GET /1.0/info.
func (s *Server) summary(ctx context.Context) infoBody {
	v := s.Host.Versions(ctx)
	return infoBody{
		Hostname:          hostinfo.Hostname(),
		HAProxyVersion:    v.HAProxy,
		APIVersion:        APIVersion,
		KeepalivedVersion: v.Keepalived,
		IPVSAdmVersion:    v.IPVSAdm,
	}
}

// getDetails is GET /1.0/details. It fails only when /proc cannot be
// read; optional parts (namespace, packages) degrade.
func (s *Server) getDetails(c *gin.Context) {
	ctx := c.Request.Context()
	sum := s.summary(ctx)
	sys, err := s.Host.System()
	if err != nil {
		s.internalError(c, err)
		return
	}
	d := &detailsBodyJSON{
		Hostname:       sum.Hostname,
		HAProxyVersion: sum.HAProxyVersion,
		APIVersion:     APIVersion,
		Networks:       map[string]netStats{},
		Active:         true,
		CPUCount:       sys.CPUCount,
		CPU:            cpuBody{Total: sys.CPU.Total, User: sys.CPU.User, System: sys.CPU.System, SoftIRQ: sys.CPU.SoftIRQ},
		Memory: memoryBody{Total: sys.Memory.Total, Free: sys.Memory.Free, Buffers: sys.Memory.Buffers,
			Cached: sys.Memory.Cached, SwapUsed: sys.Memory.SwapCached, Shared: sys.Memory.Shmem, Slab: sys.Memory.Slab},
		Disk:                diskBody{Used: sys.Disk.Used, Available: sys.Disk.Available},
		Load:                sys.Load,
		ActiveTunedProfiles: sys.TunedProfiles,
		Topology:            config.TopologySingle,
		TopologyStatus:      "OK",
		Listeners:           []string{},
		Packages:            map[string]string{},
		KeepalivedVersion:   sum.KeepalivedVersion,
		IPVSAdmVersion:      sum.IPVSAdmVersion,
	}
	if s.Net != nil {
		for name, t := range s.Net.Traffic() {
			d.Networks[name] = netStats{TX: t.TX, RX: t.RX}
		}
	}
	if s.LBs != nil {
		d.Listeners = s.LBs.ListenerIDs()
		d.HAProxyCount = len(s.LBs.RunningLoadBalancers(ctx))
	}
	if s.LVS != nil {
		if ids := s.LVS.List(); len(ids) > 0 {
			d.Listeners = unionSorted(d.Listeners, ids)
		}
		d.LVSProcessCount = s.LVS.RunningCount()
	}
	writeJSON(c, http.StatusOK, d)
}
