package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// MemberHealthPath is the health-check path of the Octavia templater's
// HTTP monitors (`option httpchk GET /index.html`, expecting status 418).
const MemberHealthPath = "/index.html"

// MemberAddressesPath answers "local=<addr> remote=<addr>": the
// addresses of the connection as the member saw it (source addresses of
// VIP traffic, policy routing).
const MemberAddressesPath = "/addresses"

// Member is the one HTTP server tests use for a pool member (or any
// peer): GET /index.html answers 418 (what Octavia's health check
// expects), /addresses the connection's addresses, any other path 200
// with the member's name as the body.
type Member struct {
	Name string
	Addr string // ip:port it listens on
	srv  *http.Server
	done chan struct{}
}

// StartMember starts a member on addr inside ns.
func StartMember(t testing.TB, ns *NetNS, addr, name string) *Member {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("member %s on %s in %s: %v", name, addr, ns.Name, err)
	}
	return ServeMember(t, ln, name)
}

// StartLocalMember starts a member on a free port of 127.0.0.1 (no
// namespace, no root).
func StartLocalMember(t testing.TB, name string) *Member {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ServeMember(t, ln, name)
}

// ServeMember serves a member on ln (created wherever the test needs it);
// it is shut down when the test ends, or by Close.
func ServeMember(t testing.TB, ln net.Listener, name string) *Member {
	m := &Member{Name: name, Addr: ln.Addr().String(), done: make(chan struct{})}
	body := []byte(name)
	m.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case MemberHealthPath:
				w.WriteHeader(http.StatusTeapot)
			case MemberAddressesPath:
				local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
				fmt.Fprintf(w, "local=%s remote=%s", local, r.RemoteAddr)
			default:
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write(body)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(m.done)
		_ = m.srv.Serve(ln)
	}()
	t.Cleanup(m.Close)
	return m
}

// Close stops the member (bounded wait); closing twice is harmless.
func (m *Member) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.srv.Close()
	}
	<-m.done
}

// RawHTTP sends req (a whole HTTP/1.1 request, "Connection: close") on a
// new connection to addr and returns the whole answer, failing the test
// on any error.
func RawHTTP(t testing.TB, addr, req string) []byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// GetIn fetches url (a Member's MemberAddressesPath, typically) over one
// connection dialled on a thread do switched into a namespace (NetNS.Do,
// or the product's Namespace.Do), from source address src ("" = the
// kernel's choice). It returns the body and the peer address the client
// saw; a status other than 200 is an error.
func GetIn(do func(func() error) error, src, rawURL string, timeout time.Duration) (body, peer string, err error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return "", "", err
	}
	var conn net.Conn
	if err := do(func() error {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		conn, err = d.Dial("tcp", req.URL.Host)
		return err
	}); err != nil {
		return "", "", err
	}
	defer conn.Close()
	peer = conn.RemoteAddr().String()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	req.Header.Set("Connection", "close")
	if err := req.Write(conn); err != nil {
		return "", peer, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", peer, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), peer, fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), peer, err
}
