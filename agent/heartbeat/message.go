// Package heartbeat builds and sends the amphora's health heartbeat: a
// version 3 status message (listener counters as deltas, pool and member
// statuses) compressed, authenticated with the shared heartbeat key and sent
// over UDP to one Octavia health manager per interval, round robin.
//
// The wire format is that of the reference agent, byte for byte where the
// controller could notice: JSON text as Python's json.dumps writes it,
// zlib, then the lowercase hex HMAC-SHA256 of the compressed bytes.
package heartbeat

import (
	"crypto/sha256"
	"maps"
	"slices"
	"strconv"
)

// Version is the message format version ("ver"): 3 = statistics as deltas.
const Version = 3

// Message is one heartbeat. Marshal it with MarshalJSON (Python json.dumps
// text, keys in the order the reference uses: id, seq, listeners, pools,
// ver; map entries sorted by key so equal messages give equal bytes).
type Message struct {
	ID        string              // amphora id; "" is sent as null (the reference's unset value)
	Seq       uint64              // per process, from 0
	Listeners map[string]Listener // by listener id
	Pools     map[string]Pool     // "<pool id>:<listener id>" (haproxy) or "<pool id>" (LVS)
}

// Listener is the entry of one listener.
type Listener struct {
	Status string // OPEN, FULL, STOP...
	Stats  ListenerStats
}

// ListenerStats are the listener statistics: TX, RX, TotConns and Ereq
// are deltas since the previous heartbeat; Conns is the absolute number of
// current connections.
type ListenerStats struct {
	TX, RX, Conns, TotConns, Ereq int64
}

// Pool is the entry of one pool: "UP" or "DOWN" and the member statuses by
// member id.
type Pool struct {
	Status  string
	Members map[string]string
}

// MarshalJSON renders m as the reference agent does: separators ", " and
// ": ", non-ASCII escaped as \u sequences of 4 hex digits, no trailing newline.
func (m *Message) MarshalJSON() ([]byte, error) { return m.AppendJSON(nil), nil }

// AppendJSON appends the text of MarshalJSON to dst: the sender reuses
// one buffer from heartbeat to heartbeat.
func (m *Message) AppendJSON(b []byte) []byte {
	b = append(b, `{"id": `...)
	if m.ID == "" {
		b = append(b, "null"...)
	} else {
		b = pyString(b, m.ID)
	}
	b = append(b, `, "seq": `...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `, "listeners": {`...)
	for i, id := range slices.Sorted(maps.Keys(m.Listeners)) {
		l := m.Listeners[id]
		if i > 0 {
			b = append(b, ", "...)
		}
		b = pyString(b, id)
		b = append(b, `: {"status": `...)
		b = pyString(b, l.Status)
		b = append(b, `, "stats": {"tx": `...)
		b = strconv.AppendInt(b, l.Stats.TX, 10)
		b = append(b, `, "rx": `...)
		b = strconv.AppendInt(b, l.Stats.RX, 10)
		b = append(b, `, "conns": `...)
		b = strconv.AppendInt(b, l.Stats.Conns, 10)
		b = append(b, `, "totconns": `...)
		b = strconv.AppendInt(b, l.Stats.TotConns, 10)
		b = append(b, `, "ereq": `...)
		b = strconv.AppendInt(b, l.Stats.Ereq, 10)
		b = append(b, "}}"...)
	}
	b = append(b, `}, "pools": {`...)
	var mids []string
	for i, id := range slices.Sorted(maps.Keys(m.Pools)) {
		p := m.Pools[id]
		if i > 0 {
			b = append(b, ", "...)
		}
		b = pyString(b, id)
		b = append(b, `: {"status": `...)
		b = pyString(b, p.Status)
		b = append(b, `, "members": {`...)
		mids = slices.AppendSeq(mids[:0], maps.Keys(p.Members))
		slices.Sort(mids)
		for j, mid := range mids {
			if j > 0 {
				b = append(b, ", "...)
			}
			b = pyString(b, mid)
			b = append(b, ": "...)
			b = pyString(b, p.Members[mid])
		}
		b = append(b, "}}"...)
	}
	b = append(b, `}, "ver": `...)
	b = strconv.AppendInt(b, Version, 10)
	return append(b, '}')
}

// pyString appends s as a JSON string the way Python's json module writes
// it with ensure_ascii (its default): \" \\ \b \f \n \r \t, other
// characters outside printable ASCII as \u + 4 lowercase hex digits
// (surrogate pairs above U+FFFF). Invalid UTF-8 becomes U+FFFD; '/' is not
// escaped. Ids and statuses are plain ASCII: they are copied in one piece.
func pyString(b []byte, s string) []byte {
	b = append(b, '"')
	plain := 0
	for plain < len(s) && s[plain] >= 0x20 && s[plain] <= 0x7e && s[plain] != '"' && s[plain] != '\\' {
		plain++
	}
	b = append(b, s[:plain]...)
	if plain == len(s) {
		return append(b, '"')
	}
	const hexdigits = "0123456789abcdef"
	u4 := func(r rune) {
		b = append(b, '\\', 'u', hexdigits[r>>12&0xf], hexdigits[r>>8&0xf], hexdigits[r>>4&0xf], hexdigits[r&0xf])
	}
	for _, r := range s[plain:] { // invalid bytes arrive as utf8.RuneError
		switch {
		case r == '"':
			b = append(b, `\"`...)
		case r == '\\':
			b = append(b, `\\`...)
		case r == '\b':
			b = append(b, `\b`...)
		case r == '\f':
			b = append(b, `\f`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r >= 0x20 && r <= 0x7e:
			b = append(b, byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 + (r>>10)&0x3ff)
			u4(0xdc00 + r&0x3ff)
		default:
			u4(r)
		}
	}
	return append(b, '"')
}

// HMACHexLen is the length of the authenticator appended to a datagram.
const HMACHexLen = 2 * sha256.Size
