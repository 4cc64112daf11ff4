package mqtt

import (
	"errors"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// replayPending publishes again, to the subscribers restored from the store, every publication
// of the last run whose pending record is still there: turnout stopped between acknowledging it
// and the end of its delivery to the subscribers' sessions. Some subscribers may get it twice;
// none misses it. Start calls it before any listener serves.
func (b *Broker) replayPending() error {
	recs, err := b.store.readPending()
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	b.seq.Store(max(b.seq.Load(), recs[len(recs)-1].Created))
	b.replayCl = b.srv.NewClient(nil, mochi.LocalListener, "turnout-replay", true)
	b.replayCl.Properties.ProtocolVersion = 5 // keep the MQTT 5 properties
	defer func() { b.replaying = nil }()
	for i := range recs {
		rec := &recs[i]
		pk := rec.ToPacket()
		pk.FixedHeader.Type = packets.Publish
		pk.PacketID = 1 // QoS>0 needs one to pass validation; the library does not use it here
		b.replaying = rec
		if err := b.srv.InjectPacket(b.replayCl, pk); err != nil {
			b.sm.errors.Inc()
			b.log.Error("mqtt broker persistence: a pending publication could not be published again; kept for the next start",
				"topic", rec.TopicName, "origin", rec.Origin, "err", err)
			continue
		}
		b.sm.replayed.Inc()
	}
	b.log.Warn("mqtt broker published again the publications a stop interrupted (subscribers may see them twice)",
		"publications", len(recs), "path", b.dbPath)
	return nil
}

// storeHook keeps the store in step with the library's sessions, subscriptions, queued and
// retained messages, and hands them back when the library starts. It stores only sessions that
// outlive their connection. mochi calls it on client goroutines, on its expiry loop, and on
// Start's goroutine while it loads the store.
type storeHook struct {
	mochi.HookBase
	b *Broker
}

func (h *storeHook) ID() string { return "turnout-store" }

func (h *storeHook) Provides(b byte) bool {
	switch b {
	case mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnSubscribed, mochi.OnUnsubscribed, mochi.OnRetainMessage, mochi.OnRetainedExpired,
		mochi.OnQosPublish, mochi.OnQosComplete, mochi.OnQosDropped, mochi.OnClientExpired,
		mochi.StoredClients, mochi.StoredSubscriptions, mochi.StoredInflightMessages,
		mochi.StoredRetainedMessages:
		return true
	}
	return false
}

// Stop writes what is queued and closes the store (the library's Close, after every client
// goroutine ended).
func (h *storeHook) Stop() error {
	if st := h.b.store; st != nil {
		return st.close()
	}
	return nil
}

// OnSessionEstablish runs before the library looks for an existing session: a clean start
// ends the stored one [MQTT-3.1.2-6] before anything of the new session is queued.
func (h *storeHook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		h.b.store.dropClient(cl.ID)
	}
}

func (h *storeHook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	if sessionOutlivesConnection(cl) {
		h.b.store.putClient(cl)
	}
}

// OnDisconnect drops a session that ends with its connection, and writes again the record of
// an MQTT 5 session, whose DISCONNECT may change its expiry. A session taken over by a new
// connection is the new connection's business.
func (h *storeHook) OnDisconnect(cl *mochi.Client, _ error, expire bool) {
	if cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	if expire {
		h.b.store.dropClient(cl.ID)
		return
	}
	if cl.Properties.ProtocolVersion == 5 && sessionOutlivesConnection(cl) {
		h.b.store.putClient(cl)
	}
}

func (h *storeHook) OnClientExpired(cl *mochi.Client) { h.b.store.dropClient(cl.ID) }

// OnSubscribed stores the granted subscriptions of a persistent session before the library
// sends the SUBACK. A failure cannot refuse the SUBACK any more: it is logged (and counted by
// the writer).
func (h *storeHook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	if sessionOutlivesConnection(cl) {
		if err := h.b.store.putSubscriptions(cl, pk, codes); err != nil {
			h.b.log.Error("mqtt broker persistence: subscription not stored", "client", cl.ID, "err", err)
		}
	}
}

func (h *storeHook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	h.b.store.deleteSubscriptions(cl, pk)
}

func (h *storeHook) OnRetainMessage(cl *mochi.Client, pk packets.Packet, r int64) {
	if r != 0 {
		h.b.store.putRetained(cl, pk)
	}
}

func (h *storeHook) OnRetainedExpired(topic string) { h.b.store.deleteRetained(topic) }

// OnQosPublish stores a message a persistent session now holds: a QoS 1/2 PUBLISH queued for
// or sent to it, or the PUBREC/PUBREL step of a QoS 2 exchange. The PUBACK and PUBCOMP the
// library holds for an instant while it answers a publisher are not stored.
func (h *storeHook) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	switch pk.FixedHeader.Type {
	case packets.Publish, packets.Pubrec, packets.Pubrel:
		if sessionOutlivesConnection(cl) {
			h.b.store.putInflight(cl, pk)
		}
	}
}

func (h *storeHook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	h.b.store.deleteInflight(cl, pk.PacketID)
}

// OnQosDropped deletes a message the session no longer holds, except when a new connection
// took the session over: the library then clears the old connection's copy, but the session
// (and so the file) keeps the messages.
func (h *storeHook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		h.b.store.deleteInflight(cl, pk.PacketID)
	}
}

func (h *storeHook) StoredClients() ([]storage.Client, error) { return h.b.store.readClients() }

func (h *storeHook) StoredSubscriptions() ([]storage.Subscription, error) {
	return h.b.store.readSubscriptions()
}

// StoredInflightMessages also sets the publish sequence above every message restored, so that
// new messages are resent after them.
func (h *storeHook) StoredInflightMessages() ([]storage.Message, error) {
	msgs, top, err := h.b.store.readInflight()
	h.b.seq.Store(max(h.b.seq.Load(), top))
	return msgs, err
}

func (h *storeHook) StoredRetainedMessages() ([]storage.Message, error) {
	return h.b.store.readRetained()
}
