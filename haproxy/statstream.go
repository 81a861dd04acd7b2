package haproxy

// The streaming reader of "show stat" behind StatsClient.Report. The
// heartbeat asks for it every interval, and on a load balancer of 2,000
// servers the answer is some 650 kB of CSV of which the report needs ten
// short columns; haproxy itself spends several milliseconds producing it.
// So the answer is read in a reused buffer, one line at a time, each row
// is scanned only up to the last column the report needs, and the only
// allocations per row are the member's name and the map entry holding it.
//
// It gives exactly the report SummarizeStats(ParseStatCSV(answer)) gives
// (FuzzReportMatchesTable): same header rules, same UTF-8 repair, and
// when a quote character shows up (haproxy quotes a field holding a comma
// or a quote, such as an agent-check's text) the rest of the answer is
// read with encoding/csv as ParseStatCSV does.

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The columns a report reads, in statRow order.
const (
	colPx = iota
	colSv
	colType
	colStatus
	colWeight
	colBin
	colBout
	colScur
	colStot
	colEreq
	numStatColumns
)

var statColumnNames = [numStatColumns]string{"pxname", "svname", "type", "status", "weight", "bin", "bout", "scur", "stot", "ereq"}

// statColumns are the positions of the report's columns in the table, -1
// for an absent one.
type statColumns [numStatColumns]int

// statRow holds the report's fields of one row; an absent field is empty.
type statRow [numStatColumns][]byte

// Row kinds of the "type" column.
const (
	rowFrontend = "0"
	rowBackend  = "1"
	rowServer   = "2"
	rowSocket   = "3"
)

// statBufSize is the reused read buffer of Report: several of haproxy's
// 16 kB answer chunks per read, and any row (a row longer than the buffer
// grows it).
const statBufSize = 64 << 10

var statBufs = sync.Pool{New: func() any { b := make([]byte, statBufSize); return &b }}

