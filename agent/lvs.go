package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// LVSListeners is the UDP/SCTP side of the amphora: one keepalived in LVS
// mode per listener (*keepalived.LVSManager).
type LVSListeners interface {
	Exists(listenerID string) bool
	// List returns the LVS listener ids, sorted.
	List() []string
	// RunningCount is the number of LVS listeners whose keepalived runs.
	RunningCount() int
	Upload(ctx context.Context, amphoraID, listenerID string, body io.Reader) (string, error)
	Config(listenerID string) ([]byte, error)
	Action(ctx context.Context, listenerID, action string) (string, error)
	Delete(ctx context.Context, listenerID string) error
	Listeners(ctx context.Context) []keepalived.LVSListenerStatus
}

// routeLVS registers the UDP/SCTP listener endpoints. The action, delete
// and listing endpoints are shared with the load balancers and dispatch
// through lvsOwns.
func (s *Server) routeLVS(v *gin.RouterGroup) {
	if s.LVS == nil {
		return
	}
	v.PUT("/listeners/:amphora/:id/udp_listener", s.putLVSConfig)
	v.GET("/listeners/:id/udp_listener", s.getLVSConfig)
}

// lvsOwns reports whether an object id of the shared endpoints
// (PUT /loadbalancer/<id>/<action>, DELETE /listeners/<id>) names an LVS
// listener: the reference's dispatch, where a load balancer's haproxy
// configuration wins, then an LVS configuration; anything else goes to
// the load-balancer branch.
func (s *Server) lvsOwns(id string) bool {
	if s.LVS == nil || !s.LVS.Exists(id) {
		return false
	}
	if s.LBs != nil && s.LBs.Exists(id) {
		return false
	}
	return true
}

func lvsNotFound(c *gin.Context, id string) {
	writeJSON(c, http.StatusNotFound, detailsBody{Message: "UDP Listener Not Found", Details: "No UDP listener with UUID: " + id})
}

// putLVSConfig is PUT /1.0/listeners/<amphora>/<listener>/udp_listener:
// 200 with the body's MD5 as ETag; a configuration keepalived refuses
// gets 400 and changes nothing.
func (s *Server) putLVSConfig(c *gin.Context) {
	amphoraID, id := c.Param("amphora"), c.Param("id")
	body, got := s.receive(c, s.Config.Current().MaxBodySize, amphoraID, id)
	if !got {
		return
	}
	defer body.Close()
	sum, err := s.LVS.Upload(c.Request.Context(), amphoraID, id, body)
	var ve *keepalived.ValidationError
	switch {
	case err == nil:
		withETag(c, sum)
		ok(c, http.StatusOK)
	case errors.As(err, &ve):
		s.Log.Warn("keepalived LVS configuration refused", "listener_id", id, "err", err)
		invalidRequest(c, ve.Output)
	case errors.Is(err, keepalived.ErrBadID):
		badID(c)
	default:
		s.actionFailed(c, err, "keepalived LVS service install failed", "listener_id", id)
	}
}

// getLVSConfig is GET /1.0/listeners/<listener>/udp_listener: the stored
// configuration as text, no ETag (as the reference).
func (s *Server) getLVSConfig(c *gin.Context) {
	id := c.Param("id")
	data, err := s.LVS.Config(id)
	switch {
	case errors.Is(err, keepalived.ErrBadID):
		badID(c)
	case errors.Is(err, keepalived.ErrListenerNotFound):
		lvsNotFound(c, id)
	case err != nil:
		s.internalError(c, err)
	default:
		c.Data(http.StatusOK, "text/plain; charset=UTF-8", data)
	}
}

// lvsAction is the LVS branch of PUT /1.0/loadbalancer/<id>/<action>.
func (s *Server) lvsAction(c *gin.Context, id, action string) {
	details, err := s.LVS.Action(c.Request.Context(), id, action)
	switch {
	case err == nil:
		okDetails(c, http.StatusAccepted, details)
	case errors.Is(err, keepalived.ErrUnknownAction):
		unknownAction(c, strings.ToLower(action))
	case errors.Is(err, keepalived.ErrBadID):
		badID(c)
	case errors.Is(err, keepalived.ErrListenerNotFound):
		lvsNotFound(c, id)
	default:
		s.actionFailed(c, err, "keepalived LVS action failed", "listener_id", id, "action", action)
	}
}

// deleteLVSListener is the LVS branch of DELETE /1.0/listeners/<id>.
func (s *Server) deleteLVSListener(c *gin.Context, id string) {
	switch err := s.LVS.Delete(c.Request.Context(), id); {
	case err == nil:
		ok(c, http.StatusOK)
	case errors.Is(err, keepalived.ErrBadID):
		badID(c)
	default:
		s.actionFailed(c, err, "LVS listener delete failed", "listener_id", id)
	}
}

// listenerStatuses is GET /1.0/listeners: the load balancers' frontends,
// then the LVS listeners with their real protocol (GAPS C12).
func (s *Server) listenerStatuses(ctx context.Context) []haproxy.ListenerStatus {
	out := s.LBs.Listeners(ctx)
	if s.LVS == nil {
		return out
	}
	for _, l := range s.LVS.Listeners(ctx) {
		out = append(out, haproxy.ListenerStatus{Status: l.Status, UUID: l.UUID, Type: l.Type})
	}
	return out
}

// unionSorted returns the sorted, de-duplicated union of two id lists.
func unionSorted(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}
