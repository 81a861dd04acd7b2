package vm

import (
	"bytes"
	"fmt"
	"io"
)

// cpioEntry is one file of a "newc" cpio archive, the format the Linux
// kernel unpacks an initramfs from.
type cpioEntry struct {
	Name  string // path without leading slash
	Mode  uint32 // file type and permission bits (syscall.S_IF* | perm)
	Data  []byte // regular files only
	Major uint32 // device nodes only
	Minor uint32
}

const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioChr  = 0o020000
	cpioTail = "TRAILER!!!"
)

// writeCPIO writes entries as a newc archive (magic 070701, every header
// and file padded to 4 bytes), followed by the trailer.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	var buf bytes.Buffer
	ino := uint32(1)
	pad := func() {
		for buf.Len()%4 != 0 {
			buf.WriteByte(0)
		}
	}
	add := func(e cpioEntry) {
		name := e.Name + "\x00"
		nlink := uint32(1)
		if e.Mode&0o170000 == cpioDir {
			nlink = 2
		}
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(name), 0)
		buf.WriteString(name)
		pad()
		buf.Write(e.Data)
		pad()
		ino++
	}
	for _, e := range entries {
		add(e)
	}
	add(cpioEntry{Name: cpioTail})
	_, err := w.Write(buf.Bytes())
	return err
}
