package promproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// The two gauges the proxy adds in front of haproxy's series, with the
// reference's names, HELP texts and formulas (it uses psutil; we read
// the same kernel files):
//
//   - octavia_loadbalancer_cpu: the 1-minute load average divided by the
//     number of online CPUs, in percent;
//   - octavia_loadbalancer_memory: (MemTotal - MemAvailable) / MemTotal,
//     in percent.
//
// Both with one decimal.

// sysStat reads the kernel's figures under root ("/" in production).
type sysStat struct{ root string }

func (s sysStat) path(p string) string { return filepath.Join(s.root, p) }

// cpuPercent is the 1-minute load average per online CPU, in percent.
func (s sysStat) cpuPercent() (float64, error) {
	data, err := os.ReadFile(s.path("proc/loadavg"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", s.path("proc/loadavg"))
	}
	load, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.path("proc/loadavg"), err)
	}
	return load / float64(s.onlineCPUs()) * 100, nil
}

// onlineCPUs counts the CPUs in /sys/devices/system/cpu/online ("0-3,6"),
// what os.cpu_count() reports; the CPUs this process may run on when
// that cannot be read.
func (s sysStat) onlineCPUs() int {
	data, err := os.ReadFile(s.path("sys/devices/system/cpu/online"))
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(data)), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || b < a {
			return runtime.NumCPU()
		}
		n += b - a + 1
	}
	if n == 0 {
		return runtime.NumCPU()
	}
	return n
}

// memPercent is the share of memory in use: total minus what the kernel
// estimates as available (MemAvailable; free + buffers + cache on
// kernels without it).
func (s sysStat) memPercent() (float64, error) {
	f, err := os.Open(s.path("proc/meminfo"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	vals := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(string(fields[0]), 64); err == nil {
			vals[string(name)] = v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	total := vals["MemTotal"]
	if total <= 0 {
		return 0, fmt.Errorf("%s: no MemTotal", s.path("proc/meminfo"))
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		avail = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return (total - avail) / total * 100, nil
}

// oneDecimal formats v like Python's "{:.1f}".
func oneDecimal(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// appendGauges appends the two gauges; one whose figure cannot be read
// is left out (and its error returned) rather than failing the scrape.
func (s sysStat) appendGauges(dst []byte) ([]byte, error) {
	var errs []error
	if cpu, err := s.cpuPercent(); err == nil {
		dst = append(dst, "# HELP octavia_loadbalancer_cpu Load balancer CPU utilization (percentage).\n"+
			"# TYPE octavia_loadbalancer_cpu gauge\n"+
			"octavia_loadbalancer_cpu "...)
		dst = append(dst, oneDecimal(cpu)...)
		dst = append(dst, '\n')
	} else {
		errs = append(errs, err)
	}
	if mem, err := s.memPercent(); err == nil {
		dst = append(dst, "# HELP octavia_loadbalancer_memory Load balancer memory utilization (percentage).\n"+
			"# TYPE octavia_loadbalancer_memory gauge\n"+
			"octavia_loadbalancer_memory "...)
		dst = append(dst, oneDecimal(mem)...)
		dst = append(dst, '\n')
	} else {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return dst, fmt.Errorf("load balancer gauges: %v", errs)
	}
	return dst, nil
}