// readReport reads a "show stat" answer from r and summarizes it. bufSize
// is the initial buffer size (0: statBufSize; the tests use tiny ones to
// cross every boundary).
func readReport(r io.Reader, bufSize int) (*StatsReport, error) {
	lr := lineReader{r: r}
	if bufSize <= 0 {
		p := statBufs.Get().(*[]byte)
		lr.buf = *p
		defer func() {
			if cap(lr.buf) <= 4*statBufSize {
				*p = lr.buf[:cap(lr.buf)]
			}
			statBufs.Put(p)
		}()
	} else {
		lr.buf = make([]byte, bufSize)
	}

	// The header: leading blank space is skipped, then "#", then spaces.
	var first []byte
	for {
		line, err := lr.next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no stat header: %q", ErrStatsOutput, "")
		}
		if err != nil {
			return nil, err
		}
		t := bytes.TrimLeft(line, " \t\r")
		if len(t) == 0 {
			continue
		}
		if t[0] != '#' {
			return nil, fmt.Errorf("%w: no stat header: %q", ErrStatsOutput, snippet(t))
		}
		first = bytes.TrimLeft(t[1:], " ")
		break
	}

	var (
		s      *summarizer
		cols   statColumns
		slots  []int8 // column position -> statRow index, -1: not needed
		row    statRow
		line   = first
		err    error
		header = true
	)
	for {
		if bytes.IndexByte(line, '"') >= 0 {
			// Quoted fields from here on: this line and the rest go
			// through encoding/csv, as ParseStatCSV reads them.
			return readQuoted(&lr, line, s, cols)
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		switch {
		case len(line) == 0:
		case header:
			header = false
			if cols, err = headerColumns(strings.Split(string(line), ",")); err != nil {
				return nil, err
			}
			slots = columnSlots(cols)
			s = newSummarizer()
		default:
			splitRow(line, slots, &row)
			if err := s.add(&row); err != nil {
				return nil, err
			}
		}
		line, err = lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if header {
		return nil, fmt.Errorf("%w: stat header: empty", ErrStatsOutput)
	}
	return s.finish(), nil
}

// headerColumns finds the report's columns in a header (names trimmed of
// spaces, the first of duplicates counts, as newStatTable indexes them).
func headerColumns(names []string) (statColumns, error) {
	var cols statColumns
	for i := range cols {
		cols[i] = -1
	}
	for i, name := range names {
		name = strings.TrimSpace(name)
		for j, want := range statColumnNames {
			if name == want && cols[j] < 0 {
				cols[j] = i
			}
		}
	}
	for _, c := range []int{colPx, colSv} {
		if cols[c] < 0 {
			return cols, fmt.Errorf("%w: stat header has no %q column", ErrStatsOutput, statColumnNames[c])
		}
	}
	if cols[colStatus] < 0 {
		return cols, fmt.Errorf("%w: stat header has no %q column", ErrStatsOutput, "status")
	}
	return cols, nil
}

// columnSlots maps the column positions up to the last needed one to the
// statRow index they fill.
func columnSlots(cols statColumns) []int8 {
	last := -1
	for _, c := range cols {
		last = max(last, c)
	}
	slots := make([]int8, last+1)
	for i := range slots {
		slots[i] = -1
	}
	for j, c := range cols {
		if c >= 0 {
			slots[c] = int8(j)
		}
	}
	return slots
}

// splitRow fills row with the needed fields of a quote-free line,
// scanning no further than the last of them. The commas are found eight
// bytes at a time: rows have some thirty short fields before the last
// needed one, where a search per field costs more than the bytes.
func splitRow(line []byte, slots []int8, row *statRow) {
	*row = statRow{}
	pos, start := 0, 0
	field := func(end int) bool { // the field ending at end; true when done
		if j := slots[pos]; j >= 0 {
			row[j] = line[start:end]
		}
		pos++
		start = end + 1
		return pos == len(slots)
	}
	const (
		lows   = 0x7f7f7f7f7f7f7f7f
		commas = ',' * 0x0101010101010101
	)
	i := 0
	for ; i+8 <= len(line); i += 8 {
		x := binary.LittleEndian.Uint64(line[i:]) ^ commas // comma bytes are now 0
		// 0x80 in exactly the zero bytes of x.
		m := ^((x&lows + lows) | x | lows)
		for ; m != 0; m &= m - 1 {
			if field(i + bits.TrailingZeros64(m)/8) {
				return
			}
		}
	}
	for ; i < len(line); i++ {
		if line[i] == ',' && field(i) {
			return
		}
	}
	if j := slots[pos]; j >= 0 {
		row[j] = line[start:]
	}
}

// readQuoted reads the rest of the answer, starting at line (the first
// one holding a quote), with encoding/csv. s is nil when the header is
// still to come, else it holds the rows so far and cols the header's
// columns.
func readQuoted(lr *lineReader, line []byte, s *summarizer, cols statColumns) (*StatsReport, error) {
	rest, err := lr.rest(line)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(strings.NewReader(strings.ToValidUTF8(string(rest), "\uFFFD")))
	r.FieldsPerRecord = -1 // rows may be shorter or longer than the header
	r.LazyQuotes = true
	if s == nil {
		names, err := r.Read()
		if err != nil {
			return nil, fmt.Errorf("%w: stat header: %w", ErrStatsOutput, err)
		}
		if cols, err = headerColumns(names); err != nil {
			return nil, err
		}
		s = newSummarizer()
	}
	var row statRow
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: stat row: %w", ErrStatsOutput, err)
		}
		for i, c := range cols {
			row[i] = []byte(field(rec, c))
		}
		if err := s.add(&row); err != nil {
			return nil, err
		}
	}
	return s.finish(), nil
}

// lineReader splits a reader into lines in one buffer, growing it only
// for a line longer than the buffer.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int  // unread bytes
	scanned    int  // bytes after start known to hold no newline
	eof        bool // r said io.EOF
	cut        bool // the last line returned ended with a newline
}

// next returns the next line without its newline, valid until the next
// call; io.EOF after the last one. A last line without a newline counts.
func (l *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.start+l.scanned:l.end], '\n'); i >= 0 {
			line := l.buf[l.start : l.start+l.scanned+i]
			l.start += l.scanned + i + 1
			l.scanned, l.cut = 0, true
			return line, nil
		}
		l.scanned = l.end - l.start
		if l.eof {
			if l.start == l.end {
				return nil, io.EOF
			}
			line := l.buf[l.start:l.end]
			l.start, l.scanned, l.cut = l.end, 0, false
			return line, nil
		}
		if l.start > 0 {
			l.end = copy(l.buf, l.buf[l.start:l.end])
			l.start = 0
		}
		if l.end == len(l.buf) {
			l.buf = append(l.buf, make([]byte, len(l.buf))...)
		}
		n, err := l.r.Read(l.buf[l.end:])
		l.end += n
		if err == io.EOF {
			l.eof = true
		} else if err != nil {
			return nil, err
		}
	}
}

