package haproxy

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/execx"
)

// PeerName is the haproxy local peer name (-L) for an amphora: the
// base64 of SHA-1(amphora id) with '+' -> '_' and '/' -> '-', a leading
// '-' replaced by 'x', trailing '=' removed. It must equal the peer name
// the controller writes into the config's peers section.
func PeerName(amphoraID string) string {
	sum := sha1.Sum([]byte(amphoraID))
	s := base64.StdEncoding.EncodeToString(sum[:])
	s = strings.NewReplacer("+", "_", "/", "-").Replace(s)
	if strings.HasPrefix(s, "-") {
		s = "x" + s[1:]
	}
	return strings.TrimRight(s, "=")
}

// Version is an haproxy major.minor version.
type Version struct{ Major, Minor int }

func (v Version) Less(major, minor int) bool {
	return v.Major < major || v.Major == major && v.Minor < minor
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

var versionRE = regexp.MustCompile(`version (\d+)\.(\d+)(\.|-dev)`)

// ParseVersion reads the version out of `haproxy -v` output.
func ParseVersion(out []byte) (Version, error) {
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("no version in haproxy -v output %q", firstLine(out))
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return Version{major, minor}, nil
}

// BinaryVersion runs `<cmd> -v`.
func BinaryVersion(ctx context.Context, cmd string) (Version, error) {
	out, err := execx.Run(ctx, cmd, "-v")
	if err != nil {
		return Version{}, err
	}
	return ParseVersion(out)
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Rewrite applies the compatibility rewrites the reference applies to an
// uploaded configuration, precisely: a `group` line is dropped only when
// it is a directive of the global section (old controllers sent one; the
// image provides the group in its own snippet), and for haproxy older
// than 1.6 every line mentioning external-check is dropped. Anything
// else, including "group" inside other lines, is kept byte for byte.
func Rewrite(cfg []byte, v Version) []byte {
	var out bytes.Buffer
	out.Grow(len(cfg))
	_ = RewriteTo(&out, bytes.NewReader(cfg), v) // neither side fails in memory
	return out.Bytes()
}

// Frontend is one listener as the configuration describes it.
type Frontend struct {
	Name string // listener id
	Mode string // HTTP, TCP or TERMINATED_HTTPS
}

// ParsedConfig is what the agent reads back out of an haproxy config.
type ParsedConfig struct {
	StatsSocket string // path of the stats socket ("" when none)
	Frontends   []Frontend
	// BindAddresses are the addresses of the bind lines, for VIP
	// advertisements (IPv6 without brackets), without duplicates.
	BindAddresses []string
}

var sectionKeywords = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"peers": true, "resolvers": true, "userlist": true, "cache": true, "program": true,
	"http-errors": true, "ring": true, "mailers": true,
}

// Parse reads the stats socket, the frontends with their mode, and the
// bind addresses. It never fails: a frontend without a mode line gets the
// defaults section's mode, or TCP (haproxy's own default).
func Parse(cfg []byte) ParsedConfig {
	var p ParsedConfig
	section, name := "", ""
	defaultMode := "TCP"
	type fe struct {
		name, mode string
		tls        bool
	}
	var fes []*fe
	var cur *fe
	seen := map[string]bool{}
	for _, raw := range strings.Split(string(cfg), "\n") {
		f := strings.Fields(raw)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		indented := raw[0] == ' ' || raw[0] == '\t'
		if !indented && sectionKeywords[f[0]] {
			section, name, cur = f[0], "", nil
			if len(f) > 1 {
				name = f[1]
			}
			if section == "frontend" || section == "listen" {
				cur = &fe{name: name}
				fes = append(fes, cur)
			}
			continue
		}
		switch {
		case section == "global" && len(f) >= 3 && f[0] == "stats" && f[1] == "socket":
			p.StatsSocket = f[2]
		case section == "defaults" && f[0] == "mode" && len(f) > 1:
			defaultMode = strings.ToUpper(f[1])
		case cur != nil && f[0] == "mode" && len(f) > 1 && cur.mode == "":
			cur.mode = strings.ToUpper(f[1])
		case cur != nil && f[0] == "bind" && len(f) > 1:
			for i := 2; i+1 < len(f); i++ {
				if f[i] == "ssl" && f[i+1] == "crt-list" {
					cur.tls = true
				}
				if f[i] == "crt-list" {
					cur.tls = cur.tls || contains(f[2:], "ssl")
				}
			}
			for _, a := range bindAddresses(raw) {
				if !seen[a] {
					seen[a] = true
					p.BindAddresses = append(p.BindAddresses, a)
				}
			}
		}
	}
	for _, e := range fes {
		if e.name == "" || strings.Contains(e.name, "prometheus") {
			continue
		}
		mode := e.mode
		if mode == "" {
			mode = defaultMode
		}
		if e.tls {
			mode = "TERMINATED_HTTPS"
		}
		p.Frontends = append(p.Frontends, Frontend{Name: e.name, Mode: mode})
	}
	return p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bindAddresses extracts the addresses of one bind line the way the
// reference does for its advertisements: tokens split on single spaces;
// a token with ':' and ',' contributes the text before its last ':'
// (trailing commas stripped) and scanning continues; the first token with
// ':' but no ',' contributes likewise and ends the line. Only IP addresses
// are kept (a damaged line yields nothing to advertise).
func bindAddresses(line string) []string {
	t := strings.TrimLeft(line, " \t")
	if !strings.HasPrefix(t, "bind") {
		return nil
	}
	var out []string
	for _, tok := range strings.Split(t, " ") {
		if !strings.Contains(tok, ":") {
			continue
		}
		last := !strings.Contains(tok, ",")
		tok = strings.TrimRight(tok, ",")
		for _, part := range strings.Split(tok, ",") {
			if i := strings.LastIndex(part, ":"); i > 0 {
				addr := strings.Trim(part[:i], "[]")
				if addr != "" && addr != "*" && addr != "::" && addr != "0.0.0.0" && isIP(addr) {
					out = append(out, addr)
				}
			}
		}
		if last {
			break
		}
	}
	return out
}

// isIP reports whether s is an IP address (what can be advertised):
// anything else a damaged bind line yields is left out.
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ValidationError reports that haproxy refused a configuration.
type ValidationError struct {
	Output string // what `haproxy -c` printed
	Err    error
}

func (e *ValidationError) Error() string {
	return "haproxy rejected the configuration: " + strings.TrimSpace(e.Output)
}

func (e *ValidationError) Unwrap() error { return e.Err }

// Check runs `<cmd> -c -L <peer> -f cfg -f userGroup` and returns a
// *ValidationError with haproxy's output when the configuration is refused.
func Check(ctx context.Context, cmd, peer, cfg, userGroup string) error {
	out, err := execx.Run(ctx, cmd, "-c", "-L", peer, "-f", cfg, "-f", userGroup)
	if err != nil {
		var ee *execx.Error
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return &ValidationError{Output: string(out), Err: err}
		}
		return fmt.Errorf("run haproxy check: %w", err)
	}
	return nil
}
