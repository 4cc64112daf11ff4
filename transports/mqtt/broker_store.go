package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// The embedded broker's store: one bbolt file, DIR/broker.db, written by one goroutine.
//
// What it holds, in the broker library's own record types (hooks/storage, JSON-encoded):
//
//	clients/<client id>                      storage.Client        sessions that outlive their connection
//	subscriptions/<client id>/<filter>       storage.Subscription  their subscriptions
//	inflight/<client id>/<packet id>         storage.Message       their queued and unacknowledged messages
//	retained/<topic>                         storage.Message       retained messages
//	pending/<sequence>                       storage.Message       accepted publications whose copies may not be stored yet
//
// Invariant: operations reach the file in the order they were queued, and a waiter is released
// only once the transaction holding its operation (and so every operation queued before it)
// committed. A write-ahead record (pending) is therefore always on disk before the PUBACK that
// relies on it, and the delete of a pending record never commits before the subscribers' copies
// queued ahead of it.

const (
	brokerDBFile = "broker.db"
	// pendingKey is the record type (storage.Message.T) of a pending publication, beside the
	// library's own (storage.InflightKey, storage.RetainedKey...).
	pendingKey = "PUB"
)

var (
	bucketClients  = []byte("clients")
	bucketSubs     = []byte("subscriptions")
	bucketInflight = []byte("inflight")
	bucketRetained = []byte("retained")
	bucketPending  = []byte("pending")
	bucketMeta     = []byte("meta") // probe: written after a failed commit when nothing else waits
)

const (
	// storeMaxBatch bounds one transaction (and the memory it holds).
	storeMaxBatch = 4096
	// storeLockWait is how long Open waits for another process to release the file.
	storeLockWait = time.Second
	// storeRetryMax is the longest pause between attempts to write after a failed commit.
	storeRetryMax = 5 * time.Second
)

var errStoreClosed = errors.New("mqtt broker persistence: store closed")

// storeMetrics are the store's metrics, registered once per registry.
type storeMetrics struct {
	commits       prometheus.Counter
	commitSeconds prometheus.Histogram
	errors        prometheus.Counter
	inflight      prometheus.Gauge
	queued        prometheus.Gauge
	replayed      prometheus.Counter
}

func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	m := &storeMetrics{}
	var err error
	if m.commits, err = tmetrics.RegisterOrReuse(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_persistence_commits_total",
		Help: "Transactions the embedded MQTT broker committed (and synced) to its store.",
	})); err != nil {
		return nil, err
	}
	if m.commitSeconds, err = tmetrics.RegisterOrReuse(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "turnout_broker_persistence_commit_seconds",
		Help:    "Time to write and sync one transaction of the embedded MQTT broker's store.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
	})); err != nil {
		return nil, err
	}
	if m.errors, err = tmetrics.RegisterOrReuse(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_persistence_errors_total",
		Help: "Failed writes of the embedded MQTT broker's store (each retried) and changes it could not write because it was closed or a record was too large.",
	})); err != nil {
		return nil, err
	}
	if m.inflight, err = tmetrics.RegisterOrReuse(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "turnout_broker_persistence_inflight_messages",
		Help: "Queued or unacknowledged QoS 1/2 messages of persistent sessions held in the embedded MQTT broker's store.",
	})); err != nil {
		return nil, err
	}
	if m.queued, err = tmetrics.RegisterOrReuse(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "turnout_broker_persistence_queued_operations",
		Help: "Changes waiting to be written to the embedded MQTT broker's store.",
	})); err != nil {
		return nil, err
	}
	if m.replayed, err = tmetrics.RegisterOrReuse(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_persistence_replayed_total",
		Help: "Publications accepted before a crash whose copies might not have been stored, published again at start.",
	})); err != nil {
		return nil, err
	}
	return m, nil
}

// checkStoreDir reports why dir cannot hold the store: a path through a regular file, or a
// directory (dir or, when dir does not exist yet, its nearest existing parent) that this
// process cannot write. It creates nothing but a probe file it removes.
func checkStoreDir(dir string) error {
	p := filepath.Clean(dir)
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			f, err := os.CreateTemp(p, ".turnout-write-check-*")
			if err != nil {
				return fmt.Errorf("%s is not writable: %w", p, err)
			}
			f.Close()
			return os.Remove(f.Name())
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err // e.g. ENOTDIR: a parent is a regular file
		}
		parent := filepath.Dir(p)
		if parent == p {
			return err
		}
		p = parent
	}
}

