package testutil

// Heartbeat is a heartbeat message (version 3) as the controller decodes it.
// ID is a pointer so tests can tell an unset amphora id (JSON null) apart.
type Heartbeat struct {
	ID        *string `json:"id"`
	Seq       uint64  `json:"seq"`
	Ver       int     `json:"ver"`
	Listeners map[string]struct {
		Status string `json:"status"`
		Stats  struct {
			TX       int64 `json:"tx"`
			RX       int64 `json:"rx"`
			Conns    int64 `json:"conns"`
			TotConns int64 `json:"totconns"`
			Ereq     int64 `json:"ereq"`
		} `json:"stats"`
	} `json:"listeners"`
	Pools map[string]struct {
		Status  string            `json:"status"`
		Members map[string]string `json:"members"`
	} `json:"pools"`
}

// AmphoraID is the id, "" when it was null.
func (h *Heartbeat) AmphoraID() string {
	if h.ID == nil {
		return ""
	}
	return *h.ID
}
