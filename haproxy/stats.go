// Package haproxy drives the haproxy instances of the amphora.
//
// This file holds the stats-socket client: one runtime command per
// connection, bounded by a context, with the answers of "show stat",
// "show info" and "show servers state" parsed into values the heartbeat
// and the reload logic use.
package haproxy

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a StatsClient.
const (
	DefaultStatsTimeout     = 10 * time.Second // per command, when the context has no deadline
	DefaultStatsMaxResponse = 64 << 20         // bytes; "show stat" of 2000 servers is about 1.5 MiB
)

// ErrStatsCommand is returned for a runtime command the client refuses to
// send: empty, or containing a separator haproxy would interpret (';',
// newline, carriage return, NUL).
var ErrStatsCommand = errors.New("invalid haproxy runtime command")

// ErrStatsOutput is returned when an answer is not what the command
// produces (an error text from haproxy, a truncated or oversized answer).
var ErrStatsOutput = errors.New("unexpected haproxy runtime output")

// Commands sent by StatsClient. "show stat" asks for frontends (1),
// backends (2) and servers (4) of every proxy; per-listener socket rows
// (8, only present with "option socket-stats") are not needed.
const (
	cmdShowStat         = "show stat -1 7 -1"
	cmdShowInfo         = "show info"
	cmdShowServersState = "show servers state"
)

// StatsClient talks to the stats socket of one haproxy process. It holds no
// connection: every command dials, sends one line, and reads the answer
// until haproxy closes the connection. The zero Timeout and MaxResponse
// mean the package defaults. A StatsClient is safe for concurrent use.
type StatsClient struct {
	Path        string        // unix socket path, e.g. BASE/<lb_id>.sock
	Timeout     time.Duration // per command when ctx has no deadline
	MaxResponse int64         // answers larger than this are refused
}

// NewStatsClient returns a client for the stats socket at path.
func NewStatsClient(path string) *StatsClient {
	return &StatsClient{Path: path}
}

// Query sends one runtime command and returns haproxy's complete answer.
// The connection is bounded by ctx (its deadline, else c.Timeout) and
// closed before Query returns. haproxy reports command errors in the answer
// text, so callers parse or validate it; the typed helpers below do.
func (c *StatsClient) Query(ctx context.Context, cmd string) ([]byte, error) {
	if cmd == "" || strings.ContainsAny(cmd, ";\n\r\x00") {
		return nil, fmt.Errorf("%w: %q", ErrStatsCommand, cmd)
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = DefaultStatsTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmd, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	if err := conn.SetDeadline(dl); err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmd, err)
	}
	// Cancellation (not only the deadline) interrupts a blocked read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return nil, c.ioError(ctx, cmd, err)
	}
	limit := c.MaxResponse
	if limit <= 0 {
		limit = DefaultStatsMaxResponse
	}
	out, err := io.ReadAll(io.LimitReader(conn, limit+1))
	if err != nil {
		return nil, c.ioError(ctx, cmd, err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("haproxy %s %q: %w: answer exceeds %d bytes", c.Path, cmd, ErrStatsOutput, limit)
	}
	return out, nil
}

func (c *StatsClient) ioError(ctx context.Context, cmd string, err error) error {
	switch cerr := ctx.Err(); {
	case cerr != nil:
		err = errors.Join(cerr, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The only deadline on the connection is the context's; its timer
		// may fire a moment after the socket's.
		err = errors.Join(context.DeadlineExceeded, err)
	}
	return fmt.Errorf("haproxy %s %q: %w", c.Path, cmd, err)
}

// ShowStat returns the parsed "show stat" table (frontends, backends and
// servers of every proxy).
func (c *StatsClient) ShowStat(ctx context.Context) (*StatTable, error) {
	out, err := c.Query(ctx, cmdShowStat)
	if err != nil {
		return nil, err
	}
	t, err := ParseStatCSV(out)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmdShowStat, err)
	}
	return t, nil
}

// Report queries "show stat" once and derives the listener counters and the
// pool and member statuses the heartbeat carries.
func (c *StatsClient) Report(ctx context.Context) (*StatsReport, error) {
	out, err := c.Query(ctx, cmdShowStat)
	if err != nil {
		return nil, err
	}
	// Only the columns the summary reads are split out of each row.
	t, err := parseStat(out, summaryColumns)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmdShowStat, err)
	}
	r, err := SummarizeStats(t)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmdShowStat, err)
	}
	return r, nil
}

