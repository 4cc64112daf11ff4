package mqtt

import (
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takeoverHook closes a loss window of the broker library when a client reconnects to its
// session [MQTT-3.1.2-4] while a publication is being fanned out to it. The publisher's
// goroutine looks the session up (the old connection's object), the reconnecting goroutine
// copies the old object's queued messages to the new one and clears the old one, and the
// publisher then queues its message on the old object: after the copy it is lost (seen about
// once in 300 reconnects that follow a PUBACK at once). The hook sees such a message arrive on
// an object already marked as taken over and queues it again on the connection that holds the
// session once that is established. A message the copy did include is then delivered twice,
// which at-least-once allows.
//
// mochi calls it on publisher goroutines (OnQosPublish) and on the connecting client's
// goroutine; its state is guarded by mu.
type takeoverHook struct {
	mochi.HookBase
	b *Broker

	mu      sync.Mutex
	current map[string]*heldSession // by client id: the connection established last
	orphans map[string][]orphan     // by client id: messages queued on a superseded connection
}

type heldSession struct {
	cl    *mochi.Client
	clean bool // it started a new session: earlier messages went with the old one
}

type orphan struct {
	from *mochi.Client
	pk   packets.Packet
}

func newTakeoverHook(b *Broker) *takeoverHook {
	return &takeoverHook{b: b, current: map[string]*heldSession{}, orphans: map[string][]orphan{}}
}

func (h *takeoverHook) ID() string { return "turnout-takeover" }

func (h *takeoverHook) Provides(b byte) bool {
	switch b {
	case mochi.OnQosPublish, mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnClientExpired:
		return true
	}
	return false
}

// OnQosPublish notices a QoS 1/2 message queued on a connection object that a new connection
// has taken over.
func (h *takeoverHook) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	if !cl.IsTakenOver() || cl.Net.Inline || pk.FixedHeader.Type != packets.Publish {
		return
	}
	h.mu.Lock()
	h.orphans[cl.ID] = append(h.orphans[cl.ID], orphan{from: cl, pk: pk})
	h.mu.Unlock()
	h.adopt(cl.ID)
}

// OnSessionEstablished runs once the new connection is the session's (after the library
// resent the messages it copied).
func (h *takeoverHook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	h.mu.Lock()
	h.current[cl.ID] = &heldSession{cl: cl, clean: pk.Connect.Clean}
	h.mu.Unlock()
	h.adopt(cl.ID)
}

// OnDisconnect forgets a session that ends with its connection.
func (h *takeoverHook) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	if expire && !cl.IsTakenOver() {
		h.forget(cl)
	}
}

func (h *takeoverHook) OnClientExpired(cl *mochi.Client) { h.forget(cl) }

func (h *takeoverHook) forget(cl *mochi.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.current[cl.ID]; s != nil && s.cl == cl {
		delete(h.current, cl.ID)
		delete(h.orphans, cl.ID)
	}
}

// adopt queues the orphans of session id on the connection that holds it, unless that one is
// being taken over too (its successor adopts them once established) or started a clean session.
func (h *takeoverHook) adopt(id string) {
	h.mu.Lock()
	s, list := h.current[id], h.orphans[id]
	if s == nil || len(list) == 0 || s.cl.IsTakenOver() {
		h.mu.Unlock()
		return
	}
	delete(h.orphans, id)
	h.mu.Unlock()
	if s.clean {
		return // discarded with the session the client asked to end [MQTT-3.1.2-6]
	}
	for _, o := range list {
		if o.from == s.cl {
			continue
		}
		h.requeue(s.cl, o)
	}
}

// requeue queues the message of o on cl as the library queues a publication: a packet id of
// cl's, the session's queue, the store, and the connection if it is open.
func (h *takeoverHook) requeue(cl *mochi.Client, o orphan) {
	b := h.b
	out := o.pk.Copy(false)
	pid, err := cl.NextPacketID()
	if err != nil {
		b.dropped.Inc()
		b.log.Error("mqtt broker dropped a message: no packet id left for the session", "client", cl.ID, "topic", out.TopicName)
		return
	}
	out.PacketID = uint16(pid)
	if cl.State.Inflight.Set(out) {
		atomic.AddInt64(&b.srv.Info.Inflight, 1)
	}
	if st := b.store; st != nil && sessionOutlivesConnection(cl) {
		st.putInflight(cl, out)
		st.deleteInflight(cl, o.pk.PacketID) // the old connection's record, unless the id is in use again
	}
	b.requeued.Inc()
	if cl.IsTakenOver() {
		h.OnQosPublish(cl, out, 0, 0) // taken over in the meantime: again, for its successor
		return
	}
	if !cl.Closed() {
		_ = cl.WritePacket(out) // a failed write leaves it queued for the next connection
	}
}
