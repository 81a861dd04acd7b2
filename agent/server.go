// Package agent is the amphora agent's REST API (version 1.0) over mutual
// TLS, as the Octavia controller's rest_api_driver expects it.
//
// Handlers are thin: they validate the request, call one method of the
// component that owns the state (haproxy, keepalived, netns, certs,
// config) and map its result to the reference's status codes and bodies.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/service"
)

// APIVersion is the only REST API version this agent speaks.
const APIVersion = "1.0"

// maxJSONBody caps the JSON bodies (plug, rules); they are a few hundred bytes.
const maxJSONBody = 1 << 20

// ServerCertificate is the agent's own TLS certificate (*certs.Store).
type ServerCertificate interface {
	// Replace installs a new certificate and key (PEM) for the next
	// connections; certs.ErrInvalidKeyPair when they do not match.
	Replace(pemData []byte) error
	// ServerConfig is the mutual-TLS configuration of the server.
	ServerConfig(minVersion uint16) *tls.Config
}

// Deps are the components the API drives, each behind an interface this
// package declares. Host, Config and Certs are required; a nil component
// among the others leaves its routes out (and its part of the listings).
type Deps struct {
	Config *config.Store
	Certs  ServerCertificate
	Log    *slog.Logger
	Host   Host
	LBs    LoadBalancers
	Net    Network
	VRRP   VRRP
	LVS    LVSListeners
	// Limits bound connections, uploads and response writes (zero
	// fields: defaults).
	Limits Limits
	// Activity, when set, is called as each request starts; the function
	// it returns, as the request ends. serve gives the memory keeper's
	// (internal/memtrim): what a burst of requests leaves behind is given
	// back once the burst is over.
	Activity func() (end func())
}

// Server is the agent's HTTPS API.
type Server struct {
	Deps
	engine  *gin.Engine
	uploads chan struct{} // one token per large upload in progress
}

// New builds the router. Call Serve to accept connections.
func New(d Deps) *Server {
	gin.SetMode(gin.ReleaseMode)
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	d.Limits = d.Limits.withDefaults()
	s := &Server{Deps: d, uploads: make(chan struct{}, d.Limits.MaxLargeUploads)}
	e := gin.New()
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.HandleMethodNotAllowed = true
	e.UseRawPath = false
	e.Use(s.recoverPanics)
	e.NoRoute(func(c *gin.Context) { generic(c, http.StatusNotFound, notFoundText) })
	e.NoMethod(func(c *gin.Context) { generic(c, http.StatusMethodNotAllowed, notAllowedText) })

	e.GET("/", s.getRoot)
	v := e.Group("/" + APIVersion)
	v.GET("/info", s.getInfo)
	v.GET("/details", s.getDetails)
	v.PUT("/config", s.putConfig)
	v.PUT("/certificate", s.putCertificate)
	s.routeLoadBalancers(v)
	s.routeNetwork(v)
	s.routeVRRP(v)
	s.routeLVS(v)
	s.engine = e
	return s
}

// Handler returns the API as an http.Handler: request logging, path
// normalisation, HEAD support and the response write deadline around the
// gin router.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Activity != nil {
			defer s.Activity()()
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK,
			rc: http.NewResponseController(w), writeTimeout: s.Limits.ResponseWriteTimeout}
		// No deadline while the body is received and the operation runs
		// (ReadTimeout bounds the former); one from the response's first
		// byte on. A deadline left by the previous request of a kept-alive
		// connection is cleared.
		_ = rec.rc.SetWriteDeadline(time.Time{})
		// The controller's version discovery asks for "//": repeated
		// slashes are merged and answered directly (the reference
		// redirects with 308).
		r.URL.Path = lowerIDs(mergeSlashes(r.URL.Path))
		r.URL.RawPath = ""
		var out http.ResponseWriter = rec
		if r.Method == http.MethodHead {
			r.Method = http.MethodGet
			out = headWriter{rec}
		}
		s.engine.ServeHTTP(out, r)
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "remote", r.RemoteAddr}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			attrs = append(attrs, "client", r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		level := slog.LevelInfo
		if rec.status >= 500 {
			level = slog.LevelWarn
		}
		s.Log.Log(r.Context(), level, "request", attrs...)
	})
}