// op is one change of the file: put val at key, delete key (val nil), or delete the nested
// bucket sub (key nil). Ops are immutable once queued, but for done and cancel, which only the
// writer touches.
type op struct {
	bucket []byte
	sub    []byte // nested bucket (a client id), or nil
	key    []byte
	val    []byte
	done   chan error // a waiter, told once: nil after the commit, or the error
	// cancel drops the op after its waiter was told of a failure: the refused publication
	// it recorded must not be published again.
	cancel bool
}

func (o *op) apply(tx *bbolt.Tx) error {
	b := tx.Bucket(o.bucket)
	if o.sub != nil {
		switch {
		case o.key == nil:
			if err := b.DeleteBucket(o.sub); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
			return nil
		case o.val == nil:
			if b = b.Bucket(o.sub); b == nil {
				return nil
			}
		default:
			nb, err := b.CreateBucketIfNotExists(o.sub)
			if err != nil {
				return err
			}
			b = nb
		}
	}
	if o.val == nil {
		return b.Delete(o.key)
	}
	return b.Put(o.key, o.val)
}

// storedMsg identifies the message a session's packet id holds in the file.
type storedMsg struct {
	created int64
	typ     byte
}

// store is the open file and its writer. Its methods are called by the hooks on client
// goroutines; every change is queued under mu, which also guards the in-memory index of what
// the file holds, so that the index and the queue agree on order.
type store struct {
	db   *bbolt.DB
	path string
	log  *slog.Logger
	m    *storeMetrics

	mu       sync.Mutex
	queue    []*op
	closed   bool
	failed   bool                            // the last commit failed: pending records are refused at once
	inflight map[string]map[uint16]storedMsg // by client id and packet id
	nflight  int
	clients  map[string]bool // client records in the file
	pending  map[int64]bool  // pending records in the file, by sequence
	lostOnce bool            // a change after close was logged

	// failWrites, set by tests, makes every commit fail as a full or broken disk would.
	failWrites atomic.Bool

	wake chan struct{} // cap 1: the queue is not empty, or closed is set
	stop chan struct{} // closed by close: cut a retry pause short
	done chan struct{} // the writer exited
}

// openStore opens (creating it and its directory) the store at path and starts its writer.
func openStore(path string, log *slog.Logger, m *storeMetrics) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("mqtt broker persistence open %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        storeLockWait,
		NoFreelistSync: true, // rebuilt at open: a smaller write per commit
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("mqtt broker persistence open %s: locked by another process (another turnout with the same broker.persistence directory?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("mqtt broker persistence open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketClients, bucketSubs, bucketInflight, bucketRetained, bucketPending, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("mqtt broker persistence open %s: %w", path, err)
	}
	s := &store{
		db: db, path: path, log: log, m: m,
		inflight: map[string]map[uint16]storedMsg{},
		clients:  map[string]bool{},
		pending:  map[int64]bool{},
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	m.inflight.Set(0)
	m.queued.Set(0)
	go s.run()
	return s, nil
}

// close writes what is queued (one attempt if writing fails), stops the writer and closes the
// file. It may be called more than once.
func (s *store) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.signal()
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("mqtt broker persistence close %s: %w", s.path, err)
	}
	return nil
}

// crash stops the store as a SIGKILL would: what is queued and anything after is not written.
// For tests.
func (s *store) crash() {
	s.mu.Lock()
	for _, o := range s.queue {
		if o.done != nil {
			o.done <- errStoreClosed
		}
	}
	s.queue = nil
	s.mu.Unlock()
	_ = s.close()
}

