package heartbeat

// Report is what one part of the amphora contributes to a heartbeat, in
// the heartbeat's own terms: listeners by id with their absolute
// counters, and pools with their member statuses. An adapter next to the
// sender fills one per source (haproxy.go: the stats sockets; lvs.go:
// keepalived's IPVS tables); the sender turns the counters into the
// message's deltas (counters.go) and the message into its wire format
// (message.go). A new counter is added here, in one adapter's mapping,
// and in message.go and counters.go.
type Report struct {
	Listeners map[string]Counters // by listener id
	// Pools by the key the controller expects: "<pool id>:<listener id>"
	// for haproxy, the bare pool id for LVS listeners.
	Pools map[string]Pool
}

// Counters are one listener's status and absolute counters since its
// process started.
type Counters struct {
	Status        string // OPEN, FULL, STOP...
	BytesIn       int64  // received from clients: "rx" deltas
	BytesOut      int64  // sent to clients: "tx" deltas
	Current       int64  // current connections: "conns", absolute
	Total         int64  // connections since start: "totconns" deltas
	RequestErrors int64  // "ereq" deltas
}

func newReport() *Report {
	return &Report{Listeners: map[string]Counters{}, Pools: map[string]Pool{}}
}

// add merges o into r.
func (r *Report) add(o *Report) {
	for id, l := range o.Listeners {
		r.Listeners[id] = l
	}
	for id, p := range o.Pools {
		r.Pools[id] = p
	}
}
