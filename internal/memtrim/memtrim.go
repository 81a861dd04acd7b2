// Package memtrim gives back the pages of the agent's own program file
// that start-up touched and steady work does not need.
//
// The agent's executable is mapped from its file: code (r-x) and
// read-only data (r--). Start-up runs the initialisation of some 400
// packages spread over the whole file, and the kernel maps the pages
// around each one it touches (fault-around, 64 kB), so right after start
// three quarters of the file's code and data are mapped into the process
// and counted in its resident set, although most of it never runs again.
// Those pages are clean copies of the file: dropping the mappings
// (MADV_DONTNEED on a private file mapping never written) leaves the
// data in the page cache, where the kernel reclaims it first when memory
// is short, instead of keeping it as mapped executable pages, which it
// protects. A page used later is mapped again from the cache by a minor
// fault.
package memtrim

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/self/smaps with the fields used here.
type mapping struct {
	start, end uintptr
	perms      string
	path       string
	rss, anon  int64 // kB
}

// ReleaseProgramPages drops the read-only mappings of the running
// executable's pages and returns how many kilobytes were resident in
// them. Mappings holding private copies (anonymous pages: relocated
// data of a position-independent build) are left alone: dropping those
// would lose the relocations.
func ReleaseProgramPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	var released int64
	for _, m := range maps {
		if m.path != exe || m.anon != 0 || (m.perms != "r-xp" && m.perms != "r--p") {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); e != 0 {
			return released, fmt.Errorf("madvise %x-%x: %w", m.start, m.end, e)
		}
		released += m.rss
	}
	return released, nil
}

func readSmaps(path string) ([]mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 && !strings.HasSuffix(fields[0], ":") {
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				m := mapping{start: uintptr(start), end: uintptr(end), perms: fields[1]}
				if len(fields) >= 6 {
					m.path = strings.Join(fields[5:], " ")
				}
				out = append(out, m)
				continue
			}
		}
		if len(out) == 0 || len(fields) < 2 {
			continue
		}
		cur := &out[len(out)-1]
		switch fields[0] {
		case "Rss:":
			cur.rss, _ = strconv.ParseInt(fields[1], 10, 64)
		case "Anonymous:":
			cur.anon, _ = strconv.ParseInt(fields[1], 10, 64)
		}
	}
	return out, sc.Err()
}
