// Package logging builds the agent's logger: structured key=value
// records on stderr (journald collects them under systemd) and, when
// [DEFAULT] use_syslog is set, to the local syslog daemon with the
// configured facility, which is how the controller's log offloading
// (10-rsyslog.conf forwarding local<admin>.* to the operator's servers)
// sees the agent.
//
// Syslog delivery never holds up the agent: records go to a bounded
// queue that one goroutine writes to the syslog socket (/dev/log) as
// RFC 3164 datagrams, the format glibc's syslog(3) sends and rsyslog's
// default templates expect:
//
//	<142>Dec  3 11:48:20 amphora-agent[812]: level=INFO msg="request" method=GET ...
//
// When the daemon is down or restarting, records wait in the queue (1024
// by default); beyond that they are dropped and counted. When delivery
// resumes a warning says how many were lost, and the counters reach
// `amphora-agent status` through a small status file.
//
// The facility and use_syslog can change at run time (PUT /1.0/config):
// Configure applies them to the next record.
package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// Options configure New. Zero values take the defaults noted.
type Options struct {
	// Stderr receives the records as text with a time stamp.
	Stderr io.Writer
	// Level is the minimum level of both outputs (info).
	Level slog.Leveler
	// Tag names the program in syslog records ("amphora-agent").
	Tag string
	// Socket is the syslog daemon's datagram socket ("/dev/log").
	Socket string
	// QueueLen bounds the records waiting for the syslog daemon (1024).
	QueueLen int
	// StatusFile, when set, receives the delivery state as JSON for
	// `amphora-agent status` (written atomically, on changes, at most
	// every few seconds).
	StatusFile string
	// Syslog and Facility are the initial settings (see Configure).
	Syslog   bool
	Facility Facility
	// Journal says stderr is connected to the systemd journal; zero
	// value: detected from $JOURNAL_STREAM. With syslog delivery on, the
	// journal then gets the records through /dev/log only (not twice),
	// and stderr only what syslog had to drop.
	Journal *bool
}

// maxDatagram bounds one syslog message (rsyslog's default
// $MaxMessageSize is 8 KiB); longer records are cut.
const maxDatagram = 8000

// Logging is the agent's logging set-up.
type Logging struct {
	opts    Options
	logger  *slog.Logger
	notices *slog.Logger // stderr only, for delivery trouble
	journal bool
	pid     int

	syslogOn atomic.Bool
	facility atomic.Int32

	queue     chan []byte
	kick      chan struct{} // wakes the writer's back-off wait (Configure)
	done      chan struct{} // closed by Close
	writerEnd chan struct{} // closed when the writer has drained
	closeOnce sync.Once

	mu sync.Mutex // guards st and dirty
	st Status
	// statusDirty: st changed since the status file was last written
	statusDirty bool
	transition  chan struct{} // a state change worth writing now
}

// Status is the syslog delivery state.
type Status struct {
	Enabled   bool      `json:"enabled"`
	Facility  string    `json:"facility"`
	Socket    string    `json:"socket"`
	Connected bool      `json:"connected"`
	Delivered uint64    `json:"delivered"`
	Dropped   uint64    `json:"dropped"`
	Queued    int       `json:"queued"`
	LastError string    `json:"last_error,omitempty"`
	DownSince time.Time `json:"down_since,omitzero"`
	// DroppedInOutage counts the records dropped since delivery last
	// (re)started; reported, and reset, when it resumes.
	DroppedInOutage uint64    `json:"dropped_in_outage"`
	PID             int       `json:"pid"`
	Updated         time.Time `json:"updated"`
}

// New builds the logger and starts the syslog writer; call Close at exit.
func New(o Options) *Logging {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Tag == "" {
		o.Tag = "amphora-agent"
	}
	if o.Socket == "" {
		o.Socket = "/dev/log"
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 1024
	}
	l := &Logging{
		opts:       o,
		pid:        os.Getpid(),
		queue:      make(chan []byte, o.QueueLen),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerEnd:  make(chan struct{}),
		transition: make(chan struct{}, 1),
	}
	if o.Journal != nil {
		l.journal = *o.Journal
	} else {
		l.journal = StderrIsJournal(o.Stderr)
	}
	l.st = Status{Socket: o.Socket, PID: l.pid}
	l.apply(o.Syslog, o.Facility)

	text := &slog.HandlerOptions{Level: o.Level}
	stderr := slog.NewTextHandler(o.Stderr, text)
	l.notices = slog.New(stderr)
	sys := slog.NewTextHandler(sink{l}, &slog.HandlerOptions{Level: o.Level, ReplaceAttr: dropTime})
	l.logger = slog.New(slog.NewMultiHandler(
		gate{stderr, func() bool { return !(l.journal && l.syslogOn.Load()) }},
		gate{sys, l.syslogOn.Load},
	))
	go l.writer()
	go l.statusWriter()
	return l
}

// Logger is the agent's logger.
func (l *Logging) Logger() *slog.Logger { return l.logger }

