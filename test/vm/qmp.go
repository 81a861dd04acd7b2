package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of qemu's machine protocol (QMP) on a unix socket: the
// channel Nova's libvirt uses to hot-plug NICs and to reset or power off
// a guest. Commands run one at a time; asynchronous events (RESET,
// SHUTDOWN, POWERDOWN, ...) are recorded as they arrive.
type QMP struct {
	conn net.Conn
	enc  *json.Encoder

	cmdMu sync.Mutex // one command in flight

	mu      sync.Mutex
	nextID  int
	pending map[string]chan qmpReply
	events  []QMPEvent
	changed chan struct{} // closed and replaced on every event or close
	err     error         // set when the connection ended
	done    chan struct{}
}

// QMPEvent is one asynchronous event.
type QMPEvent struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	// At is when the client received it.
	At time.Time `json:"-"`
}

// QMPError is an error answer of qemu.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
}

// DialQMP connects to the QMP socket at path, retrying until qemu has
// created it or ctx ends, and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &QMP{conn: conn, enc: json.NewEncoder(conn), pending: map[string]chan qmpReply{},
		changed: make(chan struct{}), done: make(chan struct{})}
	r := bufio.NewReaderSize(conn, 64<<10)
	// The greeting comes first: {"QMP": {"version": ..., "capabilities": ...}}.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: greeting: %w", path, err)
	}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: unexpected greeting %q", path, line)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go q.read(r)
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) read(r *bufio.Reader) {
	defer close(q.done)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.fail(err)
			return
		}
		var msg struct {
			ID     string          `json:"id"`
			Event  string          `json:"event"`
			Data   json.RawMessage `json:"data"`
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			continue // not ours to judge; qemu only writes JSON
		}
		q.mu.Lock()
		if msg.Event != "" {
			q.events = append(q.events, QMPEvent{Name: msg.Event, Data: msg.Data, At: time.Now()})
			close(q.changed)
			q.changed = make(chan struct{})
		} else if ch, ok := q.pending[msg.ID]; ok {
			delete(q.pending, msg.ID)
			ch <- qmpReply{Return: msg.Return, Error: msg.Error}
		}
		q.mu.Unlock()
	}
}

func (q *QMP) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = fmt.Errorf("qmp connection: %w", err)
	}
	for id, ch := range q.pending {
		delete(q.pending, id)
		close(ch)
	}
	close(q.changed)
	q.changed = make(chan struct{})
}

// Execute runs one command with arguments (nil for none) and returns
// its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.cmdMu.Lock()
	defer q.cmdMu.Unlock()
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	q.nextID++
	id := fmt.Sprintf("avm-%d", q.nextID)
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	q.mu.Unlock()
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
	}
	if err := q.enc.Encode(req); err != nil {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			q.mu.Lock()
			err := q.err
			q.mu.Unlock()
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		if rep.Error != nil {
			rep.Error.Command = command
			return nil, rep.Error
		}
		return rep.Return, nil
	case <-ctx.Done():
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

// Events returns the events received so far.
func (q *QMP) Events() []QMPEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]QMPEvent(nil), q.events...)
}

// WaitEvent waits for an event called name that arrived at or after
// from (an index into Events) and returns it with its index.
func (q *QMP) WaitEvent(ctx context.Context, name string, from int) (QMPEvent, int, error) {
	for {
		q.mu.Lock()
		for i := from; i < len(q.events); i++ {
			if q.events[i].Name == name {
				ev := q.events[i]
				q.mu.Unlock()
				return ev, i, nil
			}
		}
		changed, err := q.changed, q.err
		q.mu.Unlock()
		if err != nil {
			return QMPEvent{}, 0, fmt.Errorf("waiting for %s: %w", name, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return QMPEvent{}, 0, fmt.Errorf("waiting for qmp event %s: %w", name, ctx.Err())
		}
	}
}

// Close ends the connection (qemu keeps running).
func (q *QMP) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}

// Done is closed when the connection ended, for example because qemu
// exited.
func (q *QMP) Done() <-chan struct{} { return q.done }

// NetdevAddTap creates a tap backend named id whose host side is the
// interface ifname in qemu's network namespace (no helper scripts: the
// caller attaches it to its bridge), as libvirt does before hot-plugging
// a Neutron port.
func (q *QMP) NetdevAddTap(ctx context.Context, id, ifname string) error {
	_, err := q.Execute(ctx, "netdev_add", map[string]any{
		"type": "tap", "id": id, "ifname": ifname, "script": "no", "downscript": "no",
	})
	return err
}

// DeviceAddNIC plugs a virtio-net PCI NIC with mac on backend netdev into
// the running guest.
func (q *QMP) DeviceAddNIC(ctx context.Context, id, netdev, mac string) error {
	_, err := q.Execute(ctx, "device_add", map[string]any{
		"driver": "virtio-net-pci", "id": id, "netdev": netdev, "mac": mac,
	})
	return err
}

// SystemReset is a hard reset (the reset button).
func (q *QMP) SystemReset(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_reset", nil)
	return err
}

// SystemPowerdown presses the ACPI power button: the guest shuts down
// cleanly and qemu exits.
func (q *QMP) SystemPowerdown(ctx context.Context) error {
	_, err := q.Execute(ctx, "system_powerdown", nil)
	return err
}

// Quit stops qemu at once: the guest is gone as if its host lost power.
// qemu may close the connection before it answers; that counts as done.
func (q *QMP) Quit(ctx context.Context) error {
	_, err := q.Execute(ctx, "quit", nil)
	if err != nil {
		var qe *QMPError
		if errors.As(err, &qe) {
			return err
		}
		select {
		case <-q.done:
			return nil
		case <-ctx.Done():
			return err
		}
	}
	return nil
}

// Status is the run state ("running", "paused", "shutdown", ...).
func (q *QMP) Status(ctx context.Context) (string, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("query-status %s: %w", raw, err)
	}
	return st.Status, nil
}
