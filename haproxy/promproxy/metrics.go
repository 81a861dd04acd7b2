package promproxy

import (
	"strings"
	"sync"
)

// The metric table: which of haproxy's exporter series a tenant sees, and
// under which Octavia name. It is the reference proxy's
// (octavia/cmd/prometheus_proxy.py of the python3-octavia release we
// follow, 11.0.0) to the byte, including its two misspelt entries
// (frontent_ssl_reuse, server_server_idle_connections_*) that no haproxy
// emits; TestTableMatchesReference compares it with the installed
// reference. Order matters: when a line holds several known names, the
// entry listed first wins, as in the reference.

// entry is one recognised metric name, in one of its two spellings: the
// bare name followed by a space (HELP, TYPE and unlabelled samples) or by
// '{' (labelled samples).
type entry struct {
	key, repl []byte   // "haproxy_x " -> "octavia_y " (or with '{')
	help      []byte   // whole replacement HELP line, nil to rename in place
	labels    [][]byte // old, new pairs applied to sample lines before the rename
}

// metricFamily lists the names haproxy exports for one kind of object.
type metricFamily struct {
	from, to string   // name prefixes: haproxy_frontend_ -> octavia_listener_
	labels   []string // label renames, old, new pairs ("proxy=", "listener=")
	// labelled says the family's series carry labels: each name has a
	// '{' entry after its bare one.
	labelled bool
	names    []metricName
}

// metricName is one name of a family. to is the renamed suffix when it
// differs from the haproxy one, or a full name when it starts with
// "octavia_"; help is the replacement HELP text.
type metricName struct {
	suffix, to, help string
}

