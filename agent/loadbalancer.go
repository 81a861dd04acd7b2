package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// LoadBalancers is the haproxy side of the amphora (*haproxy.Manager).
type LoadBalancers interface {
	// Exists reports whether the load balancer has a configuration (the
	// shared endpoints dispatch on it, see lvsOwns).
	Exists(lbID string) bool
	// ListenerIDs are the frontends of every load balancer, sorted.
	ListenerIDs() []string
	// RunningLoadBalancers are the load balancers whose haproxy runs.
	RunningLoadBalancers(ctx context.Context) []string
	Upload(ctx context.Context, amphoraID, lbID string, body io.Reader) (string, error)
	Config(lbID string) ([]byte, error)
	Action(ctx context.Context, lbID, action string) (string, error)
	Delete(ctx context.Context, lbID string) error
	Listeners(ctx context.Context) []haproxy.ListenerStatus
	PutCertificate(ctx context.Context, lbID, name string, body io.Reader, limit int64) (string, error)
	CertificateMD5(lbID, name string) (string, error)
	DeleteCertificate(ctx context.Context, lbID, name string) error
}

// The load-balancer routes share their path shapes
// (/loadbalancer/<amphora>/<lb>/haproxy and
// /loadbalancer/<lb>/certificates/<file>), so they are registered with
// neutral parameter names and dispatched here.
func (s *Server) routeLoadBalancers(v *gin.RouterGroup) {
	if s.LBs == nil {
		return
	}
	v.PUT("/loadbalancer/:a/:b/:c", func(c *gin.Context) {
		switch {
		case c.Param("c") == "haproxy":
			s.putHAProxyConfig(c, c.Param("a"), c.Param("b"))
		case c.Param("b") == "certificates":
			s.putLBCertificate(c, c.Param("a"), c.Param("c"))
		default:
			unroutable(c)
		}
	})
	v.GET("/loadbalancer/:a/:b/:c", func(c *gin.Context) {
		if c.Param("b") != "certificates" {
			unroutable(c)
			return
		}
		s.getLBCertificate(c, c.Param("a"), c.Param("c"))
	})
	v.DELETE("/loadbalancer/:a/:b/:c", func(c *gin.Context) {
		if c.Param("b") != "certificates" {
			unroutable(c)
			return
		}
		s.deleteLBCertificate(c, c.Param("a"), c.Param("c"))
	})
	v.GET("/loadbalancer/:a/:b", func(c *gin.Context) {
		if c.Param("b") != "haproxy" {
			unroutable(c)
			return
		}
		s.getHAProxyConfig(c, c.Param("a"))
	})
	v.PUT("/loadbalancer/:a/:b", func(c *gin.Context) { s.lbAction(c, c.Param("a"), c.Param("b")) })
	v.DELETE("/listeners/:id", s.deleteListener)
	v.GET("/listeners", s.getListeners)
	// The router sees the decoded path: an id or a file name holding an
	// encoded '/' ("..%2Fx.pem") arrives as extra path segments. (Only
	// DELETE under /listeners: the LVS listener routes live there for
	// GET and PUT, and a catch-all must be a node's only child.)
	v.Any("/loadbalancer/:a/:b/:c/*rest", unroutable)
	v.DELETE("/listeners/:id/*rest", unroutable)
}

// unroutable answers a load-balancer path that matches no endpoint: 400
// when the client encoded a '/' into an id or a file name (it is invalid
// input, not an unknown endpoint), else the generic JSON 404, which the
// controller takes as an endpoint this agent does not offer.
func unroutable(c *gin.Context) {
	raw, _, _ := strings.Cut(c.Request.RequestURI, "?")
	if strings.Contains(strings.ToLower(raw), "%2f") {
		invalidRequest(c, "ids and file names must not contain '/'")
		return
	}
	generic(c, http.StatusNotFound, notFoundText)
}

func badID(c *gin.Context) { invalidRequest(c, "ids must be UUIDs") }

func lbNotFound(c *gin.Context, lbID string) {
	writeJSON(c, http.StatusNotFound, detailsBody{Message: "Loadbalancer Not Found", Details: "No loadbalancer with UUID: " + lbID})
}

func (s *Server) putHAProxyConfig(c *gin.Context, amphoraID, lbID string) {
	body, got := s.receive(c, s.Config.Current().MaxBodySize, amphoraID, lbID)
	if !got {
		return
	}
	defer body.Close()
	sum, err := s.LBs.Upload(c.Request.Context(), amphoraID, lbID, body)
	var ve *haproxy.ValidationError
	switch {
	case err == nil:
		withETag(c, sum)
		ok(c, http.StatusAccepted)
	case errors.As(err, &ve):
		invalidRequest(c, ve.Output)
	case errors.Is(err, haproxy.ErrBadID):
		badID(c)
	default:
		s.actionFailed(c, err, "haproxy service install failed", "lb_id", lbID)
	}
}