// rest returns line (the last one next returned) with its newline, and
// everything not read yet.
func (l *lineReader) rest(line []byte) ([]byte, error) {
	out := make([]byte, 0, len(line)+1+l.end-l.start)
	out = append(out, line...)
	if l.cut {
		out = append(out, '\n')
	}
	out = append(out, l.buf[l.start:l.end]...)
	l.start = l.end
	if l.eof {
		return out, nil
	}
	var b bytes.Buffer
	b.Write(out)
	if _, err := b.ReadFrom(l.r); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// summarizer turns rows into a StatsReport (the rules are SummarizeStats').
type summarizer struct {
	rep     *StatsReport
	members map[string]map[string]string // by pool (pxname)
	n       int                          // rows seen

	// The server rows of one pool come one after the other: they are
	// gathered here and put in a map of the right size when the pool's
	// rows end (no map growing row by row).
	runPx []byte
	run   []member
}

type member struct{ name, status string }

func newSummarizer() *summarizer {
	return &summarizer{
		rep:     &StatsReport{Listeners: map[string]ListenerStats{}, Pools: map[string]PoolStatus{}},
		members: map[string]map[string]string{},
	}
}

var prometheus = []byte("prometheus")

// add takes one data row.
func (s *summarizer) add(f *statRow) error {
	s.n++
	px, sv := f[colPx], f[colSv]
	if bytes.Contains(px, prometheus) {
		return nil
	}
	kind := string(f[colType])
	switch kind {
	case rowFrontend, rowBackend, rowServer, rowSocket:
	default:
		switch string(sv) {
		case "FRONTEND":
			kind = rowFrontend
		case "BACKEND":
			kind = rowBackend
		default:
			kind = rowServer
		}
	}
	switch kind {
	case rowFrontend:
		l := ListenerStats{Status: statusString(f[colStatus])}
		for _, c := range []struct {
			dst *int64
			col int
		}{{&l.Bin, colBin}, {&l.Bout, colBout}, {&l.Scur, colScur}, {&l.Stot, colStot}, {&l.Ereq, colEreq}} {
			v, err := counterBytes(f[c.col])
			if err != nil {
				return fmt.Errorf("%w: row %d (%s/%s) column %s: %w", ErrStatsOutput, s.n, text(px), text(sv), statColumnNames[c.col], err)
			}
			*c.dst = v
		}
		s.rep.Listeners[text(px)] = l
	case rowBackend:
		s.rep.Pools[text(px)] = PoolStatus{Status: statusString(f[colStatus])}
	case rowServer:
		status := statusString(f[colStatus])
		if status == StatusUp && string(bytes.TrimSpace(f[colWeight])) == "0" {
			status = StatusDrain
		}
		if len(s.run) > 0 && !bytes.Equal(px, s.runPx) {
			s.flush()
		}
		if len(s.run) == 0 {
			s.runPx = append(s.runPx[:0], px...)
		}
		s.run = append(s.run, member{text(sv), status})
	}
	return nil
}

// flush stores the gathered server rows of one pool.
func (s *summarizer) flush() {
	if len(s.run) == 0 {
		return
	}
	name := text(s.runPx)
	m := s.members[name]
	if m == nil { // else the pool's rows came in more than one run
		m = make(map[string]string, len(s.run))
		s.members[name] = m
	}
	for _, r := range s.run {
		m[r.name] = r.status
	}
	clear(s.run)
	s.run = s.run[:0]
}

// finish attaches the members to their pools.
func (s *summarizer) finish() *StatsReport {
	s.flush()
	for px, p := range s.rep.Pools {
		p.Members = s.members[px]
		if p.Members == nil {
			p.Members = map[string]string{}
		}
		s.rep.Pools[px] = p
	}
	return s.rep
}

// text is a field as a string, invalid UTF-8 replaced as ParseStatCSV
// does.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// statusString is text for a status, without an allocation for the ones
// haproxy repeats on every row.
func statusString(b []byte) string {
	switch string(b) {
	case "UP":
		return "UP"
	case "DOWN":
		return "DOWN"
	case "no check":
		return "no check"
	case "MAINT":
		return "MAINT"
	case "DRAIN":
		return "DRAIN"
	case "NOLB":
		return "NOLB"
	case "OPEN":
		return "OPEN"
	case "FULL":
		return "FULL"
	case "STOP":
		return "STOP"
	}
	return text(b)
}

// counterBytes parses a non-negative counter; an empty field is 0.
func counterBytes(b []byte) (int64, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) <= 18 {
		var v int64
		for _, c := range b {
			if c < '0' || c > '9' {
				return counter(text(b))
			}
			v = v*10 + int64(c-'0')
		}
		return v, nil
	}
	return counter(text(b))
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
