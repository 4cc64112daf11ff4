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
	"sort"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// EventJSON returns a structured-mode CloudEvent (JSON) with the given id and a payload padded
// to about size bytes, the way a device would publish it.
func EventJSON(run string, seq int, size int) []byte {
	ev := map[string]any{
		"specversion":     "1.0",
		"id":              fmt.Sprintf("%s-%d", run, seq),
		"source":          "/reliability/generator",
		"type":            "care.alarm.raised",
		"datacontenttype": "application/json",
		"data":            map[string]any{"seq": seq, "pad": ""},
	}
	b, _ := json.Marshal(ev)
	if pad := size - len(b); pad > 0 {
		ev["data"] = map[string]any{"seq": seq, "pad": strings.Repeat("x", pad)}
		b, _ = json.Marshal(ev)
	}
	return b
}

// Publisher publishes events over MQTT at QoS 1 and counts an event as sent only once the
// broker's PUBACK arrived.
type Publisher struct {
	c paho.Client
}

// NewPublisher connects to broker (tcp://host:port) with a clean session.
func NewPublisher(broker, clientID string) (*Publisher, error) {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectTimeout(5 * time.Second).SetMaxReconnectInterval(time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("publisher connect %s: %v", broker, t.Error())
	}
	return &Publisher{c: c}, nil
}

// Publish sends events first..last-1 to topic with up to window publishes awaiting PUBACK, and
// retries an unconfirmed publish until it is confirmed or deadline passes. It returns the
// sequence numbers the broker confirmed.
func (p *Publisher) Publish(topic, run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	type pending struct {
		seq int
		tok paho.Token
	}
	var confirmed []int
	inflight := make([]pending, 0, window)
	send := func(seq int) pending {
		return pending{seq, p.c.Publish(topic, 1, false, EventJSON(run, seq, size))}
	}
	wait := func(pd pending) error {
		for {
			if pd.tok.WaitTimeout(2*time.Second) && pd.tok.Error() == nil {
				confirmed = append(confirmed, pd.seq)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("publish seq %d not confirmed before deadline: %v", pd.seq, pd.tok.Error())
			}
			pd = send(pd.seq)
		}
	}
	for seq := first; seq < last; seq++ {
		if len(inflight) == window {
			if err := wait(inflight[0]); err != nil {
				return confirmed, err
			}
			inflight = inflight[1:]
		}
		inflight = append(inflight, send(seq))
	}
	for _, pd := range inflight {
		if err := wait(pd); err != nil {
			return confirmed, err
		}
	}
	return confirmed, nil
}

// Close disconnects.
func (p *Publisher) Close() { p.c.Disconnect(250) }

// Validator subscribes at QoS 1 with a persistent session and records every event id it sees.
type Validator struct {
	c    paho.Client
	mu   sync.Mutex
	seen map[string]int
}

// NewValidator connects to broker with a persistent session (clientID fixed) and subscribes to
// topic. The session survives the validator's and the broker's restarts (with persistence).
func NewValidator(broker, clientID, topic string) (*Validator, error) {
	v := &Validator{seen: map[string]int{}}
	handler := func(_ paho.Client, m paho.Message) {
		var ev struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Payload(), &ev); err != nil || ev.ID == "" {
			ev.ID = "malformed:" + string(m.Payload())
		}
		v.mu.Lock()
		v.seen[ev.ID]++
		v.mu.Unlock()
	}
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).SetResumeSubs(true).
		SetConnectTimeout(5 * time.Second).SetMaxReconnectInterval(time.Second).
		SetDefaultPublishHandler(handler).SetOrderMatters(false)
	o.SetOnConnectHandler(func(c paho.Client) { c.Subscribe(topic, 1, handler) })
	v.c = paho.NewClient(o)
	if t := v.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("validator connect %s: %v", broker, t.Error())
	}
	return v, nil
}

// Close disconnects, keeping the session on the broker.
func (v *Validator) Close() { v.c.Disconnect(250) }

// Count returns how many distinct ids and how many deliveries in all were seen.
func (v *Validator) Count() (distinct, total int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range v.seen {
		total += n
	}
	return len(v.seen), total
}

// Report compares what was sent (ids run-seq for seqs) with what was seen.
func (v *Validator) Report(run string, seqs []int) Report {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := Report{Sent: len(seqs)}
	for _, s := range seqs {
		n := v.seen[fmt.Sprintf("%s-%d", run, s)]
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

// WaitFor polls until every seq has been seen or the timeout passes, and returns the report.
func (v *Validator) WaitFor(run string, seqs []int, timeout time.Duration) Report {
	end := time.Now().Add(timeout)
	for {
		r := v.Report(run, seqs)
		if r.Missing == 0 || time.Now().After(end) {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Report is one scenario's outcome: the table row the suite prints.
type Report struct {
	Sent, Received, Missing, Duplicates int
	MissingIDs                          []int
	Elapsed                             time.Duration
}

// String formats the report as a table row.
func (r Report) String() string {
	return fmt.Sprintf("sent=%d received=%d missing=%d duplicates=%d time=%s",
		r.Sent, r.Received, r.Missing, r.Duplicates, r.Elapsed.Round(time.Millisecond))
}
