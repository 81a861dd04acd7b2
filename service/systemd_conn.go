package service

// The D-Bus connection to the systemd manager: dialled on first use,
// re-dialled (with bounded retries) when it drops, e.g. across a
// daemon-reexec.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

func (m *Systemd) dialOne() (*godbus.Conn, error) {
	var (
		c   *godbus.Conn
		err error
	)
	// the connection lives until Close (WithContext ties its lifetime to m.life)
	if m.opts.UserBus {
		c, err = godbus.SessionBusPrivate(godbus.WithContext(m.life))
	} else {
		c, err = godbus.Dial("unix:path="+m.opts.PrivateSocket, godbus.WithContext(m.life))
	}
	if err != nil {
		return nil, err
	}
	if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, err
	}
	if m.opts.UserBus { // a bus daemon wants Hello; the manager's private socket does not
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (m *Systemd) target() string {
	if m.opts.UserBus {
		return "session bus"
	}
	return m.opts.PrivateSocket
}

// connection returns a live connection, dialing (with retries bounded by
// ctx) when there is none or it dropped. The channel is closed when the
// returned connection drops.
func (m *Systemd) connection(ctx context.Context) (*sddbus.Conn, <-chan struct{}, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if m.conn != nil && m.conn.Connected() {
		c, gone := m.conn, m.sig.Context().Done()
		m.mu.Unlock()
		return c, gone, nil
	}
	reconnect := m.conn != nil || m.dials.Load() > 0
	if m.conn != nil {
		m.log.Info("systemd connection lost, reconnecting", "socket", m.target())
		m.conn.Close()
		m.conn, m.sig = nil, nil
	}
	m.mu.Unlock()

	// the first connection fails fast (no manager there); a reconnection
	// retries for a while (the manager may be re-executing itself)
	var giveUp <-chan time.Time
	if reconnect {
		t := time.NewTimer(reconnectWindow)
		defer t.Stop()
		giveUp = t.C
	}
	delay := 50 * time.Millisecond
	for {
		// go-systemd dials twice: first the call connection, then the
		// signal connection
		var raws []*godbus.Conn
		c, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
			rc, err := m.dialOne()
			if err == nil {
				raws = append(raws, rc)
			}
			return rc, err
		})
		if err == nil && len(raws) != 2 {
			c.Close()
			err = fmt.Errorf("unexpected number of D-Bus connections: %d", len(raws))
		}
		if err == nil {
			m.dials.Add(1)
			m.mu.Lock()
			if m.closed {
				m.mu.Unlock()
				c.Close()
				return nil, nil, ErrClosed
			}
			if m.conn != nil && m.conn.Connected() { // a concurrent caller won
				c.Close()
			} else {
				m.conn, m.sig = c, raws[1]
			}
			c, gone := m.conn, m.sig.Context().Done()
			m.mu.Unlock()
			return c, gone, nil
		}
		if !reconnect {
			return nil, nil, fmt.Errorf("connect to systemd at %s: %w", m.target(), err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("connect to systemd at %s: %w (last error: %v)", m.target(), ctx.Err(), err)
		case <-giveUp:
			return nil, nil, fmt.Errorf("reconnect to systemd at %s: %w", m.target(), err)
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

// call runs f on a live connection and retries once on a fresh connection
// when f failed because the connection dropped.
func (m *Systemd) call(ctx context.Context, f func(c *sddbus.Conn) error) error {
	for attempt := 0; ; attempt++ {
		c, _, err := m.connection(ctx)
		if err != nil {
			return err
		}
		err = f(c)
		if err == nil || attempt > 0 || !connLost(c, err) {
			return err
		}
	}
}

func connLost(c *sddbus.Conn, err error) bool {
	return !c.Connected() || errors.Is(err, godbus.ErrClosed) || errors.Is(err, fs.ErrClosed)
}