// ShowInfo returns the "show info" fields of the haproxy process.
func (c *StatsClient) ShowInfo(ctx context.Context) (RuntimeInfo, error) {
	out, err := c.Query(ctx, cmdShowInfo)
	if err != nil {
		return nil, err
	}
	info, err := ParseShowInfo(out)
	if err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w", c.Path, cmdShowInfo, err)
	}
	return info, nil
}

// errNoSockets: nothing to check means unhealthy.
var errNoSockets = errors.New("no haproxy stats socket to check: no load balancer is running here")

// CheckAnswering asks every stats socket for "show info", concurrently,
// and returns the failures joined: nil when every haproxy answered with
// its Pid. No socket at all is a failure (GAPS C4: an amphora without a
// running load balancer must not become VRRP MASTER). It is the verdict
// of "amphora-agent vrrp-check", keepalived's check of the load
// balancers.
func CheckAnswering(ctx context.Context, sockets []string) error {
	if len(sockets) == 0 {
		return errNoSockets
	}
	errs := make([]error, len(sockets))
	var wg sync.WaitGroup
	for i, s := range sockets {
		wg.Go(func() {
			info, err := NewStatsClient(s).ShowInfo(ctx)
			if err == nil && info["Pid"] == "" {
				err = fmt.Errorf("haproxy %s: show info without a Pid field", s)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ShowServersState returns the "show servers state" dump in the form haproxy
// loads with server-state-file: the format version line, the "# be_id ..."
// header and one line per server. Trailing blank lines are removed and
// exactly one newline is kept, which is what the reference agent writes to
// BASE/<lb_id>/servers-state.
func (c *StatsClient) ShowServersState(ctx context.Context) ([]byte, error) {
	out, err := c.Query(ctx, cmdShowServersState)
	if err != nil {
		return nil, err
	}
	text := bytes.TrimRight(out, " \t\r\n")
	first, _, _ := bytes.Cut(text, []byte("\n"))
	if _, err := strconv.Atoi(string(bytes.TrimSpace(first))); err != nil {
		return nil, fmt.Errorf("haproxy %s %q: %w: %q", c.Path, cmdShowServersState, ErrStatsOutput, snippet(first))
	}
	return append(text, '\n'), nil
}

// StatTable is a parsed "show stat" CSV answer. Columns are addressed by
// name, so the table works across haproxy versions that add, remove or
// reorder columns; a row shorter than the header reads as empty values.
type StatTable struct {
	Columns []string   // header names in order; "" for an unnamed column (trailing comma)
	Rows    [][]string // data rows as emitted
	index   map[string]int
}

// Index returns the position of the named column, or -1.
func (t *StatTable) Index(name string) int {
	if i, ok := t.index[name]; ok {
		return i
	}
	return -1
}

// Value returns the named field of row, or "" when the column or the field
// is absent.
func (t *StatTable) Value(row int, name string) string {
	return field(t.Rows[row], t.Index(name))
}

func field(rec []string, i int) string {
	if i < 0 || i >= len(rec) {
		return ""
	}
	return rec[i]
}

// ParseStatCSV parses the answer of "show stat". The text is decoded as
// UTF-8, invalid sequences becoming U+FFFD (names and check descriptions
// may carry any byte; the reference agent decoded ASCII and failed on
// them). The first line must be the "# pxname,svname,..." header; the
// "# " prefix is removed and the rest is read with encoding/csv, which also
// handles quoted fields. The pxname and svname columns are required.
func ParseStatCSV(data []byte) (*StatTable, error) { return parseStat(data, nil) }

// summaryColumns are the columns SummarizeStats reads.
var summaryColumns = []string{"pxname", "svname", "type", "status", "weight", "bin", "bout", "scur", "stot", "ereq"}

// parseStat parses a "show stat" answer; when only is set, rows of the
// quote-free fast path are split no further than the last of those
// columns (the others read as empty).
func parseStat(data []byte, only []string) (*StatTable, error) {
	text := strings.ToValidUTF8(string(data), "\uFFFD")
	text = strings.TrimLeft(text, " \t\r\n")
	if !strings.HasPrefix(text, "#") {
		first, _, _ := strings.Cut(text, "\n")
		return nil, fmt.Errorf("%w: no stat header: %q", ErrStatsOutput, snippet([]byte(first)))
	}
	text = strings.TrimLeft(text[1:], " ")

	if !strings.Contains(text, `"`) {
		// No quoted field anywhere (the usual case): split lines and
		// commas directly, several times faster than encoding/csv on the
		// thousands of rows of a large load balancer.
		return parseUnquotedStat(text, only)
	}
	return parseQuotedStat(text)
}

// parseQuotedStat reads the table with encoding/csv (quoted fields).
func parseQuotedStat(text string) (*StatTable, error) {
	r := csv.NewReader(strings.NewReader(text))
	r.FieldsPerRecord = -1 // rows may be shorter or longer than the header
	r.LazyQuotes = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: stat header: %w", ErrStatsOutput, err)
	}
	t, err := newStatTable(header)
	if err != nil {
		return nil, err
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: stat row: %w", ErrStatsOutput, err)
		}
		t.Rows = append(t.Rows, rec)
	}
	return t, nil
}

func newStatTable(header []string) (*StatTable, error) {
	t := &StatTable{Columns: header, index: make(map[string]int, len(header))}
	for i, name := range header {
		name = strings.TrimSpace(name)
		t.Columns[i] = name
		if _, dup := t.index[name]; name != "" && !dup {
			t.index[name] = i
		}
	}
	for _, required := range []string{"pxname", "svname"} {
		if t.Index(required) < 0 {
			return nil, fmt.Errorf("%w: stat header has no %q column", ErrStatsOutput, required)
		}
	}
	return t, nil
}

// parseUnquotedStat parses CSV text known to contain no quote character.
// Like encoding/csv it ignores empty lines and a trailing \r.
func parseUnquotedStat(text string, only []string) (*StatTable, error) {
	var t *StatTable
	limit := -1 // fields per row to split out; -1: all
	for len(text) > 0 {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if t == nil {
			var err error
			if t, err = newStatTable(strings.Split(line, ",")); err != nil {
				return nil, err
			}
			if len(only) > 0 {
				limit = 0
				for _, name := range only {
					limit = max(limit, t.Index(name)+1)
				}
			}
			continue
		}
		var rec []string
		if limit < 0 {
			rec = strings.Split(line, ",")
		} else {
			rec = strings.SplitN(line, ",", limit+1)
			if len(rec) > limit {
				rec = rec[:limit]
			}
		}
		t.Rows = append(t.Rows, rec)
	}
	if t == nil {
		return nil, fmt.Errorf("%w: stat header: empty", ErrStatsOutput)
	}
	return t, nil
}

// Member and pool status strings with a meaning in the agent. Every other
// value haproxy reports ("DOWN", "no check", "MAINT", "UP 1/3", "NOLB"...)
// is passed through unchanged.
const (
	StatusUp    = "UP"
	StatusDrain = "DRAIN"
)

// ListenerStats is the frontend row of one listener: its status (OPEN,
// STOP, PAUSED, or FULL on older haproxy) and absolute counters since the
// haproxy process started.
type ListenerStats struct {
	Status string
	Bin    int64 // bytes received from clients
	Bout   int64 // bytes sent to clients
	Scur   int64 // current sessions
	Stot   int64 // total sessions
	Ereq   int64 // request errors
}

// PoolStatus is a backend: its status ("UP" or "DOWN") and the status
// string of each member, keyed by server name (the member id).
type PoolStatus struct {
	Status  string
	Members map[string]string
}

// StatsReport is what one "show stat" contributes to a heartbeat:
// listeners keyed by frontend name (the listener id) and pools keyed by
// backend name ("<pool id>:<listener id>").
type StatsReport struct {
	Listeners map[string]ListenerStats
	Pools     map[string]PoolStatus
}

// Row kinds of the "type" column.
const (
	rowFrontend = "0"
	rowBackend  = "1"
	rowServer   = "2"
	rowSocket   = "3"
)

// SummarizeStats derives the heartbeat view of a stat table, the way the
// reference agent does from its two queries:
//
//   - rows whose pxname contains "prometheus" (the internal metrics proxy)
//     are dropped;
//   - a frontend row is a listener keyed by pxname, with its status and
//     counters;
//   - a backend row is a pool keyed by pxname with its status;
//   - a server row is a member of pool pxname keyed by svname; a member
//     "UP" with weight 0 is reported as "DRAIN", any other status as is.
//
// The row kind comes from the "type" column, or from svname (FRONTEND,
// BACKEND, else server) when the column is absent. Per-socket rows are
// ignored. Servers whose backend row is missing are dropped (haproxy always
// emits it; without it the pool has no status to report).
func SummarizeStats(t *StatTable) (*StatsReport, error) {
	var (
		iPx, iSv, iType = t.Index("pxname"), t.Index("svname"), t.Index("type")
		iStatus         = t.Index("status")
		iWeight         = t.Index("weight")
		iBin, iBout     = t.Index("bin"), t.Index("bout")
		iScur, iStot    = t.Index("scur"), t.Index("stot")
		iEreq           = t.Index("ereq")
	)
	if iPx < 0 || iSv < 0 {
		return nil, fmt.Errorf("%w: stat table without pxname/svname", ErrStatsOutput)
	}
	if iStatus < 0 {
		return nil, fmt.Errorf("%w: stat header has no %q column", ErrStatsOutput, "status")
	}
	rep := &StatsReport{Listeners: map[string]ListenerStats{}, Pools: map[string]PoolStatus{}}
	members := map[string]map[string]string{}
	for n, rec := range t.Rows {
		px, sv := field(rec, iPx), field(rec, iSv)
		if strings.Contains(px, "prometheus") {
			continue
		}
		kind := field(rec, iType)
		switch kind {
		case rowFrontend, rowBackend, rowServer, rowSocket:
		default:
			switch sv {
			case "FRONTEND":
				kind = rowFrontend
			case "BACKEND":
				kind = rowBackend
			default:
				kind = rowServer
			}
		}
		status := field(rec, iStatus)
		switch kind {
		case rowFrontend:
			l := ListenerStats{Status: status}
			var err error
			for _, c := range []struct {
				dst  *int64
				i    int
				name string
			}{{&l.Bin, iBin, "bin"}, {&l.Bout, iBout, "bout"}, {&l.Scur, iScur, "scur"}, {&l.Stot, iStot, "stot"}, {&l.Ereq, iEreq, "ereq"}} {
				if *c.dst, err = counter(field(rec, c.i)); err != nil {
					return nil, fmt.Errorf("%w: row %d (%s/%s) column %s: %w", ErrStatsOutput, n+1, px, sv, c.name, err)
				}
			}
			rep.Listeners[px] = l
		case rowBackend:
			rep.Pools[px] = PoolStatus{Status: status}
		case rowServer:
			if status == StatusUp && strings.TrimSpace(field(rec, iWeight)) == "0" {
				status = StatusDrain
			}
			m := members[px]
			if m == nil {
				m = map[string]string{}
				members[px] = m
			}
			m[sv] = status
		}
	}
	for px, p := range rep.Pools {
		p.Members = members[px]
		if p.Members == nil {
			p.Members = map[string]string{}
		}
		rep.Pools[px] = p
	}
	return rep, nil
}

// counter parses a non-negative counter; an empty field is 0.
func counter(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative counter %d", v)
	}
	return v, nil
}

// RuntimeInfo holds the "show info" fields by name (Name, Version, Pid,
// Uptime_sec, ...).
type RuntimeInfo map[string]string

// ParseShowInfo parses "Name: value" lines. A non-empty line without a
// colon means the answer is not "show info" output (an error text).
func ParseShowInfo(data []byte) (RuntimeInfo, error) {
	text := strings.ToValidUTF8(string(data), "\uFFFD")
	info := RuntimeInfo{}
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%w: %q", ErrStatsOutput, snippet([]byte(line)))
		}
		info[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if len(info) == 0 {
		return nil, fmt.Errorf("%w: empty show info answer", ErrStatsOutput)
	}
	return info, nil
}

// UptimeSec returns the Uptime_sec field: seconds since the haproxy
// process (the worker answering the socket) started.
func (i RuntimeInfo) UptimeSec() (int64, error) {
	v, ok := i["Uptime_sec"]
	if !ok {
		return 0, fmt.Errorf("%w: no Uptime_sec in show info", ErrStatsOutput)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: Uptime_sec %q is not a number of seconds", ErrStatsOutput, v)
	}
	return n, nil
}

// snippet shortens text quoted in an error.
func snippet(b []byte) string {
	const limit = 120
	if len(b) > limit {
		return strings.ToValidUTF8(string(b[:limit]), "\uFFFD") + "..."
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
