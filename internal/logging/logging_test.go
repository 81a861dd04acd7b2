package logging

// The syslog side runs against a real datagram socket standing for
// /dev/log (the test's own, in a temporary directory); the end-to-end
// test with Debian's rsyslog and the controller's 10-rsyslog.conf is in
// cmd/amphora-agent (syslog_test.go).

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// receiver is a syslog daemon stand-in: a unixgram socket collecting
// datagrams.
type receiver struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func listen(t *testing.T, path string) *receiver {
	t.Helper()
	_ = os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{path: path, conn: c, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 1<<16)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, string(buf[:n]))
			r.mu.Unlock()
		}
	}()
	t.Cleanup(r.close)
	return r
}

// close stops the daemon stand-in and removes its socket, as rsyslog
// does when it stops.
func (r *receiver) close() {
	r.conn.Close()
	<-r.done
	_ = os.Remove(r.path)
}

func (r *receiver) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func (r *receiver) waitFor(t *testing.T, d time.Duration, what string, pred func(string) bool) string {
	t.Helper()
	var found string
	testutil.WaitFor(t, d, func() (bool, string) {
		for _, m := range r.all() {
			if pred(m) {
				found = m
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s: not among %d messages", what, len(r.all()))
	})
	return found
}

var rfc3164 = regexp.MustCompile(`^<(\d+)>([A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d) amphora-agent\[(\d+)\]: (.*)$`)

func TestFormatAndFacility(t *testing.T) {
	dir := testutil.ShortDir(t, "lg")
	r := listen(t, filepath.Join(dir, "log"))
	var stderr testutil.SyncBuffer
	l := New(Options{Stderr: &stderr, Level: slog.LevelDebug, Socket: r.path, Syslog: true, Facility: Local(1)})
	defer closeLogging(l)

	log := l.Logger().With("lb_id", "x y")
	log.Info("haproxy started", "unit", "haproxy-1")
	log.Debug("detail", "n", 3)
	log.Warn("careful")
	log.Error("failed", "err", "boom\nsecond line")
	m := r.waitFor(t, 5*time.Second, "error record", func(s string) bool { return strings.Contains(s, "msg=failed") })
	msgs := r.all()
	if len(msgs) != 4 {
		t.Fatalf("%d datagrams: %q", len(msgs), msgs)
	}
	wantPRI := []int{17*8 + 6, 17*8 + 7, 17*8 + 4, 17*8 + 3}
	wantText := []string{
		`level=INFO msg="haproxy started" lb_id="x y" unit=haproxy-1`,
		`level=DEBUG msg=detail lb_id="x y" n=3`,
		`level=WARN msg=careful lb_id="x y"`,
		`level=ERROR msg=failed lb_id="x y" err="boom\nsecond line"`,
	}
	for i, m := range msgs {
		sm := rfc3164.FindStringSubmatch(m)
		if sm == nil {
			t.Fatalf("not RFC 3164: %q", m)
		}
		if pri, _ := strconv.Atoi(sm[1]); pri != wantPRI[i] {
			t.Errorf("record %d PRI %d, want %d", i, pri, wantPRI[i])
		}
		if sm[3] != strconv.Itoa(os.Getpid()) {
			t.Errorf("pid %s", sm[3])
		}
		if sm[4] != wantText[i] {
			t.Errorf("record %d: %q, want %q", i, sm[4], wantText[i])
		}
		if ts, err := time.ParseInLocation(time.Stamp, sm[2], time.Local); err != nil || absDur(time.Since(ts.AddDate(time.Now().Year(), 0, 0))) > time.Hour {
			t.Errorf("time stamp %q: %v", sm[2], err)
		}
	}
	_ = m
	// stderr is not the journal here: it has every record, with times
	if out := stderr.String(); strings.Count(out, "time=") != 4 {
		t.Errorf("stderr:\n%s", out)
	}

	// a new facility takes effect at the next record
	l.Configure(true, Local(4))
	log.Info("after")
	m = r.waitFor(t, 5*time.Second, "record after the change", func(s string) bool { return strings.Contains(s, "msg=after") })
	if !strings.HasPrefix(m, fmt.Sprintf("<%d>", 20*8+6)) {
		t.Errorf("after Configure(local4): %q", m)
	}
	// off: nothing more reaches syslog
	l.Configure(false, Local(4))
	log.Info("not to syslog")
	log.Info("marker")
	time.Sleep(200 * time.Millisecond)
	for _, m := range r.all() {
		if strings.Contains(m, "not to syslog") {
			t.Errorf("record sent with syslog off: %q", m)
		}
	}
	if st := l.Status(); st.Enabled || st.Facility != "local4" || st.Delivered != 5 || st.Dropped != 0 || !st.Connected {
		t.Errorf("status %+v", st)
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestDaemonAway: with the daemon gone, logging never waits; records
// beyond the queue are dropped and counted; when the daemon is back the
// queue is delivered and a warning says how many were lost; the status
// file follows.
func TestDaemonAway(t *testing.T) {
	dir := testutil.ShortDir(t, "lg")
	path := filepath.Join(dir, "log")
	r := listen(t, path)
	status := filepath.Join(dir, "status.json")
	var stderr testutil.SyncBuffer
	l := New(Options{Stderr: &stderr, Socket: path, Syslog: true, Facility: Local(1), QueueLen: 50, StatusFile: status})
	defer closeLogging(l)
	log := l.Logger()
	log.Info("before")
	r.waitFor(t, 5*time.Second, "first record", func(s string) bool { return strings.Contains(s, "msg=before") })
	r.close()

	const n = 3000
	start := time.Now()
	for i := 0; i < n; i++ {
		log.Info("while away", "i", i)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("%d records took %v with the daemon away: logging waits", n, el)
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		st := l.Status()
		return !st.Connected && st.Dropped >= n-50-1, fmt.Sprintf("status %+v", st)
	})
	st, err := ReadStatus(status)
	for end := time.Now().Add(10 * time.Second); (err != nil || st.Connected || st.Dropped == 0) && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		st, err = ReadStatus(status)
	}
	if err != nil || st.Connected || st.Dropped == 0 || st.LastError == "" || st.PID != os.Getpid() || st.DownSince.IsZero() {
		t.Errorf("status file while away: %+v %v", st, err)
	}
	if !strings.Contains(stderr.String(), "syslog delivery failing") {
		t.Errorf("no notice on stderr:\n%.2000s", stderr.String())
	}

	r2 := listen(t, path)
	resumed := r2.waitFor(t, 10*time.Second, "resumed warning", func(s string) bool { return strings.Contains(s, "syslog delivery resumed") })
	dropped := l.Status().Dropped
	if !strings.Contains(resumed, fmt.Sprintf(" dropped=%d", dropped)) || !strings.HasPrefix(resumed, fmt.Sprintf("<%d>", 17*8+4)) {
		t.Errorf("resumed warning %q (dropped %d)", resumed, dropped)
	}
	// the warning right after the first record through, then the
	// rest of the backlog, oldest first; every record is delivered or
	// counted as dropped
	var got []string
	var idx []int
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		got, idx = r2.all(), nil
		for _, m := range got {
			if i := strings.Index(m, " i="); i > 0 {
				v, _ := strconv.Atoi(m[i+3:])
				idx = append(idx, v)
			}
		}
		return uint64(len(idx))+dropped == n && len(idx) > 0, fmt.Sprintf("%d delivered + %d dropped, want %d", len(idx), dropped, n)
	})
	if len(got) < 2 || !strings.Contains(got[1], "syslog delivery resumed") {
		t.Errorf("records after the outage: %.300q", got)
	}
	for i := 1; i < len(idx); i++ {
		if idx[i] <= idx[i-1] {
			t.Fatalf("out of order: %v", idx)
		}
	}
	testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		st, err := ReadStatus(status)
		return err == nil && st.Connected && st.DroppedInOutage == 0, fmt.Sprintf("%+v %v", st, err)
	})
}

