package agent

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// putConfig replaces the agent configuration file the agent was started
// with (the first --config-file) and applies the options that may change
// at run time (heartbeat destinations, interval and key, topology, the
// agent's syslog settings) at once. The upload is parsed first: a
// document the agent could not start with is refused and the file on
// disk is kept.
func (s *Server) putConfig(c *gin.Context) {
	body, got := s.receiveDocument(c)
	if !got {
		return
	}
	if _, _, err := config.Parse(config.Source{Name: "uploaded configuration", Data: body}); err != nil {
		writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Invalid agent configuration", Details: err.Error()})
		return
	}
	if err := s.applyConfig(body); err != nil {
		s.Log.Error("agent configuration update failed", "err", err)
		writeJSON(c, http.StatusInternalServerError, detailsBody{Message: "Unable to update amphora-agent configuration.", Details: err.Error()})
		return
	}
	ok(c, http.StatusAccepted)
}

func (s *Server) applyConfig(body []byte) error {
	cur := s.Config.Current()
	if len(cur.Files) == 0 {
		return config.ErrNoConfigFile
	}
	if err := fsutil.WriteFile(cur.Files[0], body, 0o600); err != nil {
		return err
	}
	merged, unknown, err := config.Load(cur.Files...)
	if err != nil {
		return err
	}
	for _, u := range unknown {
		s.Log.Debug("unknown configuration option ignored", "file", u.File, "section", u.Section, "option", u.Option)
	}
	next := cur.WithMutable(merged)
	if !cur.MutableEqual(next) {
		s.Config.Update(next)
		s.Log.Info("agent configuration updated", "file", cur.Files[0],
			"controllers", strings.Join(next.ControllerIPPortList, ","),
			"heartbeat_interval", next.HeartbeatInterval.String(),
			"heartbeat_key_changed", next.HeartbeatKey != cur.HeartbeatKey,
			"topology", next.LoadBalancerTopology,
			"use_syslog", next.UseSyslog, "syslog_log_facility", next.SyslogLogFacility,
			"administrative_log_facility", next.AdministrativeLogFacility)
	} else {
		s.Log.Info("agent configuration file rewritten, run-time options unchanged", "file", cur.Files[0])
	}
	if restart := restartOnlyChanges(cur, merged); len(restart) > 0 {
		s.Log.Warn("configuration options changed that take effect at the next agent start", "options", strings.Join(restart, ","))
	}
	return nil
}

// restartOnlyChanges lists the options that differ but cannot change
// while the agent runs.
func restartOnlyChanges(cur, next *config.Config) []string {
	var out []string
	add := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	add("base_path", cur.BasePath != next.BasePath)
	add("base_cert_dir", cur.BaseCertDir != next.BaseCertDir)
	add("bind_host", cur.BindHost != next.BindHost)
	add("bind_port", cur.BindPort != next.BindPort)
	add("haproxy_cmd", cur.HAProxyCmd != next.HAProxyCmd)
	add("agent_server_ca", cur.AgentServerCA != next.AgentServerCA)
	add("agent_server_cert", cur.AgentServerCert != next.AgentServerCert)
	add("agent_server_network_dir", cur.AgentServerNetworkDir != next.AgentServerNetworkDir)
	add("agent_request_read_timeout", cur.AgentRequestReadTimeout != next.AgentRequestReadTimeout)
	add("agent_tls_protocol", cur.AgentTLSProtocol != next.AgentTLSProtocol)
	add("amphora_id", cur.AmphoraID != next.AmphoraID)
	return out
}

// putCertificate replaces the agent's own server certificate. Unlike the
// reference, the body must be a certificate with its matching key; the
// new pair is served to the next TLS connection without a restart.
func (s *Server) putCertificate(c *gin.Context) {
	body, got := s.receiveDocument(c)
	if !got {
		return
	}
	if err := s.Certs.Replace(body); err != nil {
		if errors.Is(err, certs.ErrInvalidKeyPair) || errors.Is(err, certs.ErrUnacceptable) {
			writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Invalid certificate", Details: err.Error()})
			return
		}
		s.internalError(c, err)
		return
	}
	ok(c, http.StatusAccepted)
}

// receiveDocument receives the agent configuration or the agent's
// certificate (at most Limits.MaxDocument bytes) and returns it: both are
// parsed whole, and are a few kilobytes.
func (s *Server) receiveDocument(c *gin.Context) ([]byte, bool) {
	body, ok := s.receive(c, s.documentLimit())
	if !ok {
		return nil, false
	}
	defer body.Close()
	data, err := body.ReadAll()
	if err != nil {
		s.internalError(c, err)
		return nil, false
	}
	return data, true
}