// Configure turns syslog delivery on or off and sets its facility; the
// next record uses them.
func (l *Logging) Configure(enabled bool, f Facility) {
	if l.syslogOn.Load() == enabled && Facility(l.facility.Load()) == f {
		return
	}
	l.apply(enabled, f)
	select {
	case l.kick <- struct{}{}:
	default:
	}
	l.markTransition()
}

func (l *Logging) apply(enabled bool, f Facility) {
	l.facility.Store(int32(f))
	l.syslogOn.Store(enabled)
	l.mu.Lock()
	l.st.Enabled, l.st.Facility = enabled, f.String()
	l.statusDirty = true
	l.mu.Unlock()
}

// Status returns the delivery state.
func (l *Logging) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.st
	st.Queued = len(l.queue)
	return st
}

// Close delivers what is queued (waiting at most until ctx ends), stops
// the writer and writes the status file a last time.
func (l *Logging) Close(ctx context.Context) {
	l.closeOnce.Do(func() { close(l.done) })
	select {
	case <-l.writerEnd:
	case <-ctx.Done():
	}
	l.writeStatus()
}

// StderrIsJournal reports whether w is the process's stderr and
// connected to the systemd journal ($JOURNAL_STREAM names its device and
// inode, systemd.exec(5)).
func StderrIsJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f.Fd() != 2 {
		return false
	}
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return dev == strconv.FormatUint(st.Dev, 10) && ino == strconv.FormatUint(st.Ino, 10)
}

// gate passes records to h while on() holds.
type gate struct {
	h  slog.Handler
	on func() bool
}

func (g gate) Enabled(ctx context.Context, lv slog.Level) bool {
	return g.on() && g.h.Enabled(ctx, lv)
}
func (g gate) Handle(ctx context.Context, r slog.Record) error { return g.h.Handle(ctx, r) }
func (g gate) WithAttrs(as []slog.Attr) slog.Handler           { return gate{g.h.WithAttrs(as), g.on} }
func (g gate) WithGroup(name string) slog.Handler              { return gate{g.h.WithGroup(name), g.on} }

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// sink receives the syslog text handler's output, one record per Write
// ("level=INFO msg=... k=v\n"), and queues it as a datagram.
type sink struct{ l *Logging }

func (s sink) Write(p []byte) (int, error) {
	s.l.enqueue(p)
	return len(p), nil
}

// severity maps the record's level field to the syslog severity.
func severity(rec []byte) int {
	lv, _, _ := bytes.Cut(bytes.TrimPrefix(rec, []byte("level=")), []byte(" "))
	switch {
	case bytes.HasPrefix(lv, []byte("DEBUG")):
		return 7
	case bytes.HasPrefix(lv, []byte("INFO")):
		return 6
	case bytes.HasPrefix(lv, []byte("WARN")):
		return 4
	case bytes.HasPrefix(lv, []byte("ERROR")):
		return 3
	}
	return 5
}

// format builds the RFC 3164 datagram glibc's syslog(3) would send.
func (l *Logging) format(rec []byte, now time.Time) []byte {
	rec = bytes.TrimRight(rec, "\n")
	pri := int(l.facility.Load())*8 + severity(rec)
	b := make([]byte, 0, 48+len(l.opts.Tag)+len(rec))
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(pri), 10)
	b = append(b, '>')
	b = now.AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	b = append(b, l.opts.Tag...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(l.pid), 10)
	b = append(b, "]: "...)
	b = append(b, rec...)
	if len(b) > maxDatagram {
		b = append(b[:maxDatagram-3], "..."...)
	}
	return b
}

// enqueue queues a record without ever waiting; a full queue drops it.
func (l *Logging) enqueue(rec []byte) {
	msg := l.format(rec, time.Now())
	select {
	case l.queue <- msg:
		return
	default:
	}
	l.mu.Lock()
	l.st.Dropped++
	l.st.DroppedInOutage++
	l.statusDirty = true
	l.mu.Unlock()
	if l.journal {
		// the journal did not get it through stderr: keep it there
		_, _ = l.opts.Stderr.Write(append(bytes.TrimRight(rec, "\n"), '\n'))
	}
}

