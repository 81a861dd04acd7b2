// Package execx runs external programs the way the agent needs them run:
// an argv slice (never a string split on spaces), a context, a fixed
// environment, and errors that carry the command and its output.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Env is the environment every command gets: a fixed PATH and the C
// locale, so output parsing never depends on the caller's environment.
var Env = []string{"LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// Error reports a command that could not run or exited non-zero.
type Error struct {
	Argv   []string
	Output string // combined stdout and stderr, trimmed
	Err    error  // *exec.ExitError, exec.ErrNotFound, context errors...
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Argv, " "), e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns the exit status of a command that ran and failed, or -1.
func (e *Error) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run runs argv and returns its combined output. A non-zero exit, a
// missing binary or a cancelled context give an *Error holding the output.
func Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("execx: empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = Env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), &Error{Argv: argv, Output: strings.TrimSpace(out.String()), Err: err}
	}
	return out.Bytes(), nil
}
