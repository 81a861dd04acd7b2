package execx

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestRunReportsArgvOutputAndStatus(t *testing.T) {
	out, err := Run(context.Background(), "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
	var e *Error
	if !errors.As(err, &e) || e.ExitCode() != 3 {
		t.Fatalf("err %v", err)
	}
	if string(out) != "out\nerr\n" || !strings.Contains(err.Error(), "/bin/sh -c") || !strings.Contains(err.Error(), "out\nerr") {
		t.Fatalf("out %q err %v", out, err)
	}
	if _, err := Run(context.Background(), "/nonexistent/x"); !errors.As(err, &e) || e.ExitCode() != -1 {
		t.Fatalf("missing binary: %v", err)
	}
}

func TestRunEnvironmentAndCancel(t *testing.T) {
	out, err := Run(context.Background(), "/usr/bin/env")
	if err != nil || !strings.Contains(string(out), "LC_ALL=C") {
		t.Fatalf("env %q %v", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Run(ctx, "/bin/sleep", "10")
	if err == nil || time.Since(start) > 8*time.Second {
		t.Fatalf("not cancelled: %v after %v", err, time.Since(start))
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want the exit error of the killed process: %v", err)
	}
}
