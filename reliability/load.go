// Package reliability proves turnout's delivery guarantee from the outside: a generator
// publishes sequence-numbered CloudEvents with the broker's confirmation, a validator counts
// which ids arrived, and the tests kill and restart turnout and its brokers in between.
//
// Invariant: nothing here uses turnout's own code. The generator and validator speak the
// brokers' protocols directly, so a bug in turnout's codecs or transports cannot hide itself.
package reliability

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Attributes of every generated event; the stock attrroute rule is configured on Type.
const (
	EventSource = "/reliability/generator"
	EventType   = "care.alarm.raised"
)

// EventID is the id of event seq of a run: "run-seq".
func EventID(run string, seq int) string { return fmt.Sprintf("%s-%d", run, seq) }

// EventData returns the JSON data of event seq, padded so that the whole structured event is
// about size bytes.
func EventData(run string, seq, size int) []byte {
	b, _ := json.Marshal(map[string]any{"seq": seq, "pad": strings.Repeat("x", padding(run, seq, size))})
	return b
}

// EventJSON returns a structured-mode CloudEvent (JSON) with the given id and a payload padded
// to about size bytes, the way a device would publish it.
func EventJSON(run string, seq int, size int) []byte {
	b, _ := json.Marshal(map[string]any{
		"specversion":     "1.0",
		"id":              EventID(run, seq),
		"source":          EventSource,
		"type":            EventType,
		"datacontenttype": "application/json",
		"data":            json.RawMessage(EventData(run, seq, size)),
	})
	return b
}

// padding is the length of the pad string that brings the structured event to size bytes.
func padding(run string, seq, size int) int {
	const overhead = len(`{"data":{"pad":"","seq":},"datacontenttype":"application/json","id":"-","source":"","specversion":"1.0","type":""}`)
	n := size - overhead - len(run) - 2*len(fmt.Sprint(seq)) - len(EventSource) - len(EventType)
	return max(n, 0)
}

// Producer publishes sequence-numbered events to one destination and counts an event as sent
// only once the broker confirmed it. Its methods are called from one goroutine at a time.
type Producer interface {
	// Publish sends events first..last-1 of run, about size bytes each, with up to window
	// awaiting confirmation, and publishes an unconfirmed event again until it is confirmed or
	// deadline passes. It returns the sequence numbers the broker confirmed, in ascending order.
	Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error)
	// SentAt is when seq was first published (zero if never).
	SentAt(seq int) time.Time
	// Close disconnects.
	Close()
}

// Consumer receives events from one destination, acknowledges each to its broker, and records
// every event id it saw. Its methods are safe for concurrent use.
type Consumer interface {
	// Report compares the ids run-seq for seqs with what was received.
	Report(run string, seqs []int) Report
	// WaitFor polls until every seq has been received or timeout passes, and reports.
	WaitFor(run string, seqs []int, timeout time.Duration) Report
	// ReceivedAt is when id was first received (zero if never).
	ReceivedAt(id string) time.Time
	// Count returns how many distinct ids and how many deliveries in all were received.
	Count() (distinct, total int)
	// Close disconnects; a persistent subscription stays on the broker.
	Close()
}

// sentLog records when each sequence number was first published.
type sentLog struct {
	mu sync.Mutex
	at map[int]time.Time
}

func (l *sentLog) record(seq int) {
	l.mu.Lock()
	if l.at == nil {
		l.at = map[int]time.Time{}
	}
	if _, ok := l.at[seq]; !ok {
		l.at[seq] = time.Now()
	}
	l.mu.Unlock()
}

// SentAt implements Producer.
func (l *sentLog) SentAt(seq int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.at[seq]
}

// recvLog counts deliveries per event id; a Consumer embeds it.
type recvLog struct {
	mu    sync.Mutex
	seen  map[string]int
	first map[string]time.Time
}

func (l *recvLog) record(id string) {
	now := time.Now()
	l.mu.Lock()
	if l.seen == nil {
		l.seen, l.first = map[string]int{}, map[string]time.Time{}
	}
	if l.seen[id] == 0 {
		l.first[id] = now
	}
	l.seen[id]++
	l.mu.Unlock()
}

// ReceivedAt implements Consumer.
func (l *recvLog) ReceivedAt(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first[id]
}

// Count implements Consumer.
func (l *recvLog) Count() (distinct, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.seen {
		total += n
	}
	return len(l.seen), total
}

// Report implements Consumer.
func (l *recvLog) Report(run string, seqs []int) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{Sent: len(seqs)}
	for _, s := range seqs {
		n := l.seen[EventID(run, s)]
		switch {
		case n == 0:
			r.Missing++
			if len(r.MissingIDs) < 20 {
				r.MissingIDs = append(r.MissingIDs, s)
			}
		default:
			r.Received++
			r.Duplicates += n - 1
		}
	}
	sort.Ints(r.MissingIDs)
	return r
}

