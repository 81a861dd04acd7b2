package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/internal/logging"
	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// Log offloading: with [DEFAULT] use_syslog (the controller always
// renders it, with syslog_log_facility = LOG_LOCAL<administrative
// facility>) the long-running commands (serve, prometheus-proxy) send
// their records to the local syslog, where the controller's
// 10-rsyslog.conf forwards local<admin>.* to the operator's log servers.
// The facility is syslog_log_facility when set, else
// local<administrative_log_facility>; both, and use_syslog, follow PUT
// /1.0/config without a restart.

// syslogSettings returns whether records go to syslog and with which
// facility.
func syslogSettings(c *config.Config) (bool, logging.Facility) {
	f := logging.Local(c.AdministrativeLogFacility)
	if c.SyslogLogFacility != "" {
		if parsed, err := logging.ParseFacility(c.SyslogLogFacility); err == nil {
			f = parsed
		}
	}
	return c.UseSyslog, f
}

// syslogStatusFile is where a program's delivery state is kept for
// "amphora-agent status".
func syslogStatusFile(c *config.Config, program string) string {
	return filepath.Join(c.BasePath, program+".syslog.json")
}

// startLogging returns the logging of a long-running command, at the
// configured level and syslog settings; Close it at exit.
func startLogging(g *globals, c *config.Config, program string) *logging.Logging {
	level := slog.LevelInfo
	if c.Debug {
		level = slog.LevelDebug
	}
	on, f := syslogSettings(c)
	return logging.New(logging.Options{
		Stderr:     g.stderr,
		Level:      level,
		Tag:        "amphora-agent",
		Socket:     c.SyslogSocket,
		StatusFile: syslogStatusFile(c, program),
		Syslog:     on,
		Facility:   f,
	})
}

// closeLogging delivers what is still queued, waiting at most 2 s.
func closeLogging(l *logging.Logging) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.Close(ctx)
}

// followSyslogSettings applies the syslog settings of every
// configuration change until ctx ends.
func followSyslogSettings(ctx context.Context, store *config.Store, l *logging.Logging) {
	for {
		ch := store.Changed()
		l.Configure(syslogSettings(store.Current()))
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// printSyslog is the status section of log offloading: the settings and
// what the running agent and proxy report of their delivery.
func printSyslog(w io.Writer, c *config.Config) {
	on, f := syslogSettings(c)
	if !on {
		fmt.Fprintln(w, "off (use_syslog = False): records go to stderr / the journal only")
		return
	}
	fmt.Fprintf(w, "on: facility %s, socket %s\n", f, c.SyslogSocket)
	for _, program := range []string{"amphora-agent", "amphora-prometheus-proxy"} {
		st, err := logging.ReadStatus(syslogStatusFile(c, program))
		if err != nil {
			if program == "amphora-agent" {
				fmt.Fprintf(w, "  %s: no delivery report (%v)\n", program, err)
			}
			continue
		}
		state := "delivering"
		switch {
		case !procfs.Alive(st.PID):
			state = "not running (last report)"
		case !st.Enabled:
			state = "off"
		case !st.Connected && !st.DownSince.IsZero():
			state = fmt.Sprintf("FAILING since %s (%s)", st.DownSince.Format(time.RFC3339), st.LastError)
		case !st.Connected:
			state = "not connected yet"
		}
		fmt.Fprintf(w, "  %s (pid %d): %s; %d delivered, %d dropped (%d since the last outage), %d queued, as of %s\n",
			program, st.PID, state, st.Delivered, st.Dropped, st.DroppedInOutage, st.Queued, st.Updated.Format(time.RFC3339))
	}
}
