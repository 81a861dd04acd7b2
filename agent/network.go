package agent

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/netns"
)

// Network is the data-plane plumbing of the amphora (*netns.Manager).
type Network interface {
	// Traffic are the byte counters of the data-plane NICs.
	Traffic() map[string]netns.Traffic
	PlugVIP(ctx context.Context, req *netns.PlugVIPRequest) (*netns.PlugResult, error)
	PlugNetwork(ctx context.Context, req *netns.PlugNetworkRequest) (*netns.PlugResult, error)
	InterfaceForIP(ctx context.Context, ip string) (string, error)
	SetInterfaceRules(ctx context.Context, ip string, body []byte) error
}

func (s *Server) routeNetwork(v *gin.RouterGroup) {
	if s.Net == nil {
		return
	}
	v.POST("/plug/vip/:vip", s.plugVIP)
	v.POST("/plug/network", s.plugNetwork)
	v.GET("/interface/:ip", s.getInterface)
	v.PUT("/interface/:ip/rules", s.putInterfaceRules)
}

// plugBody is the answer to a successful plug. Warnings (a host route the
// kernel refused, say) are reported rather than only logged (GAPS D9);
// the controller ignores keys it does not know.
type plugBody struct {
	Message  string   `json:"message"`
	Details  string   `json:"details"`
	Warnings []string `json:"warnings,omitempty"`
}

func (s *Server) plugVIP(c *gin.Context) {
	body, err := readBody(c, maxJSONBody)
	if err != nil {
		bodyError(c, err, maxJSONBody)
		return
	}
	req, err := netns.ParsePlugVIPRequest(c.Param("vip"), body)
	if err != nil {
		s.networkError(c, err)
		return
	}
	res, err := s.Net.PlugVIP(c.Request.Context(), req)
	if err != nil {
		s.networkError(c, err)
		return
	}
	writeJSON(c, http.StatusAccepted, plugBody{Message: "OK", Details: res.Details, Warnings: res.Warnings})
}

func (s *Server) plugNetwork(c *gin.Context) {
	body, err := readBody(c, maxJSONBody)
	if err != nil {
		bodyError(c, err, maxJSONBody)
		return
	}
	req, err := netns.ParsePlugNetworkRequest(body)
	if err != nil {
		s.networkError(c, err)
		return
	}
	res, err := s.Net.PlugNetwork(c.Request.Context(), req)
	if err != nil {
		s.networkError(c, err)
		return
	}
	writeJSON(c, http.StatusAccepted, plugBody{Message: "OK", Details: res.Details, Warnings: res.Warnings})
}

func (s *Server) getInterface(c *gin.Context) {
	name, err := s.Net.InterfaceForIP(c.Request.Context(), c.Param("ip"))
	if err != nil {
		s.networkError(c, err)
		return
	}
	writeJSON(c, http.StatusOK, struct {
		Message   string `json:"message"`
		Interface string `json:"interface"`
	}{"OK", name})
}

func (s *Server) putInterfaceRules(c *gin.Context) {
	body, err := readBody(c, maxJSONBody)
	if err != nil {
		bodyError(c, err, maxJSONBody)
		return
	}
	if err := s.Net.SetInterfaceRules(c.Request.Context(), c.Param("ip"), body); err != nil {
		s.networkError(c, err)
		return
	}
	ok(c, http.StatusOK)
}

// networkError maps the plumbing errors to the reference's answers.
func (s *Server) networkError(c *gin.Context, err error) {
	var bad *netns.BadRequestError
	var pe *netns.PlugError
	switch {
	case errors.As(err, &bad) && bad.Generic:
		generic(c, http.StatusBadRequest, bad.Message)
	case errors.As(err, &bad):
		writeJSON(c, http.StatusBadRequest, okBody{Message: bad.Message})
	case errors.Is(err, netns.ErrAddressNotFound):
		writeJSON(c, http.StatusNotFound, okBody{Message: netns.MsgAddressNotFound})
	case errors.Is(err, netns.ErrInterfaceExists):
		writeJSON(c, http.StatusConflict, okBody{Message: netns.MsgInterfaceExists})
	case errors.Is(err, netns.ErrNoInterface):
		writeJSON(c, http.StatusNotFound, onlyDetailsBody{Details: netns.MsgNoInterface})
	case errors.As(err, &pe):
		s.Log.Error("plug failed", "path", c.Request.URL.Path, "err", err)
		writeJSON(c, http.StatusInternalServerError, detailsBody{Message: pe.Message, Details: pe.Details})
	default:
		s.internalError(c, err)
	}
}
