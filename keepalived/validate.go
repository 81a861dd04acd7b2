package keepalived

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/internal/execx"
)

// Validate runs `keepalived -t -f path` and reports a *ValidationError
// when the configuration must not be installed.
//
// keepalived 2.2.7's exit status cannot make that decision on its own: it
// is 5 or 6 for any diagnostic, including the warnings and the script
// security notice every configuration of the controller produces (the
// template runs a check script without enable_script_security). So the
// diagnostics decide: the configuration is refused when keepalived
// printed anything but the tolerated ones (Tolerated). Missing
// interfaces are tolerated: the check runs in the data-plane namespace
// when it exists, but the controller may upload before the VIP NIC is
// plugged.
func (m *Manager) Validate(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	argv := []string{m.opts.Cmd, "-t", "-f", path}
	ns := m.opts.Namespace
	if namespaceExists(ns) {
		argv = append([]string{m.opts.IPCmd, "netns", "exec", ns}, argv...)
	}
	out, err := execx.Run(ctx, argv...)
	if err != nil && ctx.Err() != nil {
		return err
	}
	var xe *execx.Error
	if errors.As(err, &xe) && xe.ExitCode() == 255 && len(argv) > 4 {
		// ip could not enter the namespace (keepalived exits 0-7): check
		// the syntax here rather than report ip's complaint as the
		// configuration's
		m.log.Warn("cannot run the keepalived check in the data-plane namespace", "ns", ns, "err", err)
		out, err = execx.Run(ctx, argv[4:]...)
		if err != nil && ctx.Err() != nil {
			return err
		}
	}
	return verdict(m.log, "keepalived configuration accepted with warnings", path, out, err, Classify)
}

// verdict decides on the output of `keepalived -t -f path`, which ended
// with err: nil when classify finds only tolerated diagnostics (logged
// at debug level with msg), a *ValidationError when it finds others, err
// itself when keepalived could not run at all.
func verdict(log *slog.Logger, msg, path string, out []byte, err error, classify func([]byte) (fatal, tol []string)) error {
	var xe *execx.Error
	if err != nil && (!errors.As(err, &xe) || xe.ExitCode() < 0) {
		return err
	}
	// "(<path>: Line 12) ..." -> "(Line 12) ...": the lines are about
	// the uploaded text, not about where it was staged.
	out = bytes.ReplaceAll(out, []byte("("+path+": "), []byte("("))
	fatal, tolerated := classify(out)
	if len(fatal) == 0 {
		if len(tolerated) > 0 {
			log.Debug(msg, "warnings", strings.Join(tolerated, "; "))
		}
		return nil
	}
	return &ValidationError{Output: strings.Join(append(fatal, tolerated...), "\n"), Err: err}
}

// namespaceExists reports whether the named network namespace is mounted
// (where `ip netns exec` looks for it).
func namespaceExists(name string) bool {
	if name == "" || strings.ContainsRune(name, '/') {
		return false
	}
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// linePrefix is keepalived's "(file: Line 12) " or "(Line 12) " prefix.
var linePrefix = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\((?:[^()]*: )?Line [0-9]+\) `) })

// tolerated are the diagnostics of keepalived 2.2.7 that do not make a
// configuration unusable. Like the other expressions of the package,
// they are compiled on first use: the agent holds them in its heap only
// once it checks a keepalived configuration.
var tolerated = sync.OnceValue(func() []*regexp.Regexp {
	return []*regexp.Regexp{
		// keepalived's own "this was corrected" notes: "WARNING - interface
		// eth1 ... doesn't exist", "(vrrp) Warning - nopreempt will not work
		// with initial state MASTER - clearing", "WARNING - default user
		// 'keepalived_script' ... does not exist".
		regexp.MustCompile(`(?i)\bwarning\b`),
		regexp.MustCompile(`^Truncating auth_pass to 8 characters`),
		regexp.MustCompile(`^SECURITY VIOLATION - scripts are being executed but script_security not enabled`),
		regexp.MustCompile(`^Non-existent interface specified in configuration`),
	}
})

// Classify splits the output of `keepalived -t` into the diagnostics that
// make the configuration unusable and the tolerated ones, each without
// duplicates (keepalived parses the file once per subsystem), in order.
func Classify(out []byte) (fatal, tol []string) {
	seen := map[string]bool{}
	var lines []string
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || seen[line] {
			continue
		}
		seen[line] = true
		lines = append(lines, line)
	}
	return partition(lines, tolerated())
}

// partition splits diagnostics into those whose message (without the
// line prefix) matches none of res and those matching one, in order.
func partition(lines []string, res []*regexp.Regexp) (other, matched []string) {
	for _, line := range lines {
		msg := linePrefix().ReplaceAllString(line, "")
		if slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(msg) }) {
			matched = append(matched, line)
		} else {
			other = append(other, line)
		}
	}
	return other, matched
}