// WaitFor implements Consumer.
func (l *recvLog) WaitFor(run string, seqs []int, timeout time.Duration) Report {
	end := time.Now().Add(timeout)
	for {
		r := l.Report(run, seqs)
		if r.Missing == 0 || time.Now().After(end) {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idOf extracts the id of a structured-mode JSON event; an undecodable body is recorded under
// a "malformed:" id so that it is counted, not ignored.
func idOf(body []byte) string {
	var ev struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
		return "malformed:" + string(body)
	}
	return ev.ID
}

// headerEventID is the event id of a binary-mode message whose ce-id header (percent-encoded
// by the HTTP rules [CE-HTTP-3.1.3.2]) is ceID, or of a structured one (ceID empty) with body.
func headerEventID(ceID string, body []byte) string {
	if ceID == "" {
		return idOf(body)
	}
	if id, err := url.PathUnescape(ceID); err == nil {
		return id
	}
	return ceID
}

// Latencies returns the median and 99th percentile of received-minus-first-published over the
// seqs that c received; zero when none was.
func Latencies(p Producer, c Consumer, run string, seqs []int) (p50, p99 time.Duration) {
	var d []time.Duration
	for _, s := range seqs {
		sent, got := p.SentAt(s), c.ReceivedAt(EventID(run, s))
		if sent.IsZero() || got.IsZero() {
			continue
		}
		d = append(d, got.Sub(sent))
	}
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]
}

// MQTTProducer publishes structured-mode events over MQTT at QoS 1 and counts an event as sent
// only once the broker's PUBACK arrived.
type MQTTProducer struct {
	sentLog
	c     paho.Client
	topic string
}

var _ Producer = (*MQTTProducer)(nil)

// NewMQTTProducer connects to broker (tcp://host:port) with a clean session; it publishes to
// topic.
func NewMQTTProducer(broker, clientID, topic string) (*MQTTProducer, error) {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectTimeout(5 * time.Second).SetMaxReconnectInterval(time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("mqtt producer connect %s: %v", broker, t.Error())
	}
	return &MQTTProducer{c: c, topic: topic}, nil
}

// Client is the producer's MQTT client, for tests that publish hand-made payloads.
func (p *MQTTProducer) Client() paho.Client { return p.c }

// Publish implements Producer.
func (p *MQTTProducer) Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	type pending struct {
		seq int
		tok paho.Token
	}
	var confirmed []int
	send := func(seq int) pending {
		p.record(seq)
		return pending{seq, p.c.Publish(p.topic, 1, false, EventJSON(run, seq, size))}
	}
	wait := func(pd pending) error {
		for {
			if pd.tok.WaitTimeout(2*time.Second) && pd.tok.Error() == nil {
				confirmed = append(confirmed, pd.seq)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("mqtt publish seq %d not confirmed before deadline: %v", pd.seq, pd.tok.Error())
			}
			pd = send(pd.seq)
		}
	}
	return confirmed, inOrder(first, last, window, send, wait)
}

// inOrder publishes first..last-1 with up to window publishes awaiting confirmation and waits
// for them in sequence order: send starts the publish of seq, wait blocks until that publish is
// confirmed (publishing it again as often as needed) and fails only for good.
func inOrder[T any](first, last, window int, send func(seq int) T, wait func(T) error) error {
	window = max(window, 1)
	inflight := make([]T, 0, window)
	for seq := first; seq < last; seq++ {
		if len(inflight) == window {
			if err := wait(inflight[0]); err != nil {
				return err
			}
			inflight = inflight[1:]
		}
		inflight = append(inflight, send(seq))
	}
	for _, pd := range inflight {
		if err := wait(pd); err != nil {
			return err
		}
	}
	return nil
}

// Close implements Producer.
func (p *MQTTProducer) Close() { p.c.Disconnect(250) }

// MQTTConsumer subscribes at QoS 1 with a persistent session and records every event id it sees.
type MQTTConsumer struct {
	recvLog
	c paho.Client
}

var _ Consumer = (*MQTTConsumer)(nil)

// NewMQTTConsumer connects to broker with a persistent session (clientID fixed), subscribes
// to topic and returns once the broker confirmed the subscription. The session survives the
// consumer's and the broker's restarts (with persistence).
func NewMQTTConsumer(broker, clientID, topic string) (*MQTTConsumer, error) {
	v := &MQTTConsumer{}
	handler := func(_ paho.Client, m paho.Message) { v.record(idOf(m.Payload())) }
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).SetResumeSubs(true).
		SetConnectTimeout(5 * time.Second).SetMaxReconnectInterval(time.Second).
		SetDefaultPublishHandler(handler).SetOrderMatters(false)
	subscribed := make(chan paho.Token, 1)
	o.SetOnConnectHandler(func(c paho.Client) {
		t := c.Subscribe(topic, 1, handler)
		select {
		case subscribed <- t:
		default:
		}
	})
	v.c = paho.NewClient(o)
	if t := v.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("mqtt consumer connect %s: %v", broker, t.Error())
	}
	// Return only once the first subscription holds, so that nothing published next is missed.
	select {
	case t := <-subscribed:
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			v.c.Disconnect(0)
			return nil, fmt.Errorf("mqtt consumer subscribe %s: %v", topic, t.Error())
		}
	case <-time.After(10 * time.Second):
		v.c.Disconnect(0)
		return nil, fmt.Errorf("mqtt consumer subscribe %s: not subscribed within 10s", topic)
	}
	return v, nil
}

// Close implements Consumer, keeping the session on the broker.
func (v *MQTTConsumer) Close() { v.c.Disconnect(250) }

// Report is one scenario's outcome: the table row the suite prints.
type Report struct {
	Sent, Received, Missing, Duplicates int
	MissingIDs                          []int
	Elapsed                             time.Duration
	// PeakRSS is turnout's peak resident set size during the scenario, in bytes (0: not
	// measured).
	PeakRSS int64
}

// String formats the report as a table row.
func (r Report) String() string {
	s := fmt.Sprintf("sent=%d received=%d missing=%d duplicates=%d time=%s",
		r.Sent, r.Received, r.Missing, r.Duplicates, r.Elapsed.Round(time.Millisecond))
	if r.PeakRSS > 0 {
		s += fmt.Sprintf(" peak_rss=%.1fMiB", float64(r.PeakRSS)/(1<<20))
	}
	return s
}
