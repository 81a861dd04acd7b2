package logging

import (
	"fmt"
	"strconv"
	"strings"
)

// Facility is a syslog facility code (RFC 3164: 0 kern ... 16-23 local0-7).
type Facility int

// Facilities the agent uses.
const (
	User   Facility = 1
	Daemon Facility = 3
	Local0 Facility = 16
)

// Local returns local<n> (n 0-7).
func Local(n int) Facility { return Local0 + Facility(n) }

var facilityNames = []string{
	"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
	"uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
}

// String is the facility's rsyslog name (local1).
func (f Facility) String() string {
	if f >= 0 && int(f) < len(facilityNames) {
		return facilityNames[f]
	}
	return strconv.Itoa(int(f))
}

// ParseFacility reads a facility the way oslo.log's syslog_log_facility
// accepts it: a syslog module constant (LOG_LOCAL1, LOG_USER) or a
// handler name (local1, user, daemon), in any case.
func ParseFacility(s string) (Facility, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "log_")
	for i, n := range facilityNames {
		if name == n {
			return Facility(i), nil
		}
	}
	switch name {
	case "auth2", "authpriv": // LOG_AUTHPRIV
		return 10, nil
	}
	return 0, fmt.Errorf("%q is not a syslog facility (LOG_LOCAL0..LOG_LOCAL7, LOG_USER, LOG_DAEMON...)", s)
}