// writer delivers the queue to the syslog socket, reconnecting with
// back-off while the daemon is away.
func (l *Logging) writer() {
	defer close(l.writerEnd)
	var conn *net.UnixConn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	backoff := 100 * time.Millisecond
	var pending []byte
	draining := false
	var drainUntil time.Time
	for {
		if !draining {
			select {
			case <-l.done:
				draining, drainUntil = true, time.Now().Add(2*time.Second)
			default:
			}
		}
		if pending == nil {
			if draining {
				select {
				case pending = <-l.queue:
				default:
					return
				}
			} else {
				select {
				case pending = <-l.queue:
				case <-l.done:
					draining, drainUntil = true, time.Now().Add(2*time.Second)
					continue
				}
			}
		}
		if draining && time.Now().After(drainUntil) {
			return
		}
		if conn == nil && !l.syslogOn.Load() {
			// turned off while the daemon was away: what is left is lost
			n := uint64(1)
			for drained := false; !drained; {
				select {
				case <-l.queue:
					n++
				default:
					drained = true
				}
			}
			pending = nil
			l.mu.Lock()
			l.st.Dropped += n
			l.statusDirty = true
			l.mu.Unlock()
			continue
		}
		if conn == nil {
			c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: l.opts.Socket, Net: "unixgram"})
			if err != nil {
				l.down(err)
				if draining {
					return
				}
				if !l.sleep(backoff) {
					draining, drainUntil = true, time.Now().Add(2*time.Second)
				}
				backoff = min(backoff*2, 2*time.Second)
				continue
			}
			conn = c
		}
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, err := conn.Write(pending)
		switch {
		case err == nil:
			pending = nil
			backoff = 100 * time.Millisecond
			l.mu.Lock()
			l.st.Delivered++
			l.statusDirty = true
			healthy := l.st.Connected
			l.mu.Unlock()
			if healthy {
				break
			}
			// the daemon takes records (again): say what the outage cost,
			// before the rest of the backlog (the queue may be full)
			if notice := l.up(); notice != nil {
				_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := conn.Write(notice); err == nil {
					l.mu.Lock()
					l.st.Delivered++
					l.mu.Unlock()
				}
			}
		case errors.Is(err, syscall.EMSGSIZE):
			pending = nil // cannot be sent at any size the socket takes
			l.mu.Lock()
			l.st.Dropped++
			l.statusDirty = true
			l.mu.Unlock()
		default:
			// daemon gone (ECONNREFUSED, ENOENT after a restart) or not
			// reading (timeout): reconnect, keep the record
			conn.Close()
			conn = nil
			l.down(err)
		}
	}
}

// sleep waits d, or less when Configure kicks or Close is called; false
// when closing.
func (l *Logging) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.kick:
		return true
	case <-l.done:
		return false
	}
}

func (l *Logging) down(err error) {
	l.mu.Lock()
	was := l.st.Connected || l.st.DownSince.IsZero()
	l.st.Connected = false
	l.st.LastError = err.Error()
	if was {
		l.st.DownSince = time.Now()
	}
	l.statusDirty = true
	l.mu.Unlock()
	if was {
		l.notices.Warn("syslog delivery failing; records are queued, and dropped once the queue is full",
			"socket", l.opts.Socket, "queue", l.opts.QueueLen, "err", err)
		l.markTransition()
	}
}

// up records that the daemon takes records; after an outage it returns
// the warning to send next, also written to stderr.
func (l *Logging) up() []byte {
	l.mu.Lock()
	since, dropped := l.st.DownSince, l.st.DroppedInOutage
	l.st.Connected = true
	l.st.LastError = ""
	l.st.DownSince = time.Time{}
	l.st.DroppedInOutage = 0
	l.statusDirty = true
	l.mu.Unlock()
	l.markTransition()
	if since.IsZero() {
		return nil
	}
	args := []any{"socket", l.opts.Socket, "down_for", time.Since(since).Round(time.Millisecond).String(), "dropped", dropped}
	const msg = "syslog delivery resumed"
	l.notices.Warn(msg, args...)
	var rec bytes.Buffer
	slog.New(slog.NewTextHandler(&rec, &slog.HandlerOptions{ReplaceAttr: dropTime})).Warn(msg, args...)
	return l.format(rec.Bytes(), time.Now())
}

func (l *Logging) markTransition() {
	select {
	case l.transition <- struct{}{}:
	default:
	}
}

// statusWriter writes the status file on state changes and every 10 s
// while the counters move.
func (l *Logging) statusWriter() {
	if l.opts.StatusFile == "" {
		return
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	l.writeStatus()
	for {
		select {
		case <-l.writerEnd:
			return
		case <-l.transition:
			// let a burst of transitions settle
			time.Sleep(200 * time.Millisecond)
		case <-tick.C:
		}
		l.mu.Lock()
		dirty := l.statusDirty
		l.mu.Unlock()
		if dirty {
			l.writeStatus()
		}
	}
}

func (l *Logging) writeStatus() {
	if l.opts.StatusFile == "" {
		return
	}
	st := l.Status()
	if !st.Enabled && st.Delivered == 0 && st.Dropped == 0 {
		return // never used: nothing to report
	}
	st.Updated = time.Now()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return
	}
	l.mu.Lock()
	l.statusDirty = false
	l.mu.Unlock()
	if err := fsutil.WriteFile(l.opts.StatusFile, append(data, '\n'), 0o644); err != nil {
		l.notices.Debug("syslog status file not written", "path", l.opts.StatusFile, "err", err)
	}
}

// ReadStatus reads a status file written by a running (or former)
// process.
func ReadStatus(path string) (Status, error) {
	var st Status
	data, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(data, &st)
	return st, err
}
