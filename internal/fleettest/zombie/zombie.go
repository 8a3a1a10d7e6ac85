// Package zombie makes a Kafka client in a test a zombie on demand: once
// its Dialer is silenced, the client's group heartbeats are answered as if
// the coordinator had taken them but never reach it, so the coordinator
// drops the member after its session timeout and gives its partitions to
// another, while the client goes on believing it holds them. That is what
// a process frozen past its session timeout sees when it resumes, before
// its next heartbeat tells it; the package gets there without freezing
// the test's own process, on any broker (the embedded one or Apache Kafka),
// since it works on the wire.
package zombie

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Dialer dials connections that pass everything through until Silence.
// Use its DialContext as the client's kgo.Dialer.
type Dialer struct {
	silent atomic.Bool
	// Swallowed counts the heartbeats answered without reaching a broker.
	Swallowed atomic.Int64
}

// Silence makes every heartbeat sent from now on, on every connection the
// dialer made or makes, answered with success without reaching a broker.
func (d *Dialer) Silence() { d.silent.Store(true) }

// DialContext dials addr and wraps the connection.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, d: d, answers: make(chan answer, 1024), closed: make(chan struct{})}, nil
}

// answer is what the client reads next on a connection, in the order of
// its requests: the broker's response to a request passed through, or
// a made-up response to a swallowed heartbeat.
type answer struct {
	madeUp []byte // nil: read the broker's response
}

// conn passes requests through, except heartbeats once silenced, and hands
// the client responses in request order, as Kafka does on a connection.
type conn struct {
	net.Conn
	d *Dialer

	wmu  sync.Mutex
	wbuf []byte

	answers   chan answer
	rbuf      []byte
	closed    chan struct{}
	closeOnce sync.Once
}

// Write takes whole request frames (size, api key, version, correlation
// ID, ...) out of what the client writes.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.wbuf, p...)
	for len(c.wbuf) >= 4 {
		size := int(binary.BigEndian.Uint32(c.wbuf))
		if len(c.wbuf) < 4+size {
			break
		}
		frame := c.wbuf[:4+size]
		if err := c.request(frame); err != nil {
			return 0, err
		}
		c.wbuf = c.wbuf[4+size:]
	}
	return len(p), nil
}

func (c *conn) request(frame []byte) error {
	if len(frame) < 12 {
		return fmt.Errorf("zombie: a request frame of %d bytes", len(frame))
	}
	key := int16(binary.BigEndian.Uint16(frame[4:]))
	version := int16(binary.BigEndian.Uint16(frame[6:]))
	correlation := binary.BigEndian.Uint32(frame[8:])
	if key == int16(kmsg.Heartbeat) && c.d.silent.Load() {
		c.d.Swallowed.Add(1)
		return c.queue(answer{madeUp: heartbeatOK(version, correlation)})
	}
	if _, err := c.Conn.Write(frame); err != nil {
		return err
	}
	return c.queue(answer{})
}

func (c *conn) queue(a answer) error {
	select {
	case c.answers <- a:
		return nil
	case <-c.closed:
		return net.ErrClosed
	}
}

// heartbeatOK is a successful response to a heartbeat of version v.
func heartbeatOK(v int16, correlation uint32) []byte {
	resp := kmsg.NewHeartbeatResponse()
	resp.Version = v
	out := binary.BigEndian.AppendUint32(make([]byte, 4, 16), correlation)
	if resp.IsFlexible() {
		out = append(out, 0) // no tagged fields in the response header
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

// Read hands out the next answer: a made-up one at once, or the broker's
// response frame.
func (c *conn) Read(p []byte) (int, error) {
	if len(c.rbuf) == 0 {
		var a answer
		select {
		case a = <-c.answers:
		case <-c.closed:
			return 0, net.ErrClosed
		}
		if a.madeUp != nil {
			c.rbuf = a.madeUp
		} else {
			var size [4]byte
			if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
				return 0, err
			}
			frame := make([]byte, 4+binary.BigEndian.Uint32(size[:]))
			copy(frame, size[:])
			if _, err := io.ReadFull(c.Conn, frame[4:]); err != nil {
				return 0, err
			}
			c.rbuf = frame
		}
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
