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
	var out []byte
	err := c.do(ctx, cmd, func(r io.Reader) (err error) {
		out, err = io.ReadAll(r)
		return err
	})
	return out, err
}

// errTooLarge ends the reading of an answer longer than MaxResponse.
var errTooLarge = errors.New("answer too large")

// answerReader reads the answer from the connection, refusing more than
// limit bytes, and remembers an I/O error so that do can tell it from a
// parse error of the consumer.
type answerReader struct {
	conn  io.Reader
	limit int64
	n     int64
	err   error
}

func (a *answerReader) Read(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if room := a.limit + 1 - a.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := a.conn.Read(p)
	a.n += int64(n)
	if a.n > a.limit {
		n, err = 0, errTooLarge
	}
	if err != nil {
		a.err = err
	}
	return n, err
}

// do sends one command and hands the answer, as it arrives, to read,
// which must consume it to the end (EOF: haproxy closes the connection
// after one command). The connection is bounded by ctx (its deadline,
// else c.Timeout) and closed before do returns.
func (c *StatsClient) do(ctx context.Context, cmd string, read func(io.Reader) error) error {
	if cmd == "" || strings.ContainsAny(cmd, ";\n\r\x00") {
		return fmt.Errorf("%w: %q", ErrStatsCommand, cmd)
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
	// The deadline and a cancellation interrupt a blocked read (statsconn.go).
	conn, err := dialStats(ctx, c.Path)
	if err != nil {
		return c.ioError(ctx, cmd, err)
	}
	defer conn.Close()

	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return c.ioError(ctx, cmd, err)
	}
	limit := c.MaxResponse
	if limit <= 0 {
		limit = DefaultStatsMaxResponse
	}
	ar := &answerReader{conn: conn, limit: limit}
	err = read(ar)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errTooLarge):
		return fmt.Errorf("haproxy %s %q: %w: answer exceeds %d bytes", c.Path, cmd, ErrStatsOutput, limit)
	case ar.err != nil && errors.Is(err, ar.err):
		return c.ioError(ctx, cmd, err)
	}
	return fmt.Errorf("haproxy %s %q: %w", c.Path, cmd, err)
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
// pool and member statuses the heartbeat carries. The answer is parsed as
// it arrives (statstream.go): only the columns the report needs are
// looked at and the text is never held whole, so the cost per server row
// is a scan of its first fields and one string, its name.
func (c *StatsClient) Report(ctx context.Context) (*StatsReport, error) {
	var rep *StatsReport
	err := c.do(ctx, cmdShowStat, func(r io.Reader) (err error) {
		rep, err = readReport(r, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
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
//
// It is the reference the streaming parser of Report (statstream.go) is
// tested against: both give the same report for every input.
func ParseStatCSV(data []byte) (*StatTable, error) {
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
		return parseUnquotedStat(text)
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
func parseUnquotedStat(text string) (*StatTable, error) {
	var t *StatTable
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
			continue
		}
		t.Rows = append(t.Rows, strings.Split(line, ","))
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
	var cols statColumns
	for i, name := range statColumnNames {
		cols[i] = t.Index(name)
	}
	if cols[colPx] < 0 || cols[colSv] < 0 {
		return nil, fmt.Errorf("%w: stat table without pxname/svname", ErrStatsOutput)
	}
	if cols[colStatus] < 0 {
		return nil, fmt.Errorf("%w: stat header has no %q column", ErrStatsOutput, "status")
	}
	s := newSummarizer()
	var row statRow
	for _, rec := range t.Rows {
		for i, c := range cols {
			row[i] = []byte(field(rec, c))
		}
		if err := s.add(&row); err != nil {
			return nil, err
		}
	}
	return s.finish(), nil
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