func (s *store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// appendLocked queues o; s.mu is held. After close the change cannot be written: it is
// counted, logged once, and a waiter is told.
func (s *store) appendLocked(o *op) error {
	if s.closed {
		s.m.errors.Inc()
		if !s.lostOnce {
			s.lostOnce = true
			s.log.Warn("mqtt broker persistence: a change after the store was closed is not written", "path", s.path)
		}
		return errStoreClosed
	}
	s.queue = append(s.queue, o)
	s.m.queued.Set(float64(len(s.queue)))
	s.signal()
	return nil
}

// run is the writer: it takes everything queued (up to storeMaxBatch ops), applies it in order
// in one transaction, syncs, then releases the waiters of that batch (group commit). A failed
// commit tells its waiters, keeps its ops (but cancelled ones) in front of the next batch and
// pauses, doubling up to storeRetryMax, so that nothing queued after them commits before them.
func (s *store) run() {
	defer close(s.done)
	var backlog []*op
	pause := 50 * time.Millisecond
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && len(backlog) == 0 && !s.closed {
			s.mu.Unlock()
			<-s.wake
			s.mu.Lock()
		}
		closing := s.closed
		n := min(len(s.queue), max(storeMaxBatch-len(backlog), 0))
		batch := append(backlog, s.queue[:n]...)
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		s.m.queued.Set(float64(len(s.queue)))
		s.mu.Unlock()
		if len(batch) == 0 {
			return // closing, everything written
		}
		err := s.commit(batch)
		if err == nil {
			for _, o := range batch {
				if o.done != nil {
					o.done <- nil
				}
			}
			backlog = nil
			pause = 50 * time.Millisecond
			s.mu.Lock()
			if s.failed {
				s.failed = false
				s.log.Info("mqtt broker persistence: writing again", "path", s.path)
			}
			s.mu.Unlock()
			continue
		}
		s.m.errors.Inc()
		s.log.Error("mqtt broker persistence write failed; retrying", "path", s.path, "changes", len(batch), "err", err)
		backlog = nil
		for _, o := range batch {
			if o.done != nil {
				o.done <- err
				o.done = nil
				if o.cancel {
					continue
				}
			}
			backlog = append(backlog, o)
		}
		s.mu.Lock()
		s.failed = true
		s.mu.Unlock()
		if closing {
			s.mu.Lock()
			rest := len(s.queue)
			for _, o := range s.queue {
				if o.done != nil {
					o.done <- errStoreClosed
				}
			}
			s.queue = nil
			s.mu.Unlock()
			s.log.Error("mqtt broker persistence: changes not written at close", "path", s.path, "changes", len(backlog)+rest)
			return
		}
		if len(backlog) == 0 {
			// Nothing to retry, and pending records are refused while failed: write a probe
			// so that the store is found working again.
			backlog = []*op{{bucket: bucketMeta, key: []byte("probe"), val: []byte(time.Now().UTC().Format(time.RFC3339Nano))}}
		}
		select {
		case <-time.After(pause):
		case <-s.stop:
		}
		pause = min(2*pause, storeRetryMax)
	}
}

func (s *store) commit(batch []*op) error {
	start := time.Now()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if s.failWrites.Load() {
			return errors.New("simulated write failure")
		}
		for _, o := range batch {
			if err := o.apply(tx); err != nil {
				return fmt.Errorf("%s %q: %w", o.bucket, o.key, err)
			}
		}
		return nil
	})
	s.m.commitSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("mqtt broker persistence write %s: %w", s.path, err)
	}
	s.m.commits.Inc()
	return nil
}

// fits reports whether key (and the nested bucket name) can be stored: bbolt keys are at most
// bbolt.MaxKeySize bytes, MQTT topics and client ids up to 65535. A change that does not fit is
// counted and logged, not written.
func (s *store) fits(sub, key []byte) bool {
	if len(sub) <= bbolt.MaxKeySize && len(key) <= bbolt.MaxKeySize {
		return true
	}
	s.m.errors.Inc()
	s.log.Error("mqtt broker persistence: client id or topic too long to store", "max_bytes", bbolt.MaxKeySize)
	return false
}

func packetKey(id uint16) []byte { return binary.BigEndian.AppendUint16(nil, id) }

func seqKey(seq int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(seq)) }

// messageRecord is pk as the library's storage record, the topic alias left out (it belongs to
// one connection).
func messageRecord(t, client string, pk packets.Packet) storage.Message {
	return storage.Message{
		T:           t,
		Client:      client,
		Origin:      pk.Origin,
		PacketID:    pk.PacketID,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat:          pk.Properties.PayloadFormat,
			PayloadFormatFlag:      pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval:  pk.Properties.MessageExpiryInterval,
			ContentType:            pk.Properties.ContentType,
			ResponseTopic:          pk.Properties.ResponseTopic,
			CorrelationData:        pk.Properties.CorrelationData,
			SubscriptionIdentifier: pk.Properties.SubscriptionIdentifier,
			User:                   pk.Properties.User,
		},
	}
}

// putPending writes pk, a publication being accepted, as a pending record and returns once it
// is committed. While writing fails it refuses at once.
func (s *store) putPending(pk packets.Packet) error {
	rec := messageRecord(pendingKey, "", pk)
	rec.ID = strconv.FormatInt(pk.Created, 10)
	rec.Properties.SubscriptionIdentifier = nil
	val, err := rec.MarshalBinary()
	if err != nil {
		return fmt.Errorf("mqtt broker persistence encode: %w", err)
	}
	done := make(chan error, 1) // kept here: the writer clears o.done once it told
	o := &op{bucket: bucketPending, key: seqKey(pk.Created), val: val, done: done, cancel: true}
	s.mu.Lock()
	if s.failed {
		s.mu.Unlock()
		return fmt.Errorf("mqtt broker persistence write %s: failing, see the earlier error", s.path)
	}
	if err := s.appendLocked(o); err != nil {
		s.mu.Unlock()
		return err
	}
	s.pending[pk.Created] = true
	s.mu.Unlock()
	if err := <-done; err != nil {
		s.mu.Lock()
		delete(s.pending, pk.Created)
		s.mu.Unlock()
		return err
	}
	return nil
}

