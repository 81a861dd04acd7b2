package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// The help text and the manual page say the same things: every command,
// option, helper name, file and exit status is in both.
func TestManualMatchesHelp(t *testing.T) {
	var help, manual, aliasOut, stderr bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &help, &stderr); code != 0 {
		t.Fatalf("help: exit %d: %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"manual"}, &manual, &stderr); code != 0 {
		t.Fatalf("manual: exit %d: %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"manual", "--aliases"}, &aliasOut, &stderr); code != 0 {
		t.Fatalf("manual --aliases: exit %d: %s", code, stderr.String())
	}
	// roff escapes "-" as "\-".
	page := strings.ReplaceAll(manual.String(), `\-`, "-")
	want := []string{"--config-file", "--debug", "-d"}
	for _, c := range commands() {
		want = append(want, c.name)
		args, text := commandHelp(c)
		want = append(want, text)
		if args != "" {
			want = append(want, args)
		}
	}
	for _, f := range files() {
		want = append(want, f.path)
	}
	for _, e := range exitStatuses() {
		want = append(want, e.text)
	}
	for _, w := range want {
		if !strings.Contains(help.String(), w) {
			t.Errorf("help lacks %q", w)
		}
		if !strings.Contains(page, w) {
			t.Errorf("manual page lacks %q", w)
		}
	}
	if got, wantAliases := strings.Fields(aliasOut.String()), aliases(); strings.Join(got, " ") != strings.Join(wantAliases, " ") || len(got) == 0 {
		t.Errorf("manual --aliases: %q, want %q", got, wantAliases)
	}
	for _, a := range aliases() {
		if !strings.Contains(help.String(), a) || !strings.Contains(page, a) {
			t.Errorf("helper name %s missing from the help or the manual", a)
		}
	}
	// "manual" stays out of the help's command list.
	if strings.Contains(help.String(), "  manual ") {
		t.Errorf("help lists the hidden manual command:\n%s", help.String())
	}
	// The page is valid roff: groff reports no warning (when installed).
	if groff, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(manual.String())
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff: %v\n%s", err, out)
		}
	}
}

// The manual page's command entries split "ARGS: description" usage texts
// and leave prose with a colon alone.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct{ usage, args, text string }{
		{"--print: show it", "--print", "show it"},
		{"up|down <name|all>: apply", "up|down <name|all>", "apply"},
		{"<pid file>...: check", "<pid file>...", "check"},
		{"show what the agent sees: configuration, load balancers", "", "show what the agent sees: configuration, load balancers"},
		{"print the agent version", "", "print the agent version"},
	} {
		args, text := commandHelp(command{name: "x", usage: tc.usage})
		if args != tc.args || text != tc.text {
			t.Errorf("commandHelp(%q) = %q, %q; want %q, %q", tc.usage, args, text, tc.args, tc.text)
		}
	}
}
