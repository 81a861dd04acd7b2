package agent

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// putConfig replaces the agent configuration file the agent was started
// with (the first --config-file) and applies the options that may change
// at run time (heartbeat destinations, interval and key, topology, the
// agent's syslog settings) at once. The upload is checked first as a
// start of the agent would use it (config.PrepareUpload): a document the
// agent could not start with is refused with the reason and the file on
// disk is kept. The agent's own options the controller's rendering omits
// are kept from the running configuration (config.MergeOwnOptions). The
// answer's details name the changed options that take effect only at the
// next agent start.
func (s *Server) putConfig(c *gin.Context) {
	body, got := s.receiveDocument(c)
	if !got {
		return
	}
	cur := s.Config.Current()
	up, err := prepareConfig(body, cur)
	if err != nil {
		if errors.Is(err, config.ErrNoConfigFile) || errors.Is(err, errOtherConfigFile) {
			s.Log.Error("agent configuration update failed", "err", err)
			writeJSON(c, http.StatusInternalServerError, detailsBody{Message: "Unable to update amphora-agent configuration.", Details: err.Error()})
			return
		}
		writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Invalid agent configuration", Details: err.Error()})
		return
	}
	restart, err := s.applyConfig(cur, up)
	if err != nil {
		s.Log.Error("agent configuration update failed", "err", err)
		writeJSON(c, http.StatusInternalServerError, detailsBody{Message: "Unable to update amphora-agent configuration.", Details: err.Error()})
		return
	}
	var details []string
	if len(restart) > 0 {
		details = append(details, "Changed options that take effect at the next agent start: "+strings.Join(restart, ", ")+".")
	}
	if len(up.Kept) > 0 {
		details = append(details, "Kept from the running configuration: "+strings.Join(up.Kept, ", ")+".")
	}
	if len(details) == 0 {
		ok(c, http.StatusAccepted)
		return
	}
	writeJSON(c, http.StatusAccepted, detailsBody{Message: "OK", Details: strings.Join(details, " ")})
}

// errOtherConfigFile: a --config-file after the first cannot be read.
var errOtherConfigFile = errors.New("configuration file unreadable")

// prepareConfig checks an upload against the running configuration and
// its other --config-file files.
func prepareConfig(body []byte, cur *config.Config) (*config.Upload, error) {
	if len(cur.Files) == 0 {
		return nil, config.ErrNoConfigFile
	}
	others := make([]config.Source, 0, len(cur.Files)-1)
	for _, f := range cur.Files[1:] {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errOtherConfigFile, err)
		}
		others = append(others, config.Source{Name: f, Data: data})
	}
	return config.PrepareUpload(body, cur, others)
}

// applyConfig installs a checked upload and swaps in its run-time
// options; it returns the changed options that need a restart.
func (s *Server) applyConfig(cur *config.Config, up *config.Upload) ([]string, error) {
	if err := fsutil.WriteFile(cur.Files[0], up.Doc, 0o600); err != nil {
		return nil, err
	}
	for _, u := range up.Unknown {
		s.Log.Debug("unknown configuration option ignored", "file", u.File, "section", u.Section, "option", u.Option)
	}
	if len(up.Kept) > 0 {
		s.Log.Info("options of the running configuration kept in the uploaded one", "options", strings.Join(up.Kept, ","))
	}
	next := cur.WithMutable(up.Config)
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
	restart := config.RestartOnly(cur, up.Config)
	if len(restart) > 0 {
		s.Log.Warn("configuration options changed that take effect at the next agent start", "options", strings.Join(restart, ","))
	}
	return restart, nil
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
