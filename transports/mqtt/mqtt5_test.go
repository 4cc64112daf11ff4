package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// v5Client is a minimal MQTT 5 client over the broker library's packet codec, for what paho
// (MQTT 3.1.1 only) cannot show: MQTT 5 properties such as the user properties that carry
// CloudEvents attributes in binary mode. It is used from one goroutine.
type v5Client struct {
	t      testing.TB
	conn   net.Conn
	r      *bufio.Reader
	nextID uint16
	queued []packets.Packet // PUBLISHes read while waiting for something else
}

// dialV5 connects as clientID with Clean Start off and the given Session Expiry Interval
// [MQTT-3.1.2-11] and returns the client and CONNACK's Session Present.
func dialV5(t testing.TB, addr, clientID string, expiry uint32) (*v5Client, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("MQTT 5 dial %s: %v", addr, err)
	}
	c := &v5Client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Keepalive: 30,
		},
		Properties: packets.Properties{SessionExpiryInterval: expiry, SessionExpiryIntervalFlag: true},
	})
	ack := c.read(5 * time.Second)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("MQTT 5 connect %s: got packet type %d, reason 0x%x", clientID, ack.FixedHeader.Type, ack.ReasonCode)
	}
	return c, ack.SessionPresent
}

func (c *v5Client) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	}
	if err != nil {
		c.t.Fatalf("MQTT 5 encode: %v", err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("MQTT 5 write: %v", err)
	}
}

// read returns the next packet from the broker.
func (c *v5Client) read(within time.Duration) packets.Packet {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(within))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("MQTT 5 read: %v", err)
	}
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatalf("MQTT 5 read length: %v", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatalf("MQTT 5 read body: %v", err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		c.t.Fatalf("MQTT 5 decode packet type %d: %v", pk.FixedHeader.Type, err)
	}
	return pk
}

// readType returns the next packet of type typ, keeping PUBLISHes that come first for next.
func (c *v5Client) readType(typ byte) packets.Packet {
	c.t.Helper()
	for {
		pk := c.read(5 * time.Second)
		if pk.FixedHeader.Type == typ {
			return pk
		}
		if pk.FixedHeader.Type != packets.Publish {
			c.t.Fatalf("MQTT 5: got packet type %d while waiting for %d", pk.FixedHeader.Type, typ)
		}
		c.queued = append(c.queued, pk)
	}
}

func (c *v5Client) id() uint16 {
	c.nextID++
	return c.nextID
}

// subscribe subscribes to filter with QoS 1 and returns the SUBACK's reason code.
func (c *v5Client) subscribe(filter string) byte {
	c.t.Helper()
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    c.id(),
		Filters:     packets.Subscriptions{{Filter: filter, Qos: 1}},
	})
	return c.readType(packets.Suback).ReasonCodes[0]
}

// publish publishes with QoS 1 and waits for the PUBACK, whose reason code it returns.
func (c *v5Client) publish(topic string, payload []byte, props packets.Properties) byte {
	c.t.Helper()
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    c.id(),
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
	})
	return c.readType(packets.Puback).ReasonCode
}

// next returns the next PUBLISH and acknowledges it.
func (c *v5Client) next(within time.Duration) packets.Packet {
	c.t.Helper()
	var pk packets.Packet
	if len(c.queued) > 0 {
		pk, c.queued = c.queued[0], c.queued[1:]
	} else if pk = c.read(within); pk.FixedHeader.Type != packets.Publish {
		c.t.Fatalf("MQTT 5: got packet type %d, want a PUBLISH", pk.FixedHeader.Type)
	}
	if pk.FixedHeader.Qos > 0 {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	return pk
}

// disconnect ends the connection with a DISCONNECT (the session stays for its expiry).
func (c *v5Client) disconnect() {
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	c.conn.Close()
}