// donePending deletes the pending record seq, if there is one, after everything queued so far.
func (s *store) donePending(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.pending[seq] {
		return
	}
	delete(s.pending, seq)
	_ = s.appendLocked(&op{bucket: bucketPending, key: seqKey(seq)})
}

// putClient writes cl's session record.
func (s *store) putClient(cl *mochi.Client) {
	if !s.fits(nil, []byte(cl.ID)) {
		return
	}
	props := cl.Properties.Props
	rec := storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		// The will belongs to a connection: none is restored.
	}
	val, err := rec.MarshalBinary()
	if err != nil {
		s.log.Error("mqtt broker persistence encode", "client", cl.ID, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appendLocked(&op{bucket: bucketClients, key: []byte(cl.ID), val: val}) == nil {
		s.clients[cl.ID] = true
	}
}

// dropClient deletes everything stored of the session id: its record, subscriptions and
// messages.
func (s *store) dropClient(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[id] && s.inflight[id] == nil {
		return
	}
	delete(s.clients, id)
	s.nflight -= len(s.inflight[id])
	s.m.inflight.Set(float64(s.nflight))
	delete(s.inflight, id)
	_ = s.appendLocked(&op{bucket: bucketClients, key: []byte(id)})
	_ = s.appendLocked(&op{bucket: bucketSubs, sub: []byte(id)})
	_ = s.appendLocked(&op{bucket: bucketInflight, sub: []byte(id)})
}

// putSubscriptions writes the granted subscriptions of pk (codes below 0x80) and returns once
// they are committed: a SUBACK follows, after which the subscriber counts on them.
func (s *store) putSubscriptions(cl *mochi.Client, pk packets.Packet, codes []byte) error {
	var ops []*op
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code || !s.fits([]byte(cl.ID), []byte(f.Filter)) {
			continue
		}
		val, err := storage.Subscription{
			ID:                cl.ID + ":" + f.Filter,
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               codes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		}.MarshalBinary()
		if err != nil {
			return fmt.Errorf("mqtt broker persistence encode: %w", err)
		}
		ops = append(ops, &op{bucket: bucketSubs, sub: []byte(cl.ID), key: []byte(f.Filter), val: val})
	}
	if len(ops) == 0 {
		return nil
	}
	done := make(chan error, 1)
	ops[len(ops)-1].done = done // the commit of the last is the commit of all
	s.mu.Lock()
	for _, o := range ops {
		if err := s.appendLocked(o); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Unlock()
	return <-done
}

// deleteSubscriptions deletes the subscriptions of pk.
func (s *store) deleteSubscriptions(cl *mochi.Client, pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[cl.ID] {
		return
	}
	for _, f := range pk.Filters {
		_ = s.appendLocked(&op{bucket: bucketSubs, sub: []byte(cl.ID), key: []byte(f.Filter)})
	}
}

// putInflight writes pk, a message cl's session holds under pk.PacketID, unless the file
// holds it already (a resend).
func (s *store) putInflight(cl *mochi.Client, pk packets.Packet) {
	if !s.fits([]byte(cl.ID), nil) {
		return
	}
	want := storedMsg{created: pk.Created, typ: pk.FixedHeader.Type}
	s.mu.Lock()
	if got, ok := s.inflight[cl.ID][pk.PacketID]; ok && got == want {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	rec := messageRecord(storage.InflightKey, cl.ID, pk)
	rec.FixedHeader.Dup = false
	val, err := rec.MarshalBinary()
	if err != nil {
		s.log.Error("mqtt broker persistence encode", "client", cl.ID, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.inflight[cl.ID]
	if m == nil {
		m = map[uint16]storedMsg{}
		s.inflight[cl.ID] = m
	}
	if _, ok := m[pk.PacketID]; !ok {
		s.nflight++
		s.m.inflight.Set(float64(s.nflight))
	}
	m[pk.PacketID] = want
	_ = s.appendLocked(&op{bucket: bucketInflight, sub: []byte(cl.ID), key: packetKey(pk.PacketID), val: val})
}

// deleteInflight deletes the message of cl's session under id: acknowledged, or dropped. The
// library frees the id in memory before it calls the hook, so another goroutine may already
// have given the id to a new message; then the delete is skipped. That check and the queueing
// happen under s.mu, which putInflight takes after the library stored the new message, so the
// delete can never be queued after the new message's put.
func (s *store) deleteInflight(cl *mochi.Client, id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.inflight[cl.ID]
	if _, ok := m[id]; !ok {
		return
	}
	if _, busy := cl.State.Inflight.Get(id); busy {
		return
	}
	delete(m, id)
	if len(m) == 0 {
		delete(s.inflight, cl.ID)
	}
	s.nflight--
	s.m.inflight.Set(float64(s.nflight))
	_ = s.appendLocked(&op{bucket: bucketInflight, sub: []byte(cl.ID), key: packetKey(id)})
}

// putRetained writes (or, for an empty payload, deletes) the retained message of pk's topic.
func (s *store) putRetained(cl *mochi.Client, pk packets.Packet) {
	if !s.fits(nil, []byte(pk.TopicName)) {
		return
	}
	o := &op{bucket: bucketRetained, key: []byte(pk.TopicName)}
	if len(pk.Payload) > 0 {
		rec := messageRecord(storage.RetainedKey, cl.ID, pk)
		rec.ID = pk.TopicName
		val, err := rec.MarshalBinary()
		if err != nil {
			s.log.Error("mqtt broker persistence encode", "topic", pk.TopicName, "err", err)
			return
		}
		o.val = val
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.appendLocked(o)
}

func (s *store) deleteRetained(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.appendLocked(&op{bucket: bucketRetained, key: []byte(topic)})
}

// each calls fn with every value of bucket (and, when nested, the name of its nested bucket).
func (s *store) each(bucket []byte, nested bool, fn func(sub, k, v []byte) error) error {
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucket)
		if !nested {
			return b.ForEach(func(k, v []byte) error { return fn(nil, k, v) })
		}
		return b.ForEachBucket(func(sub []byte) error {
			return b.Bucket(sub).ForEach(func(k, v []byte) error { return fn(sub, k, v) })
		})
	})
	if err != nil {
		return fmt.Errorf("mqtt broker persistence read %s: %s: %w", s.path, bucket, err)
	}
	return nil
}

func (s *store) readClients() ([]storage.Client, error) {
	var out []storage.Client
	err := s.each(bucketClients, false, func(_, k, v []byte) error {
		var c storage.Client
		if err := c.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
		out = append(out, c)
		return nil
	})
	s.mu.Lock()
	for _, c := range out {
		s.clients[c.ID] = true
	}
	s.mu.Unlock()
	return out, err
}

func (s *store) readSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := s.each(bucketSubs, true, func(sub, k, v []byte) error {
		var r storage.Subscription
		if err := r.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("%q %q: %w", sub, k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// readInflight returns the stored messages of every session, indexes them, and returns the
// highest publish sequence (Created) among them.
func (s *store) readInflight() ([]storage.Message, int64, error) {
	var out []storage.Message
	err := s.each(bucketInflight, true, func(sub, k, v []byte) error {
		var r storage.Message
		if err := r.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("%q %x: %w", sub, k, err)
		}
		out = append(out, r)
		return nil
	})
	var top int64
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range out {
		m := s.inflight[r.Client]
		if m == nil {
			m = map[uint16]storedMsg{}
			s.inflight[r.Client] = m
		}
		if _, ok := m[r.PacketID]; !ok {
			s.nflight++
		}
		m[r.PacketID] = storedMsg{created: r.Created, typ: r.FixedHeader.Type}
		if r.FixedHeader.Type == packets.Publish {
			top = max(top, r.Created)
		}
	}
	s.m.inflight.Set(float64(s.nflight))
	return out, top, err
}

func (s *store) readRetained() ([]storage.Message, error) {
	var out []storage.Message
	err := s.each(bucketRetained, false, func(_, k, v []byte) error {
		var r storage.Message
		if err := r.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("%q: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// readPending returns the pending records in publish order and marks them as in the file.
func (s *store) readPending() ([]storage.Message, error) {
	var out []storage.Message
	err := s.each(bucketPending, false, func(_, k, v []byte) error {
		var r storage.Message
		if err := r.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("%x: %w", k, err)
		}
		r.Created = int64(binary.BigEndian.Uint64(k))
		out = append(out, r)
		return nil
	})
	s.mu.Lock()
	for _, r := range out {
		s.pending[r.Created] = true
	}
	s.mu.Unlock()
	return out, err
}
