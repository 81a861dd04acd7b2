package haproxy

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func addCaptureSeeds(f *testing.F) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "show_stat*.csv"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no captures in testdata: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(header26 + "l,FRONTEND,,,1,,,2,3,4,,,5,,,,,OPEN,,,,,,,,,,,,,,,0,\n"))
	f.Add([]byte("# pxname,svname,status,weight\n\"p,\"\"x\",\"s\xff\",UP,0\n"))
	f.Add([]byte("#\n"))
	f.Add([]byte("Unknown command\n"))
}

// FuzzParseStatCSV feeds arbitrary socket answers to the parser and the
// derivation: they may fail, never panic, and a successful report obeys
// the filtering and rewrite rules.
func FuzzParseStatCSV(f *testing.F) {
	addCaptureSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ParseStatCSV(data)
		if err != nil {
			return
		}
		for i := range tab.Rows {
			_ = tab.Value(i, "pxname")
			_ = tab.Value(i, "no such column")
		}
		rep, err := SummarizeStats(tab)
		if err != nil {
			return
		}
		checkReport(t, rep)
	})
}

// FuzzSummarizeStats builds one-row-per-kind tables from fuzzed fields,
// bypassing the CSV layer, to reach every branch of the derivation.
func FuzzSummarizeStats(f *testing.F) {
	f.Add("p:l", "m", "2", "UP", "0", "12")
	f.Add("l", "FRONTEND", "0", "OPEN", "", "")
	f.Add("p:l", "BACKEND", "1", "DOWN", "1", "-3")
	f.Add("prometheus-x", "s", "", "UP 1/3", " 0 ", "9223372036854775808")
	f.Fuzz(func(t *testing.T, px, sv, typ, status, weight, num string) {
		tab := &StatTable{
			Columns: []string{"pxname", "svname", "type", "status", "weight", "bin", "bout", "scur", "stot", "ereq", ""},
		}
		tab.index = map[string]int{}
		for i, c := range tab.Columns {
			if c != "" {
				tab.index[c] = i
			}
		}
		full := []string{px, sv, typ, status, weight, num, num, num, num, num, ""}
		tab.Rows = [][]string{
			full,
			{px, "BACKEND", "1", status},
			full[:len(full)/2],
			{px, sv, typ, status, weight, num, num, num, num, num, "", "extra"},
		}
		rep, err := SummarizeStats(tab)
		if err != nil {
			return
		}
		checkReport(t, rep)
		if strings.Contains(px, "prometheus") && (len(rep.Listeners) != 0 || len(rep.Pools) != 0) {
			t.Fatalf("prometheus proxy %q reported: %+v", px, rep)
		}
	})
}

func checkReport(t *testing.T, rep *StatsReport) {
	t.Helper()
	for k, l := range rep.Listeners {
		if strings.Contains(k, "prometheus") {
			t.Fatalf("listener %q not filtered", k)
		}
		if l.Bin < 0 || l.Bout < 0 || l.Scur < 0 || l.Stot < 0 || l.Ereq < 0 {
			t.Fatalf("negative counter in %+v", l)
		}
	}
	for k, p := range rep.Pools {
		if strings.Contains(k, "prometheus") {
			t.Fatalf("pool %q not filtered", k)
		}
		if p.Members == nil {
			t.Fatalf("pool %q has a nil member map", k)
		}
	}
}

// FuzzParseShowInfo: arbitrary answers never panic, and a parsed uptime
// is never negative.
func FuzzParseShowInfo(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "show_info_2.6.txt")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("Uptime_sec: -1\n"))
	f.Add([]byte("Permission denied\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseShowInfo(data)
		if err != nil {
			return
		}
		if up, err := info.UptimeSec(); err == nil && up < 0 {
			t.Fatalf("negative uptime %d", up)
		}
	})
}

// FuzzUnquotedMatchesCSV checks the fast path against encoding/csv on
// quote-free input.
func FuzzUnquotedMatchesCSV(f *testing.F) {
	addCaptureSeeds(f)
	f.Add([]byte("# pxname,svname\r\na,b\r\n\r\nc\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		text := strings.ToValidUTF8(string(data), "\uFFFD")
		if strings.Contains(text, `"`) {
			return
		}
		fast, ferr := parseUnquotedStat(text)
		slow, serr := parseQuotedStat(text)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("errors differ: fast %v, csv %v", ferr, serr)
		}
		if ferr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("tables differ:\nfast %#v\ncsv  %#v", fast, slow)
		}
	})
}

// FuzzReportMatchesTable checks the streaming parser of Report against
// the table parser: the same report, or both an error, for any answer,
// read in one piece through the pooled buffer and in small pieces through
// a tiny one (every line then crosses a read and a buffer boundary).
func FuzzReportMatchesTable(f *testing.F) {
	addCaptureSeeds(f)
	f.Add([]byte(" \r\n \t# \r\n\r\npxname,svname,status\r\nx,FRONTEND,OPEN\r"))
	f.Add([]byte("# pxname,svname,status,type,weight\nb,s1,UP,2, 0\nb,s2,UP,2,0\nb,BACKEND,UP,1,\n" +
		"f,FRONTEND,OPEN,0\nb,\"s,3\",\"DOWN\nx\",2,1\n"))
	f.Add([]byte("# pxname,svname,\"status\"\nf,FRONTEND,OPEN\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want *StatsReport
		tab, werr := ParseStatCSV(data)
		if werr == nil {
			want, werr = SummarizeStats(tab)
		}
		for _, read := range []struct {
			name string
			r    io.Reader
			size int
		}{
			{"whole", bytes.NewReader(data), 0},
			{"pieces", iotest.HalfReader(iotest.OneByteReader(bytes.NewReader(data))), 3},
		} {
			got, err := readReport(read.r, read.size)
			if (err == nil) != (werr == nil) {
				t.Fatalf("%s: streaming err = %v, table err = %v", read.name, err, werr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: reports differ:\nstreaming %#v\ntable     %#v", read.name, got, want)
			}
		}
	})
}
