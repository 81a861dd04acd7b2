// Package heartbeat builds and sends the amphora's health heartbeat: a
// version 3 status message (listener counters as deltas, pool and member
// statuses) compressed, authenticated with the shared heartbeat key and sent
// over UDP to one Octavia health manager per interval, round robin.
//
// The wire format is that of the reference agent, byte for byte where the
// controller could notice: JSON text as Python's json.dumps writes it,
// zlib level 9, then the lowercase hex HMAC-SHA256 of the compressed bytes.
package heartbeat

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
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
func (m *Message) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"id": `)
	if m.ID == "" {
		b.WriteString("null")
	} else {
		pyString(&b, m.ID)
	}
	b.WriteString(`, "seq": `)
	b.WriteString(strconv.FormatUint(m.Seq, 10))
	b.WriteString(`, "listeners": {`)
	for i, id := range slices.Sorted(maps.Keys(m.Listeners)) {
		l := m.Listeners[id]
		if i > 0 {
			b.WriteString(", ")
		}
		pyString(&b, id)
		b.WriteString(`: {"status": `)
		pyString(&b, l.Status)
		fmt.Fprintf(&b, `, "stats": {"tx": %d, "rx": %d, "conns": %d, "totconns": %d, "ereq": %d}}`,
			l.Stats.TX, l.Stats.RX, l.Stats.Conns, l.Stats.TotConns, l.Stats.Ereq)
	}
	b.WriteString(`}, "pools": {`)
	for i, id := range slices.Sorted(maps.Keys(m.Pools)) {
		p := m.Pools[id]
		if i > 0 {
			b.WriteString(", ")
		}
		pyString(&b, id)
		b.WriteString(`: {"status": `)
		pyString(&b, p.Status)
		b.WriteString(`, "members": {`)
		for j, mid := range slices.Sorted(maps.Keys(p.Members)) {
			if j > 0 {
				b.WriteString(", ")
			}
			pyString(&b, mid)
			b.WriteString(": ")
			pyString(&b, p.Members[mid])
		}
		b.WriteString("}}")
	}
	b.WriteString(`}, "ver": `)
	b.WriteString(strconv.Itoa(Version))
	b.WriteString("}")
	return b.Bytes(), nil
}

// pyString writes s as a JSON string the way Python's json module does
// with ensure_ascii (its default): \" \\ \b \f \n \r \t, other characters
// outside printable ASCII as \u + 4 lowercase hex digits (surrogate pairs above
// U+FFFF). Invalid UTF-8 becomes U+FFFD; '/' is not escaped.
func pyString(b *bytes.Buffer, s string) {
	const hexdigits = "0123456789abcdef"
	u4 := func(r rune) {
		b.WriteString(`\u`)
		b.WriteByte(hexdigits[r>>12&0xf])
		b.WriteByte(hexdigits[r>>8&0xf])
		b.WriteByte(hexdigits[r>>4&0xf])
		b.WriteByte(hexdigits[r&0xf])
	}
	b.WriteByte('"')
	for _, r := range s { // invalid bytes arrive as utf8.RuneError
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r >= 0x20 && r <= 0x7e:
			b.WriteByte(byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 + (r>>10)&0x3ff)
			u4(0xdc00 + r&0x3ff)
		default:
			u4(r)
		}
	}
	b.WriteByte('"')
}

// HMACHexLen is the length of the authenticator appended to a datagram.
const HMACHexLen = 2 * sha256.Size

// Wrap builds the datagram for a JSON message: zlib (level 9) of the text,
// followed by the lowercase hex HMAC-SHA256 of the compressed bytes under
// key. The controller verifies the HMAC over the bytes it receives, so a
// compressor other than Python's is fine.
func Wrap(jsonText []byte, key string) ([]byte, error) {
	var z bytes.Buffer
	z.Grow(len(jsonText)/4 + 64)
	w := zlibWriters.Get().(*zlib.Writer)
	defer zlibWriters.Put(w)
	w.Reset(&z)
	if _, err := w.Write(jsonText); err != nil {
		return nil, fmt.Errorf("compress heartbeat: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress heartbeat: %w", err)
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(z.Bytes())
	out := make([]byte, z.Len(), z.Len()+HMACHexLen)
	copy(out, z.Bytes())
	return hex.AppendEncode(out, mac.Sum(nil)), nil
}

// zlibWriters keeps level-9 compressors between heartbeats: one costs
// about a megabyte of tables to set up, more than compressing a small
// message.
var zlibWriters = sync.Pool{New: func() any {
	w, err := zlib.NewWriterLevel(io.Discard, zlib.BestCompression)
	if err != nil {
		panic(err) // only for an invalid level
	}
	return w
}}