// Serve accepts TLS connections on ln until ctx is cancelled, then drains
// in-flight requests and returns.
//
// Connections reach the HTTP server only after their TLS handshake, within
// Limits (see guardedListener). Requests do not inherit ctx: a shutdown
// lets each one finish with its true result, for up to
// Limits.DrainTimeout; only then are the remaining ones cancelled and,
// a few seconds later, their connections closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	cfg := s.Config.Current()
	minTLS, err := config.TLSMinVersion(cfg.AgentTLSProtocol)
	if err != nil {
		return err
	}
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	g := newGuardedListener(ln, s.Certs.ServerConfig(minTLS), s.Limits, s.Log)
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		ReadTimeout:       cfg.AgentRequestReadTimeout,
		// No WriteTimeout: net/http would count it from the end of the
		// request headers, cutting long uploads and operations. The
		// handler bounds the writing of each response instead
		// (Limits.ResponseWriteTimeout).
		IdleTimeout:    5 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       log.New(&tlsErrorLog{log: s.Log}, "", 0),
		BaseContext:    func(net.Listener) context.Context { return reqCtx },
		ConnState:      g.connState,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(g) }()
	select {
	case err := <-errc:
		g.Close()
		return err
	case <-ctx.Done():
	}
	_, open := g.counts()
	s.Log.Info("shutting down: draining requests in flight", "connections", open, "timeout", s.Limits.DrainTimeout.String())
	drain, cancel := context.WithTimeout(context.Background(), s.Limits.DrainTimeout)
	defer cancel()
	if err := hs.Shutdown(drain); err != nil {
		_, open := g.counts()
		s.Log.Warn("requests still in flight after the drain timeout: cancelling them", "connections", open)
		cancelRequests()
		grace, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(grace); err != nil {
			hs.Close()
		}
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// lowerIDs writes every UUID of a path in lower case: UUIDs are
// case-insensitive, and the files, units and locks of an object are
// named after its id, so one object must have one spelling.
func lowerIDs(p string) string {
	if strings.IndexFunc(p, func(r rune) bool { return r >= 'A' && r <= 'F' }) < 0 {
		return p
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if fsutil.ValidID(seg) {
			segs[i] = strings.ToLower(seg)
		}
	}
	return strings.Join(segs, "/")
}

func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	prev := byte(0)
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && prev == '/' {
			continue
		}
		prev = p[i]
		b.WriteByte(p[i])
	}
	return b.String()
}

func (s *Server) recoverPanics(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.Log.Error("handler panic", "path", c.Request.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			generic(c, http.StatusInternalServerError, internalErrText)
		}
	}()
	c.Next()
}

// readBody reads the whole request body, refusing more than limit bytes.
func readBody(c *gin.Context, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(c.Request.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errBodyTooLarge
	}
	return data, nil
}

// bodyError answers a body that could not be read: too large (above
// limit) gets a 400, a broken connection a 400 as well.
func bodyError(c *gin.Context, err error, limit int64) {
	if errors.Is(err, errBodyTooLarge) {
		tooLarge(c, limit)
		return
	}
	invalidRequest(c, "could not read the request body: "+err.Error())
}

// actionFailed answers a service manager's error: a failed action on a
// service (*service.ActionError) is logged with msg and args and answered
// with 500 and the reference's message and detail; anything else is an
// internal error.
func (s *Server) actionFailed(c *gin.Context, err error, msg string, args ...any) {
	var ae *service.ActionError
	if !errors.As(err, &ae) {
		s.internalError(c, err)
		return
	}
	s.Log.Error(msg, append(args, "err", err)...)
	writeJSON(c, http.StatusInternalServerError, detailsBody{Message: ae.Message, Details: ae.Err.Error()})
}

// internalError logs err and answers the reference's generic 500.
func (s *Server) internalError(c *gin.Context, err error) {
	s.Log.Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	generic(c, http.StatusInternalServerError, internalErrText)
}

type statusRecorder struct {
	http.ResponseWriter
	status int

	rc           *http.ResponseController
	writeTimeout time.Duration
	started      bool
}

// start sets the write deadline when the response begins.
func (r *statusRecorder) start() {
	if !r.started {
		r.started = true
		_ = r.rc.SetWriteDeadline(time.Now().Add(r.writeTimeout))
	}
}

func (r *statusRecorder) WriteHeader(code int) {
	r.start()
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.start()
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Flush() {
	r.start()
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// headWriter drops the body of a GET answered for a HEAD request.
type headWriter struct{ *statusRecorder }

func (headWriter) Write(p []byte) (int, error) { return len(p), nil }

// tlsErrorLog turns net/http's error log lines (mostly refused TLS
// handshakes: no client certificate, unknown CA) into structured records.
type tlsErrorLog struct{ log *slog.Logger }

func (l *tlsErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		l.log.Info("TLS handshake refused", "detail", msg)
	} else {
		l.log.Warn("http server", "detail", msg)
	}
	return len(p), nil
}
