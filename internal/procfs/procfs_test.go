package procfs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParsePID(t *testing.T) {
	for in, want := range map[string]int{"42\n": 42, " 7 \nx": 7, "": 0, "x\n1": 0, "-3": 0, "0\n": 0} {
		if got, _ := ParsePID([]byte(in)); got != want {
			t.Errorf("ParsePID(%q) = %d, want %d", in, got, want)
		}
	}
	if _, line := ParsePID([]byte("abc\n12")); line != "abc" {
		t.Errorf("line = %q", line)
	}
	path := filepath.Join(t.TempDir(), "p.pid")
	if ReadPID(path) != 0 {
		t.Error("missing pid file gave a pid")
	}
	if err := os.WriteFile(path, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := ReadPID(path); got != 1234 {
		t.Errorf("ReadPID = %d", got)
	}
}

func TestParseStat(t *testing.T) {
	st, ok := ParseStat([]byte("77 (a) b) c) Z 1 77 77 0 -1"))
	if !ok || st.Comm != "a) b) c" || st.State != 'Z' || st.PPID != 1 || st.PGID != 77 || !st.Gone() {
		t.Fatalf("ParseStat = %+v, %v", st, ok)
	}
	for _, bad := range []string{"", "77 a S", "77 (a)", "77 )a( S"} {
		if _, ok := ParseStat([]byte(bad)); ok {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
}

func TestOwnProcess(t *testing.T) {
	pid := os.Getpid()
	if !Alive(pid) || Alive(0) || Alive(-1) {
		t.Fatal("Alive is wrong about this process or about pid 0/-1")
	}
	st, err := ReadStat(pid)
	if err != nil || st.PPID != os.Getppid() || st.Gone() {
		t.Fatalf("ReadStat = %+v, %v", st, err)
	}
	argv, err := Cmdline(pid)
	if err != nil || !slices.Equal(argv, os.Args) {
		t.Fatalf("Cmdline = %q, %v; want %q", argv, err, os.Args)
	}
}