var families = []metricFamily{
	{from: "haproxy_process_", to: "octavia_loadbalancer_", names: []metricName{
		{suffix: "pool_allocated_bytes", to: "octavia_memory_pool_allocated_bytes", help: "Total amount of memory allocated in the memory pools (in bytes)."},
		{suffix: "pool_used_bytes", to: "octavia_memory_pool_used_bytes", help: "Total amount of memory used in the memory pools (in bytes)."},
		{suffix: "pool_failures_total", to: "octavia_memory_pool_failures_total", help: "Total number of failed memory pool allocations."},
		{suffix: "max_connections"},
		{suffix: "current_connections"},
		{suffix: "connections_total"},
		{suffix: "requests_total"},
		{suffix: "max_ssl_connections"},
		{suffix: "current_ssl_connections", help: "Number of active SSL connections."},
		{suffix: "ssl_connections_total"},
		{suffix: "current_connection_rate"},
		{suffix: "limit_connection_rate"},
		{suffix: "max_connection_rate"},
		{suffix: "current_session_rate"},
		{suffix: "limit_session_rate"},
		{suffix: "max_session_rate"},
		{suffix: "current_ssl_rate"},
		{suffix: "limit_ssl_rate"},
		{suffix: "max_ssl_rate"},
		{suffix: "current_frontend_ssl_key_rate"},
		{suffix: "max_frontend_ssl_key_rate"},
		{suffix: "frontent_ssl_reuse"}, // sic, as the reference
		{suffix: "current_backend_ssl_key_rate"},
		{suffix: "max_backend_ssl_key_rate"},
		{suffix: "ssl_cache_lookups_total"},
		{suffix: "ssl_cache_misses_total"},
		{suffix: "http_comp_bytes_in_total"},
		{suffix: "http_comp_bytes_out_total"},
		{suffix: "limit_http_comp"},
		{suffix: "listeners"},
		{suffix: "dropped_logs_total"},
	}},
	{from: "haproxy_frontend_", to: "octavia_listener_", labelled: true, labels: []string{"proxy=", "listener="}, names: []metricName{
		{suffix: "status", help: "Current status of the listener. 0=OFFLINE, 1=ONLINE, 2=DEGRADED."},
		{suffix: "current_sessions"},
		{suffix: "max_sessions"},
		{suffix: "limit_sessions"},
		{suffix: "sessions_total"},
		{suffix: "limit_session_rate"},
		{suffix: "max_session_rate"},
		{suffix: "connections_rate_max"},
		{suffix: "connections_total"},
		{suffix: "bytes_in_total"},
		{suffix: "bytes_out_total"},
		{suffix: "requests_denied_total"},
		{suffix: "responses_denied_total"},
		{suffix: "request_errors_total"},
		{suffix: "denied_connections_total", help: "Total number of requests denied by connection rules."},
		{suffix: "denied_sessions_total", help: "Total number of requests denied by session rules."},
		{suffix: "failed_header_rewriting_total", help: "Total number of failed header rewriting rules."},
		{suffix: "http_requests_rate_max"},
		{suffix: "http_requests_total"},
		{suffix: "http_responses_total"},
		{suffix: "intercepted_requests_total"},
		{suffix: "http_cache_lookups_total"},
		{suffix: "http_cache_hits_total"},
		{suffix: "http_comp_bytes_in_total"},
		{suffix: "http_comp_bytes_out_total"},
		{suffix: "http_comp_bytes_bypassed_total"},
		{suffix: "http_comp_responses_total"},
	}},
	{from: "haproxy_backend_", to: "octavia_pool_", labelled: true, labels: []string{"proxy=", "pool="}, names: []metricName{
		{suffix: "status", help: "Current status of the pool. 0=OFFLINE, 1=ONLINE."},
		{suffix: "current_sessions"},
		{suffix: "max_sessions"},
		{suffix: "limit_sessions"},
		{suffix: "sessions_total"},
		{suffix: "max_session_rate"},
		{suffix: "last_session_seconds", help: "Number of seconds since last session assigned to a member."},
		{suffix: "current_queue"},
		{suffix: "max_queue"},
		{suffix: "connection_attempts_total"},
		{suffix: "connection_reuses_total"},
		{suffix: "bytes_in_total"},
		{suffix: "bytes_out_total"},
		{suffix: "queue_time_average_seconds"},
		{suffix: "connect_time_average_seconds"},
		{suffix: "response_time_average_seconds"},
		{suffix: "total_time_average_seconds"},
		{suffix: "max_queue_time_seconds"},
		{suffix: "max_connect_time_seconds"},
		{suffix: "max_response_time_seconds", help: "Maximum observed time spent waiting for a member response."},
		{suffix: "max_total_time_seconds"},
		{suffix: "requests_denied_total"},
		{suffix: "responses_denied_total"},
		{suffix: "connection_errors_total"},
		{suffix: "response_errors_total"},
		{suffix: "retry_warnings_total"},
		{suffix: "redispatch_warnings_total"},
		{suffix: "failed_header_rewriting_total"},
		{suffix: "client_aborts_total"},
		{suffix: "server_aborts_total", to: "member_aborts_total", help: "Total number of data transfers aborted by the server."},
		{suffix: "active_servers", to: "active_members", help: "Current number of active members."},
		{suffix: "backup_servers", to: "backup_members", help: "Current number of backup members."},
		{suffix: "check_up_down_total"},
		{suffix: "check_last_change_seconds"},
		{suffix: "downtime_seconds_total", help: "Total downtime (in seconds) for the pool."},
		{suffix: "loadbalanced_total", help: "Total number of times a pool was selected, either for new sessions, or when redispatching."},
		{suffix: "http_requests_total"},
		{suffix: "http_responses_total"},
		{suffix: "http_cache_lookups_total"},
		{suffix: "http_cache_hits_total"},
		{suffix: "http_comp_bytes_in_total"},
		{suffix: "http_comp_bytes_out_total"},
		{suffix: "http_comp_bytes_bypassed_total"},
		{suffix: "http_comp_responses_total"},
	}},
	{from: "haproxy_server_", to: "octavia_member_", labelled: true, labels: []string{"proxy=", "pool=", "server=", "member="}, names: []metricName{
		{suffix: "status", help: "Current status of the member. 0=ERROR, 1=ONLINE, 2=OFFLINE, 3=DRAIN."},
		{suffix: "current_sessions"},
		{suffix: "max_sessions"},
		{suffix: "limit_sessions"},
		{suffix: "sessions_total"},
		{suffix: "max_session_rate"},
		{suffix: "last_session_seconds", help: "Number of seconds since last session assigned to the member."},
		{suffix: "current_queue"},
		{suffix: "max_queue"},
		{suffix: "queue_limit", help: "Configured maxqueue for the member (0 meaning no limit)."},
		{suffix: "bytes_in_total"},
		{suffix: "bytes_out_total"},
		{suffix: "queue_time_average_seconds"},
		{suffix: "connect_time_average_seconds"},
		{suffix: "response_time_average_seconds"},
		{suffix: "total_time_average_seconds"},
		{suffix: "max_queue_time_seconds"},
		{suffix: "max_connect_time_seconds"},
		{suffix: "max_response_time_seconds", help: "Maximum observed time spent waiting for a member response."},
		{suffix: "max_total_time_seconds"},
		{suffix: "connection_attempts_total"},
		{suffix: "connection_reuses_total"},
		{suffix: "responses_denied_total"},
		{suffix: "connection_errors_total"},
		{suffix: "response_errors_total"},
		{suffix: "retry_warnings_total"},
		{suffix: "redispatch_warnings_total"},
		{suffix: "failed_header_rewriting_total"},
		{suffix: "client_aborts_total"},
		{suffix: "server_aborts_total"},
		{suffix: "weight", help: "Member weight."},
		{suffix: "check_failures_total", help: "Total number of failed check (Only counts checks failed when the member is up)."},
		{suffix: "check_up_down_total"},
		{suffix: "downtime_seconds_total", help: "Total downtime (in seconds) for the member."},
		{suffix: "check_last_change_seconds"},
		{suffix: "current_throttle", help: "Current throttle percentage for the member, when slowstart is active, or no value if not in slowstart."},
		{suffix: "loadbalanced_total", help: "Total number of times a member was selected, either for new sessions, or when redispatching."},
		{suffix: "http_responses_total"},
		{suffix: "server_idle_connections_current", to: "idle_connections_current"}, // sic, as the reference
		{suffix: "server_idle_connections_limit", to: "idle_connections_limit"},     // sic, as the reference
	}},
}

// tables returns the flattened, ordered list of entries and its lookup
// by key, built on first use: only the proxy's process translates, not
// the agent that links the package to run it.
var tables = sync.OnceValues(buildTable)

func buildTable() ([]entry, map[string]int) {
	var out []entry
	for _, f := range families {
		for _, n := range f.names {
			from := f.from + n.suffix
			to := f.to + n.suffix
			switch {
			case strings.HasPrefix(n.to, "octavia_"):
				to = n.to
			case n.to != "":
				to = f.to + n.to
			}
			e := entry{key: []byte(from + " "), repl: []byte(to + " ")}
			if n.help != "" {
				e.help = []byte("# HELP " + to + " " + n.help + "\n")
			}
			out = append(out, e)
			if f.labelled {
				var labels [][]byte
				for _, l := range f.labels {
					labels = append(labels, []byte(l))
				}
				out = append(out, entry{key: []byte(from + "{"), repl: []byte(to + "{"), labels: labels})
			}
		}
	}
	idx := make(map[string]int, len(out))
	for i, e := range out {
		if _, dup := idx[string(e.key)]; !dup {
			idx[string(e.key)] = i
		}
	}
	return out, idx
}