// TestDaemonNotReading: a daemon that does not read (its socket buffer
// full) does not hold the agent up either.
func TestDaemonNotReading(t *testing.T) {
	dir := testutil.ShortDir(t, "lg")
	path := filepath.Join(dir, "log")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stderr testutil.SyncBuffer
	l := New(Options{Stderr: &stderr, Socket: path, Syslog: true, Facility: Local(1), QueueLen: 100})
	defer closeLogging(l)
	start := time.Now()
	for i := 0; i < 5000; i++ {
		l.Logger().Info("stuck daemon", "i", i, "pad", strings.Repeat("x", 200))
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("logging waited for the daemon: %v", el)
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		st := l.Status()
		return st.Dropped > 0, fmt.Sprintf("%+v", st)
	})
	time.Sleep(3 * time.Second) // a few reconnect-and-time-out rounds
	if n := strings.Count(stderr.String(), "syslog delivery failing"); n != 1 {
		t.Errorf("%d failure notices for one stuck daemon, want 1", n)
	}
	if strings.Contains(stderr.String(), "syslog delivery resumed") {
		t.Error("a daemon that never took a record was reported as resumed")
	}
}

// TestJournalNotTwice: under systemd with syslog on, stderr (the
// journal) does not get the records a second time, except those syslog
// dropped.
func TestJournalNotTwice(t *testing.T) {
	dir := testutil.ShortDir(t, "lg")
	r := listen(t, filepath.Join(dir, "log"))
	var stderr testutil.SyncBuffer
	yes := true
	l := New(Options{Stderr: &stderr, Socket: r.path, Syslog: true, Facility: Local(1), Journal: &yes})
	defer closeLogging(l)
	l.Logger().Info("once")
	r.waitFor(t, 5*time.Second, "record", func(s string) bool { return strings.Contains(s, "msg=once") })
	if strings.Contains(stderr.String(), "once") {
		t.Errorf("journal got the record twice:\n%s", stderr.String())
	}
	l.Configure(false, Local(1))
	l.Logger().Info("journal only")
	if !strings.Contains(stderr.String(), "journal only") {
		t.Errorf("syslog off: the journal must get the records:\n%s", stderr.String())
	}
}

func TestStderrIsJournal(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !StderrIsJournal(os.Stderr) {
		t.Error("matching JOURNAL_STREAM not recognised")
	}
	if StderrIsJournal(os.Stdout) {
		t.Error("stdout taken for stderr")
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	if StderrIsJournal(os.Stderr) {
		t.Error("another stream taken for stderr")
	}
}

func TestParseFacility(t *testing.T) {
	for in, want := range map[string]Facility{"LOG_LOCAL1": 17, "local7": 23, "LOG_USER": 1, "daemon": 3, " Log_Local0 ": 16} {
		if f, err := ParseFacility(in); err != nil || f != want {
			t.Errorf("%q: %v %v, want %v", in, f, err, want)
		}
	}
	if _, err := ParseFacility("LOG_LOCAL9"); err == nil {
		t.Error("LOG_LOCAL9 accepted")
	}
	if Local(3).String() != "local3" {
		t.Error(Local(3).String())
	}
}

func closeLogging(l *Logging) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.Close(ctx)
}
