package promproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// internalMarker: a line naming the internal exporter frontend or
// backend (prometheus-exporter-internal-endpoint,
// prometheus-exporter-internal) is never shown to the tenant.
var internalMarker = []byte("prometheus-exporter")

var keyPrefix = []byte("haproxy_") // every table key starts with it

// maxLine bounds one upstream line; haproxy's are well under 1 KiB.
const maxLine = 1 << 20

// translator turns haproxy exporter lines into Octavia ones. Its scratch
// buffers are reused from line to line: the steady state allocates
// nothing.
type translator struct {
	a, b []byte
}

// match returns the table entry a line is translated with: of the keys
// occurring anywhere in the line, the one listed first (the reference
// searches its keys in order for the first one contained in the line).
// Every key is "haproxy_" + name characters + ' ' or '{', and a name
// holds neither, so a key occurs at offset i exactly when the text from i
// up to the first ' ' or '{' is that key.
func match(line []byte) (entry, bool) {
	table, index := tables()
	best := -1
	for off := 0; off < len(line); {
		i := bytes.Index(line[off:], keyPrefix)
		if i < 0 {
			break
		}
		i += off
		end := bytes.IndexAny(line[i+len(keyPrefix):], " {")
		if end < 0 {
			break // no terminator after i: none after a later offset either
		}
		k := i + len(keyPrefix) + end + 1
		if n, ok := index[string(line[i:k])]; ok && (best < 0 || n < best) {
			best = n
		}
		off = i + 1
	}
	if best < 0 {
		return entry{}, false
	}
	return table[best], true
}

var helpWord = []byte("HELP")

// line appends the translation of one upstream line (with its newline,
// if any) to dst; a line the tenant must not see, or that no entry
// matches, adds nothing.
func (t *translator) line(dst, line []byte) []byte {
	if bytes.Contains(line, internalMarker) {
		return dst
	}
	e, ok := match(line)
	if !ok {
		return dst
	}
	if e.help != nil && bytes.Contains(line, helpWord) {
		return append(dst, e.help...)
	}
	cur := line
	if len(e.labels) > 0 && (len(line) == 0 || line[0] != '#') {
		for i := 0; i < len(e.labels); i += 2 {
			t.a = replaceAll(t.a[:0], cur, e.labels[i], e.labels[i+1])
			cur, t.a, t.b = t.a, t.b, t.a
		}
	}
	return replaceAll(dst, cur, e.key, e.repl)
}

// replaceAll appends src to dst with every occurrence of old replaced by
// repl, scanning left to right without overlap (Python's str.replace).
func replaceAll(dst, src, old, repl []byte) []byte {
	for {
		i := bytes.Index(src, old)
		if i < 0 {
			return append(dst, src...)
		}
		dst = append(dst, src[:i]...)
		dst = append(dst, repl...)
		src = src[i+len(old):]
	}
}

// ErrLineTooLong: the exporter sent a line longer than maxLine.
var ErrLineTooLong = errors.New("exporter line too long")

// Translate copies the exporter output read from r to w, line by line,
// translated; it holds one line at a time. The last line is handled
// like the others when it lacks a newline.
func Translate(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	var t translator
	var out, long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line := chunk
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], chunk...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxLine {
				chunk, err = br.ReadSlice('\n')
				long = append(long, chunk...)
			}
			if len(long) > maxLine {
				return fmt.Errorf("%w (over %d bytes)", ErrLineTooLong, maxLine)
			}
			line = long
		}
		if len(line) > 0 {
			out = t.line(out[:0], line)
			if len(out) > 0 {
				if _, werr := w.Write(out); werr != nil {
					return werr
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
