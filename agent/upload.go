package agent

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/spool"
)

// Every upload (haproxy, keepalived and LVS configurations, certificates,
// the agent configuration) is received the same way, before any lock of
// the object it changes is taken:
//
//  1. a large body (above Limits.LargeUpload, or of unknown length) waits
//     for one of Limits.MaxLargeUploads turns; the controller's client
//     waits for its answer, which suits it better than a 503 it would
//     not retry (it retries only connection errors);
//  2. the body streams into an anonymous spool file next to base_path,
//     within its size limit, so memory use does not depend on its size;
//  3. the handler validates and installs it from that file; the turn
//     and the file are released when the handler ends.

// received is an upload body held on disk for the handler.
type received struct {
	*spool.File
	release func()
}

// Close frees the spool file and the upload turn.
func (r *received) Close() {
	r.File.Close()
	r.release()
}

// maxDrain is how much of a refused, too large body is still read (and
// discarded) so that the client sees the answer rather than a reset
// connection.
const maxDrain = 256 << 20

// receive checks the ids of an upload, then receives its body (at most
// limit bytes) into a spool file. It reports false when it answered the
// request itself: a bad id, no upload turn in time, a body too large or
// unreadable.
func (s *Server) receive(c *gin.Context, limit int64, ids ...string) (*received, bool) {
	for _, id := range ids {
		if !fsutil.ValidID(id) {
			badID(c)
			return nil, false
		}
	}
	release, ok := s.uploadTurn(c)
	if !ok {
		return nil, false
	}
	f, err := spool.Receive(s.Config.Current().BasePath, c.Request.Body, limit)
	if err != nil {
		release()
		switch {
		case errors.Is(err, spool.ErrTooLarge):
			_, _ = io.CopyN(io.Discard, c.Request.Body, maxDrain)
			tooLarge(c, limit)
		case errors.Is(err, spool.ErrSource):
			invalidRequest(c, "could not read the request body: "+err.Error())
		default:
			s.internalError(c, err)
		}
		return nil, false
	}
	return &received{File: f, release: release}, true
}

// uploadTurn waits for the upload's turn when its body is large. It
// reports false when it answered the request (503) or the client left.
func (s *Server) uploadTurn(c *gin.Context) (release func(), ok bool) {
	r := c.Request
	if r.ContentLength >= 0 && r.ContentLength <= s.Limits.LargeUpload {
		return func() {}, true
	}
	release = func() { <-s.uploads }
	select {
	case s.uploads <- struct{}{}:
		return release, true
	default:
	}
	s.Log.Debug("large upload waiting for its turn", "path", r.URL.Path, "content_length", r.ContentLength)
	wait := s.Limits.UploadQueueWait
	if wait <= 0 {
		wait = s.Config.Current().AgentRequestReadTimeout
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.uploads <- struct{}{}:
		return release, true
	case <-r.Context().Done():
		s.internalError(c, r.Context().Err())
	case <-t.C:
		s.Log.Warn("large upload refused: no turn in time", "path", r.URL.Path, "content_length", r.ContentLength,
			"concurrent_large_uploads", s.Limits.MaxLargeUploads, "waited", wait.String())
		c.Header("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()/3))))
		writeJSON(c, http.StatusServiceUnavailable, detailsBody{Message: "Too many uploads in progress",
			Details: fmt.Sprintf("%d large uploads are being received or validated; this one waited %s", s.Limits.MaxLargeUploads, wait)})
	}
	return nil, false
}

// tooLarge answers a body above its limit: 400 (a 413 would be taken as
// success by the controller, which maps only the statuses the reference
// uses).
func tooLarge(c *gin.Context, limit int64) {
	writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Request body too large",
		Details: fmt.Sprintf("the limit for this request is %d bytes ([amphora_agent] max_request_body_size caps every upload)", limit)})
}

// documentLimit is the size limit of the agent configuration and the
// agent's certificate.
func (s *Server) documentLimit() int64 {
	return min(s.Limits.MaxDocument, s.Config.Current().MaxBodySize)
}
