package netns

import (
	"strings"
)

// Traffic are the byte counters of one NIC.
type Traffic struct {
	TX, RX uint64
}

// Traffic returns the byte counters of the eth* links of the data-plane
// namespace (GET /1.0/details "networks"). A missing namespace has none;
// it is never created here (GAPS D1).
func (m *Manager) Traffic() map[string]Traffic {
	out := map[string]Traffic{}
	ns, err := OpenNamespace(m.cfg.Namespace)
	if err != nil {
		return out
	}
	defer ns.Close()
	links, err := retryDump(ns.Handle().LinkList)
	if err != nil {
		return out
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, "eth") && a.Statistics != nil {
			out[a.Name] = Traffic{TX: a.Statistics.TxBytes, RX: a.Statistics.RxBytes}
		}
	}
	return out
}
