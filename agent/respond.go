package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// Response bodies, with fields in the order the reference agent sends them.
type (
	okBody struct {
		Message string `json:"message"`
	}
	detailsBody struct {
		Message string `json:"message"`
		Details string `json:"details"`
	}
	onlyDetailsBody struct {
		Details string `json:"details"`
	}
	genericBody struct {
		Error    string `json:"error"`
		HTTPCode int    `json:"http_code"`
	}
)

// Texts of the generic error handler of the reference (Werkzeug wording);
// the controller only looks at the status and the JSON content type, but
// operators grep for them.
var reasons = map[int]string{
	http.StatusBadRequest:          "Bad Request",
	http.StatusNotFound:            "Not Found",
	http.StatusMethodNotAllowed:    "Method Not Allowed",
	http.StatusConflict:            "Conflict",
	http.StatusInternalServerError: "Internal Server Error",
}

const (
	notFoundText    = "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."
	notAllowedText  = "The method is not allowed for the requested URL."
	internalErrText = "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."
)

// writeJSON writes v compactly with Content-Type application/json (no
// charset, like the reference) and no HTML escaping.
func writeJSON(c *gin.Context, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status, buf = http.StatusInternalServerError, *bytes.NewBufferString(`{"error":"500 Internal Server Error","http_code":500}`)
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	c.Header("Content-Type", "application/json")
	c.Status(status)
	_, _ = c.Writer.Write(body)
	c.Abort()
}

// generic answers with the reference's generic error body.
func generic(c *gin.Context, status int, description string) {
	writeJSON(c, status, genericBody{
		Error:    fmt.Sprintf("%d %s: %s", status, reasons[status], description),
		HTTPCode: status,
	})
}

func ok(c *gin.Context, status int) { writeJSON(c, status, okBody{Message: "OK"}) }

func okDetails(c *gin.Context, status int, details string) {
	writeJSON(c, status, detailsBody{Message: "OK", Details: details})
}

// invalidRequest answers 400 with the reference's "Invalid request" body.
func invalidRequest(c *gin.Context, details string) {
	writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Invalid request", Details: details})
}

// unknownAction answers an action other than start, stop and reload.
func unknownAction(c *gin.Context, action string) {
	writeJSON(c, http.StatusBadRequest, detailsBody{Message: "Invalid Request", Details: "Unknown action: " + action})
}

// withETag sets the bare hex MD5 ETag the reference uses (no quotes).
func withETag(c *gin.Context, md5hex string) { c.Header("ETag", md5hex) }

// errBodyTooLarge is what readBody returns above the configured limit.
var errBodyTooLarge = errors.New("request body too large")
