package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/keepalived"
)

// VRRP is the keepalived side of an ACTIVE_STANDBY amphora
// (*keepalived.Manager).
type VRRP interface {
	Upload(ctx context.Context, body io.Reader) (string, error)
	Action(ctx context.Context, action string) (string, error)
}

func (s *Server) routeVRRP(v *gin.RouterGroup) {
	if s.VRRP == nil {
		return
	}
	v.PUT("/vrrp/upload", s.putVRRPConfig)
	v.PUT("/vrrp/:action", s.vrrpAction)
}

// putVRRPConfig is PUT /1.0/vrrp/upload: 200 with the body's MD5 as ETag;
// a configuration keepalived refuses gets 400 and changes nothing.
func (s *Server) putVRRPConfig(c *gin.Context) {
	body, got := s.receive(c, s.Config.Current().MaxBodySize)
	if !got {
		return
	}
	defer body.Close()
	sum, err := s.VRRP.Upload(c.Request.Context(), body)
	var ve *keepalived.ValidationError
	switch {
	case err == nil:
		withETag(c, sum)
		ok(c, http.StatusOK)
	case errors.As(err, &ve):
		s.Log.Warn("keepalived configuration refused", "err", err)
		invalidRequest(c, ve.Output)
	default:
		s.actionFailed(c, err, "keepalived service install failed", "unit", keepalived.ServiceName)
	}
}

// vrrpAction is PUT /1.0/vrrp/<start|stop|reload>: 202 with the
// reference's detail text.
func (s *Server) vrrpAction(c *gin.Context) {
	action := c.Param("action")
	details, err := s.VRRP.Action(c.Request.Context(), action)
	switch {
	case err == nil:
		okDetails(c, http.StatusAccepted, details)
	case errors.Is(err, keepalived.ErrUnknownAction):
		unknownAction(c, strings.ToLower(action))
	default:
		s.actionFailed(c, err, "keepalived action failed", "unit", keepalived.ServiceName, "action", action)
	}
}
