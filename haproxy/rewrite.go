package haproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// maxLineHead is how much of a line the rewrite looks at. A longer line
// is copied (or dropped) whole on the strength of its first maxLineHead
// bytes, so memory stays fixed whatever the input.
const maxLineHead = 64 << 10

// RewriteTo is Rewrite streaming from r to w: the uploaded configuration
// is never held in memory as a whole.
func RewriteTo(w io.Writer, r io.Reader, v Version) error {
	br := bufio.NewReaderSize(r, maxLineHead)
	bw := bufio.NewWriterSize(w, 64<<10)
	section := ""
	oldHAProxy := v.Less(1, 6)
	for {
		line, err := br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !long && !errors.Is(err, io.EOF) {
			return err
		}
		keep := true
		if fields := bytes.Fields(line); len(fields) > 0 {
			first := string(fields[0])
			trimmed := bytes.TrimLeft(line, " \t")
			if len(trimmed) == len(line) && first[0] != '#' {
				// an unindented keyword starts a section
				section = first
			}
			if section == "global" && first == "group" && len(trimmed) < len(line) {
				keep = false
			}
			if oldHAProxy && bytes.Contains(line, []byte("external-check")) {
				keep = false
			}
		}
		if keep {
			if _, werr := bw.Write(line); werr != nil {
				return werr
			}
		}
		// The rest of an over-long line shares the fate of its head.
		for long {
			line, err = br.ReadSlice('\n')
			long = errors.Is(err, bufio.ErrBufferFull)
			if err != nil && !long && !errors.Is(err, io.EOF) {
				return err
			}
			if keep {
				if _, werr := bw.Write(line); werr != nil {
					return werr
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return bw.Flush()
		}
	}
}
