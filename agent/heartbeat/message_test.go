package heartbeat

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// The test vector of HEARTBEAT.md §5.4, produced by Octavia's
// status_message.wrap_envelope.
const (
	vectorKey  = "insecure"
	vectorJSON = `{"id": "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "seq": 0, "listeners": {}, "pools": {}, "ver": 3}`
	vectorHex  = "78da3d8acb0a802010007f45f69ce08ba8fe46dd1504c9d2e822fe7b7bea3633cc808c" +
		"700858694fa8bd91da58275d44925b524a7a1f428c884429c122a0d3cdbb622ab93f74" +
		"52ebec6372b86a2dbfbcd418edfc0036161c2765313038633139666535373438373563" +
		"323938346237623363643931393031656336623565323934613435316666663133636134" +
		"636238656665373730303533"
	vectorMAC = "e108c19fe574875c2984b7b3cd91901ec6b5e294a451fff13ca4cb8efe770053"
)

const pythonBin = "/usr/bin/python3" // Debian's, the one with python3-octavia

func inflate(t testing.TB, pkt []byte) string {
	t.Helper()
	if len(pkt) < HMACHexLen {
		t.Fatalf("datagram of %d bytes", len(pkt))
	}
	r, err := zlib.NewReader(bytes.NewReader(pkt[:len(pkt)-HMACHexLen]))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnvelopeTestVector(t *testing.T) {
	pkt, err := hex.DecodeString(vectorHex)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != 153 {
		t.Fatalf("vector is %d bytes, want 153", len(pkt))
	}
	z, tag := pkt[:len(pkt)-HMACHexLen], string(pkt[len(pkt)-HMACHexLen:])
	if tag != vectorMAC {
		t.Fatalf("vector tag %q", tag)
	}
	// Our HMAC over Octavia's compressed bytes is the vector's tag.
	mac := hmac.New(sha256.New, []byte(vectorKey))
	mac.Write(z)
	if got := hex.EncodeToString(mac.Sum(nil)); got != vectorMAC {
		t.Errorf("HMAC over the vector's zlib bytes = %s, want %s", got, vectorMAC)
	}
	if got := inflate(t, pkt); got != vectorJSON {
		t.Errorf("vector JSON %q", got)
	}
	// Our JSON of the same message is the vector's text, byte for byte.
	msg := &Message{ID: "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", Listeners: map[string]Listener{}, Pools: map[string]Pool{}}
	js, err := msg.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(js) != vectorJSON {
		t.Errorf("MarshalJSON:\n got %s\nwant %s", js, vectorJSON)
	}
	// Our envelope: a zlib stream at the fastest level (header 78 01;
	// level 9, 78 da, when a message would not fit otherwise), our tag
	// over our bytes.
	ours, err := Wrap(js, vectorKey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ours, []byte{0x78, 0x01}) {
		t.Errorf("zlib header % x, want 78 01", ours[:2])
	}
	var e encoder
	best, err := e.seal(js, vectorKey, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(best, []byte{0x78, 0xda}) || inflate(t, best) != vectorJSON {
		t.Errorf("level 9 envelope: header % x, text %q", best[:2], inflate(t, best))
	}
	if got := inflate(t, ours); got != vectorJSON {
		t.Errorf("our envelope inflates to %q", got)
	}
	mac = hmac.New(sha256.New, []byte(vectorKey))
	mac.Write(ours[:len(ours)-HMACHexLen])
	if got := string(ours[len(ours)-HMACHexLen:]); got != hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("our tag %s does not cover our bytes", got)
	}
}

// exampleMessage is the first message of HEARTBEAT.md §3.2.
func exampleMessage() *Message {
	return &Message{
		ID: "6e9fd1a2-1234-4cde-8f00-aabbccddeeff",
		Listeners: map[string]Listener{
			"8a1b2c3d-0000-4000-8000-000000000001": {Status: "OPEN", Stats: ListenerStats{TX: 1538, RX: 164, TotConns: 2}},
		},
		Pools: map[string]Pool{
			"9a1b2c3d-0000-4000-8000-0000000000aa:8a1b2c3d-0000-4000-8000-000000000001": {Status: "UP", Members: map[string]string{
				"aaaaaaaa-0000-4000-8000-000000000006": "no check",
				"aaaaaaaa-0000-4000-8000-000000000005": "DRAIN",
				"aaaaaaaa-0000-4000-8000-000000000004": "MAINT",
				"aaaaaaaa-0000-4000-8000-000000000003": "no check",
				"aaaaaaaa-0000-4000-8000-000000000002": "DOWN",
				"aaaaaaaa-0000-4000-8000-000000000001": "UP",
			}},
		},
	}
}

// exampleJSON is Python's json.dumps of the §3.2 example (generated with
// /usr/bin/python3).
const exampleJSON = `{"id": "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "seq": 0, "listeners": {"8a1b2c3d-0000-4000-8000-000000000001": {"status": "OPEN", "stats": {"tx": 1538, "rx": 164, "conns": 0, "totconns": 2, "ereq": 0}}}, "pools": {"9a1b2c3d-0000-4000-8000-0000000000aa:8a1b2c3d-0000-4000-8000-000000000001": {"status": "UP", "members": {"aaaaaaaa-0000-4000-8000-000000000001": "UP", "aaaaaaaa-0000-4000-8000-000000000002": "DOWN", "aaaaaaaa-0000-4000-8000-000000000003": "no check", "aaaaaaaa-0000-4000-8000-000000000004": "MAINT", "aaaaaaaa-0000-4000-8000-000000000005": "DRAIN", "aaaaaaaa-0000-4000-8000-000000000006": "no check"}}}, "ver": 3}`

func TestMarshalExample(t *testing.T) {
	for range 5 { // map order must not leak into the bytes
		js, err := exampleMessage().MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(js) != exampleJSON {
			t.Fatalf("MarshalJSON:\n got %s\nwant %s", js, exampleJSON)
		}
	}
	var indented bytes.Buffer // what `amphora-agent heartbeat --print` does
	if err := json.Indent(&indented, []byte(exampleJSON), "", "  "); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(indented.String(), "{\n  \"id\": \"6e9fd1a2") {
		t.Errorf("indented: %s", indented.String()[:40])
	}
}

func TestMarshalNullID(t *testing.T) {
	js, _ := (&Message{Seq: 7}).MarshalJSON()
	if want := `{"id": null, "seq": 7, "listeners": {}, "pools": {}, "ver": 3}`; string(js) != want {
		t.Errorf("got %s, want %s", js, want)
	}
}

// TestPythonStringEscaping compares our string encoder with json.dumps of
// Debian's python3 for characters that need care.
func TestPythonStringEscaping(t *testing.T) {
	if _, err := exec.LookPath(pythonBin); err != nil {
		t.Skipf("%s not installed", pythonBin)
	}
	inputs := []string{
		"plain", `quote " and backslash \ and slash /`, "\b\f\n\r\t", "\x00\x01\x1f\x7f",
		"é ünïcode", "€ and 中文", "plain prefix then é", "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "emoji 😀 𝄞", "<html>&amp;", "\u2028\u2029", "\ufeff",
	}
	arg, _ := json.Marshal(inputs) // Go's JSON is valid input for json.loads
	out, err := exec.Command(pythonBin, "-c",
		"import json,sys\nfor s in json.loads(sys.argv[1]): print(json.dumps(s))", string(arg)).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	var got []string
	for _, s := range inputs {
		got = append(got, string(pyString(nil, s)))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("escaping differs from python (-python +ours):\n%s", d)
	}
	if b := pyString(nil, "bad\xff\xfebyte"); string(b) != `"bad\ufffd\ufffdbyte"` {
		t.Errorf("invalid UTF-8: %s", b)
	}
}

func TestOctaviaDecodesOurEnvelope(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	msg := exampleMessage()
	msg.Seq = 42
	msg.Pools["unicode-pool-é"] = Pool{Status: "DOWN", Members: map[string]string{"m\"1": "UP 1/3"}}
	js, _ := msg.MarshalJSON()
	for _, key := range []string{"insecure", "clé-ünïcode", strings.Repeat("k", 200)} {
		pkt, err := Wrap(js, key)
		if err != nil {
			t.Fatal(err)
		}
		d := decodeWithOctavia(t, py, pkt, key)
		if d.Seq != 42 || d.Ver != 3 || d.Pools["unicode-pool-é"].Members[`m"1`] != "UP 1/3" {
			t.Errorf("decoded %+v", d)
		}
		if _, _, err := py.Unwrap(t, pkt, key+"x"); err == nil || !strings.Contains(err.Error(), "InvalidHMACException") {
			t.Errorf("wrong key: err = %v; want InvalidHMACException", err)
		}
	}
	// A flipped bit in the compressed part fails too.
	pkt, _ := Wrap(js, "insecure")
	pkt[5] ^= 1
	if _, _, err := py.Unwrap(t, pkt, "insecure"); err == nil {
		t.Error("tampered datagram accepted")
	}
}

func TestCountersFileFormat(t *testing.T) {
	c := counterSet{"8a1b2c3d-0000-4000-8000-000000000001": {Bin: 267, Bout: 2307, Ereq: 0, Stot: 3}}
	// Python's json.dumps of the reference's counters (HEARTBEAT.md §3.2).
	want := `{"8a1b2c3d-0000-4000-8000-000000000001": {"bin": 267, "bout": 2307, "ereq": 0, "stot": 3}}`
	if got := string(c.marshal()); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct{ cur, last, want int64 }{
		{10, 0, 10}, {10, 4, 6}, {10, 10, 0},
		{3, 10, 3}, // counters reset (haproxy restarted): everything since is new
		{0, 10, 0},
	} {
		if got := delta(tc.cur, tc.last); got != tc.want {
			t.Errorf("delta(%d, %d) = %d, want %d", tc.cur, tc.last, got, tc.want)
		}
	}
}

// FuzzMarshalJSON: any strings give valid JSON that decodes back to the
// same values (invalid UTF-8 replaced), with only printable ASCII on the
// wire, as Python's ensure_ascii produces.
func FuzzMarshalJSON(f *testing.F) {
	f.Add("6e9fd1a2", "l", "OPEN", "p:l", "m", "UP 1/3", int64(5))
	f.Add("", "é\x00\"\\", "\u2028", "😀", "\xff", "\ufeff", int64(-1))
	f.Fuzz(func(t *testing.T, id, lid, status, pid, mid, mstatus string, n int64) {
		m := &Message{
			ID: id, Seq: uint64(n),
			Listeners: map[string]Listener{lid: {Status: status, Stats: ListenerStats{TX: n, RX: -n, Conns: n, TotConns: n, Ereq: n}}},
			Pools:     map[string]Pool{pid: {Status: status, Members: map[string]string{mid: mstatus}}},
		}
		js, err := m.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range js {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("byte %#x on the wire: %s", c, js)
			}
		}
		var d decoded
		if err := json.Unmarshal(js, &d); err != nil {
			t.Fatalf("%v: %s", err, js)
		}
		fix := func(s string) string { // each invalid byte becomes U+FFFD, as ranging does
			var b strings.Builder
			for _, r := range s {
				b.WriteRune(r)
			}
			return b.String()
		}
		wantID := fix(id)
		if (id == "" && d.ID != nil) || (id != "" && (d.ID == nil || *d.ID != wantID)) {
			t.Fatalf("id %q decoded as %v", id, d.ID)
		}
		if d.Listeners[fix(lid)].Status != fix(status) || d.Listeners[fix(lid)].Stats.RX != -n {
			t.Fatalf("listener lost: %s", js)
		}
		if d.Pools[fix(pid)].Members[fix(mid)] != fix(mstatus) {
			t.Fatalf("pool lost: %s", js)
		}
	})
}