func (s *Server) getHAProxyConfig(c *gin.Context, lbID string) {
	data, err := s.LBs.Config(lbID)
	switch {
	case errors.Is(err, haproxy.ErrBadID):
		badID(c)
	case errors.Is(err, haproxy.ErrNotFound):
		lbNotFound(c, lbID)
	case err != nil:
		s.internalError(c, err)
	default:
		withETag(c, fsutil.MD5Hex(data))
		c.Data(http.StatusOK, "text/plain; charset=UTF-8", data)
	}
}

func (s *Server) lbAction(c *gin.Context, lbID, action string) {
	if s.lvsOwns(lbID) {
		s.lvsAction(c, lbID, action)
		return
	}
	details, err := s.LBs.Action(c.Request.Context(), lbID, action)
	switch {
	case err == nil:
		okDetails(c, http.StatusAccepted, details)
	case errors.Is(err, haproxy.ErrUnknownAction):
		unknownAction(c, action)
	case errors.Is(err, haproxy.ErrBadID):
		badID(c)
	case errors.Is(err, haproxy.ErrNotFound):
		lbNotFound(c, lbID)
	default:
		s.actionFailed(c, err, "haproxy action failed", "lb_id", lbID, "action", action)
	}
}

func (s *Server) deleteListener(c *gin.Context) {
	id := c.Param("id")
	if s.lvsOwns(id) {
		s.deleteLVSListener(c, id)
		return
	}
	switch err := s.LBs.Delete(c.Request.Context(), id); {
	case err == nil:
		ok(c, http.StatusOK)
	case errors.Is(err, haproxy.ErrBadID):
		badID(c)
	default:
		s.actionFailed(c, err, "load balancer delete failed", "lb_id", id)
	}
}

func (s *Server) getListeners(c *gin.Context) {
	writeJSON(c, http.StatusOK, s.listenerStatuses(c.Request.Context()))
}

func (s *Server) certError(c *gin.Context, err error, lbID, name string) {
	switch {
	case errors.Is(err, haproxy.ErrBadFilename):
		writeJSON(c, http.StatusBadRequest, okBody{Message: "Filename has wrong format"})
	case errors.Is(err, haproxy.ErrBadID):
		badID(c)
	case errors.Is(err, haproxy.ErrCertNotFound):
		writeJSON(c, http.StatusNotFound, detailsBody{Message: "Certificate Not Found", Details: "No certificate with filename: " + name})
	case errors.Is(err, fsutil.ErrTooLarge):
		tooLarge(c, s.Config.Current().MaxBodySize)
	default:
		s.internalError(c, err)
	}
}

// putLBCertificate stores a load balancer's PEM file. The body is
// received before the load balancer's lock is taken: a slow upload does
// not hold up the load balancer's other operations.
func (s *Server) putLBCertificate(c *gin.Context, lbID, name string) {
	switch {
	case !fsutil.ValidID(lbID):
		s.certError(c, haproxy.ErrBadID, lbID, name)
		return
	case !fsutil.ValidPEMName(name):
		s.certError(c, haproxy.ErrBadFilename, lbID, name)
		return
	}
	limit := s.Config.Current().MaxBodySize
	body, got := s.receive(c, limit)
	if !got {
		return
	}
	defer body.Close()
	sum, err := s.LBs.PutCertificate(c.Request.Context(), lbID, name, body, limit)
	if err != nil {
		s.certError(c, err, lbID, name)
		return
	}
	withETag(c, sum)
	ok(c, http.StatusOK)
}

func (s *Server) getLBCertificate(c *gin.Context, lbID, name string) {
	sum, err := s.LBs.CertificateMD5(lbID, name)
	if err != nil {
		s.certError(c, err, lbID, name)
		return
	}
	withETag(c, sum)
	writeJSON(c, http.StatusOK, struct {
		MD5 string `json:"md5sum"`
	}{sum})
}

func (s *Server) deleteLBCertificate(c *gin.Context, lbID, name string) {
	if err := s.LBs.DeleteCertificate(c.Request.Context(), lbID, name); err != nil {
		s.certError(c, err, lbID, name)
		return
	}
	ok(c, http.StatusOK)
}
