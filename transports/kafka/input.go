package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

var (
	_ engine.Source  = (*Input)(nil)
	_ engine.Readier = (*Input)(nil)
)

// Input is one member of a Kafka consumer group. A partition's offset is committed only up to
// its first record that is not settled (see the package documentation for the rules).
//
// Goroutines: the poll goroutine fetches and calls Dispatch; the commit goroutine commits every
// commit_interval; franz-go calls the partition callbacks (assigned, revoked, lost) on its group
// goroutine, and only while the poll goroutine holds no fetched records (BlockRebalanceOnPoll).
// The engine calls the SettleFunc on its own goroutines; a transient failure starts a timer
// whose goroutine dispatches the record again.
type Input struct {
	name string
	cfg  InputConfig
	log  *slog.Logger
	conn *connState

	heldGauge prometheus.Gauge   // turnout_kafka_input_held{name}: holding
	retries   prometheus.Counter // turnout_kafka_input_retries_total{name}

	mu       sync.Mutex // guards everything below
	parts    map[topicPartition]*partition
	holding  int           // records read and not yet committable: the in-flight bound
	freed    chan struct{} // signalled (buffered 1) when holding drops
	busy     int           // records with the engine: dispatched, not settled
	drained  chan struct{} // closed and replaced when busy drops to 0
	retrying map[*held]*time.Timer
	started  bool
	closed   bool
	cl       *kgo.Client
	d        engine.Dispatcher
	runCtx   context.Context
	stop     context.CancelFunc
	workers  sync.WaitGroup
}

type topicPartition struct {
	topic     string
	partition int32
}

// partition is the commit state of one assigned partition.
type partition struct {
	tp topicPartition
	// recs are the records read, oldest first, from the first one not settled on: the commit
	// cannot move past recs[0].
	recs []*held
	// next is the offset to commit: the one after the last record of the settled prefix.
	next      kgo.EpochOffset
	committed int64 // the last offset committed, -1 before the first commit
	// gone is set when the partition was revoked or lost, or replaced after the client
	// rewound it: its records' settlements no longer move any commit.
	gone bool
}

// held is one record read from a partition. Its fields are guarded by Input.mu.
type held struct {
	r        *kgo.Record
	p        *partition
	state    heldState
	failures int // transient failures so far
}

type heldState uint8

const (
	heldNew      heldState = iota // read, not (yet) with the engine
	heldEngine                    // dispatched, waiting for the settlement
	heldRetry                     // failed transiently, waiting for its timer
	heldSettled                   // settled with nil or a permanent error
	heldReleased                  // no longer counted in holding
)

// NewInput is the engine.InputFactory of the "kafka" input type. It validates the configuration
// (errors name the key) and registers the metrics; it does not connect (Start does).
func NewInput(name string, decode engine.Decoder, deps engine.Deps) (engine.Source, error) {
	var cfg InputConfig
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	return newInput(name, cfg, deps)
}

func newInput(name string, cfg InputConfig, deps engine.Deps) (*Input, error) {
	if err := cfg.validate(); err != nil {
		return nil, err // names the key; the caller adds the input's name and line
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("input", name, "transport", "kafka", "group", cfg.Group)
	conn, err := newConnState(deps.Registerer, name, log)
	if err != nil {
		return nil, err
	}
	heldVec, err := tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "turnout_kafka_input_held",
		Help: "Records a Kafka input read and cannot commit yet (with the engine, waiting for a retry, or settled behind an unsettled one): what a crash would replay.",
	}, []string{"name"}))
	if err != nil {
		return nil, fmt.Errorf("kafka input %s: %w", name, err)
	}
	retries, err := tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_kafka_input_retries_total",
		Help: "Records a Kafka input dispatched again after the engine failed them transiently.",
	}, []string{"name"}))
	if err != nil {
		return nil, fmt.Errorf("kafka input %s: %w", name, err)
	}
	return &Input{
		heldGauge: heldVec.WithLabelValues(name),
		retries:   retries.WithLabelValues(name),
		name:      name,
		cfg:       cfg,
		log:       log,
		conn:      conn,
		parts:     map[topicPartition]*partition{},
		freed:     make(chan struct{}, 1),
		drained:   make(chan struct{}),
		retrying:  map[*held]*time.Timer{},
	}, nil
}

// Ready reports whether the latest connection attempt to a broker succeeded.
func (in *Input) Ready() bool { return in.conn.Ready() }

// Start creates the group member and begins polling and dispatching to d on the input's
// goroutines; it does not wait for the brokers. Brokers that are down do not fail it: the client
// keeps trying (Ready tells). The engine calls it once.
func (in *Input) Start(_ context.Context, d engine.Dispatcher) error {
	in.mu.Lock()
	if in.started || in.closed {
		in.mu.Unlock()
		return fmt.Errorf("kafka input %s: started twice or after Close", in.name)
	}
	in.started = true
	in.mu.Unlock()
	start := kgo.NewOffset().AtStart()
	if in.cfg.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	var static []kgo.Opt
	if in.cfg.InstanceID != "" {
		static = append(static, kgo.InstanceID(in.cfg.InstanceID))
	}
	cl, err := newClient(&in.cfg.ConnectionConfig, in.conn, append(static,
		kgo.ConsumerGroup(in.cfg.Group),
		kgo.ConsumeTopics(in.cfg.Topics...),
		kgo.ConsumeStartOffset(start),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(in.assigned),
		kgo.OnPartitionsRevoked(in.revoked),
		kgo.OnPartitionsLost(in.lost),
		kgo.FetchMaxWait(in.cfg.FetchMaxWait),
		kgo.SessionTimeout(in.cfg.SessionTimeout),
		// Heartbeats every 3s (the usual interval), or often enough for a short session.
		kgo.HeartbeatInterval(min(3*time.Second, in.cfg.SessionTimeout/3)),
	)...)
	if err != nil {
		return fmt.Errorf("kafka input %s: %w", in.name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	in.mu.Lock()
	in.cl, in.d, in.runCtx, in.stop = cl, d, runCtx, cancel
	in.mu.Unlock()
	in.workers.Add(2)
	go in.poll(runCtx, cl, d)
	go in.commitLoop(runCtx, cl)
	return nil
}

// Close stops fetching, drops the retries not yet due, waits (until ctx ends) for the engine to
// settle the records it holds, commits what is settled and leaves the group. Records not
// settled by then are read again by the group's next owner of their partition; settlements
// after Close are dropped.
func (in *Input) Close(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	cl := in.cl
	for h, t := range in.retrying {
		t.Stop()
		delete(in.retrying, h)
		in.releaseLocked(h)
	}
	in.mu.Unlock()
	if cl == nil {
		return nil
	}
	in.stop()
	in.workers.Wait()
	var err error
	for {
		in.mu.Lock()
		n, ch := in.busy, in.drained
		in.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ch:
			continue
		case <-ctx.Done():
			err = fmt.Errorf("kafka input %s close: %d records unsettled: %w", in.name, n, ctx.Err())
		}
		break
	}
	// Commit even when ctx is over: what is settled need not be read again.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.cfg.ConnectTimeout)
	defer cancel()
	if cerr := in.commit(cctx, cl, nil); cerr != nil && err == nil {
		err = fmt.Errorf("kafka input %s close: %w", in.name, cerr)
	}
	in.mu.Lock()
	for _, p := range in.parts {
		in.dropLocked(p)
	}
	in.mu.Unlock()
	cl.Close() // leaves the group
	return err
}

// poll is the fetch loop, on its own goroutine until ctx ends: it reads at most as many records
// as the in-flight bound has room for, dispatches them in order and then lets a pending
// rebalance go ahead.
func (in *Input) poll(ctx context.Context, cl *kgo.Client, d engine.Dispatcher) {
	defer in.workers.Done()
	for {
		room := in.room(ctx)
		if room == 0 {
			return // ctx ended
		}
		fs := cl.PollRecords(ctx, room)
		if ctx.Err() != nil || fs.IsClientClosed() {
			cl.AllowRebalance()
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			in.log.Warn("kafka fetch failed; the client retries", "topic", topic, "partition", p, "error", err)
		})
		var stopErr error
		fs.EachRecord(func(r *kgo.Record) {
			if stopErr == nil {
				stopErr = in.take(ctx, d, r)
			}
		})
		cl.AllowRebalance()
		if stopErr != nil {
			if errors.Is(stopErr, engine.ErrClosed) {
				// The engine is shutting down and Close follows; keep the client, so that the
				// settlements of the records it still drains are committed.
				<-ctx.Done()
			}
			return
		}
	}
}

// room waits until the in-flight bound has room and returns how much, 0 when ctx ended.
func (in *Input) room(ctx context.Context) int {
	for {
		in.mu.Lock()
		n := in.cfg.MaxInFlight - in.holding
		in.mu.Unlock()
		if n > 0 {
			return n
		}
		select {
		case <-in.freed:
		case <-ctx.Done():
			return 0
		}
	}
}

// take tracks r in its partition and dispatches it. A record of a partition this member does
// not hold is skipped: its owner reads it.
func (in *Input) take(ctx context.Context, d engine.Dispatcher, r *kgo.Record) error {
	tp := topicPartition{r.Topic, r.Partition}
	in.mu.Lock()
	p := in.parts[tp]
	if p == nil || in.closed {
		in.mu.Unlock()
		in.log.Debug("kafka record of a partition not held; skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
		return nil
	}
	if n := len(p.recs); (n > 0 && r.Offset <= p.recs[n-1].r.Offset) || r.Offset < p.next.Offset {
		// The client went back (it reset the partition after a data loss): what this
		// partition state would commit no longer follows the log. Start it afresh.
		in.log.Warn("kafka partition rewound; records may be dispatched again", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
		committed := p.committed
		in.dropLocked(p)
		p = &partition{tp: tp, committed: committed, next: kgo.EpochOffset{Epoch: -1, Offset: -1}}
		in.parts[tp] = p
	}
	h := &held{r: r, p: p, state: heldEngine}
	p.recs = append(p.recs, h)
	in.holding++
	in.heldGauge.Inc()
	in.busy++
	in.mu.Unlock()
	if err := d.Dispatch(ctx, decode(r), func(err error) { in.settle(h, err) }); err != nil {
		in.mu.Lock()
		h.state = heldNew // never settled: the commit stays before it
		in.idleLocked()
		in.mu.Unlock()
		return fmt.Errorf("kafka dispatch %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return nil
}

// settle is the engine.SettleFunc of every dispatched record. nil and a permanent error settle
// the record, so the commit may move past it; any other error dispatches it again after the
// retry delay. Safe from any goroutine; it does not wait for the brokers.
func (in *Input) settle(h *held, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.idleLocked()
	if h.state != heldEngine {
		return // released by Close
	}
	switch {
	case err != nil && !engine.IsPermanent(err):
		if in.closed || h.p.gone {
			// Not dispatched again here: whoever reads the partition next reads it again.
			h.state = heldNew
			in.releaseLocked(h)
			return
		}
		h.failures++
		h.state = heldRetry
		delay := in.retryDelay(h.failures)
		in.retrying[h] = time.AfterFunc(delay, func() { in.retry(h) })
		in.log.Debug("kafka record failed; dispatched again later", "topic", h.r.Topic, "partition", h.r.Partition,
			"offset", h.r.Offset, "failures", h.failures, "retry_in", delay, "error", err)
	default:
		h.state = heldSettled
		if h.p.gone {
			in.releaseLocked(h)
			return
		}
		in.advanceLocked(h.p)
	}
}

// retry dispatches h again, on its timer's goroutine.
func (in *Input) retry(h *held) {
	in.mu.Lock()
	delete(in.retrying, h)
	if h.state != heldRetry {
		in.mu.Unlock()
		return
	}
	if in.closed || h.p.gone {
		h.state = heldNew
		in.releaseLocked(h)
		in.mu.Unlock()
		return
	}
	h.state = heldEngine
	in.busy++
	in.retries.Inc()
	ctx, d := in.runCtx, in.d
	in.mu.Unlock()
	if err := d.Dispatch(ctx, decode(h.r), func(err error) { in.settle(h, err) }); err != nil {
		in.mu.Lock()
		in.idleLocked()
		h.state = heldNew
		in.releaseLocked(h)
		in.mu.Unlock()
	}
}

// retryDelay is the wait after the n-th transient failure of a record: retry_min_delay doubled
// per earlier failure, at most retry_max_delay.
func (in *Input) retryDelay(n int) time.Duration {
	return doubling(in.cfg.RetryMinDelay, in.cfg.RetryMaxDelay, n)
}

// advanceLocked moves p's commit past its settled prefix and frees the room those records held.
func (in *Input) advanceLocked(p *partition) {
	i := 0
	for ; i < len(p.recs) && p.recs[i].state == heldSettled; i++ {
		r := p.recs[i].r
		p.next = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		in.releaseLocked(p.recs[i])
	}
	p.recs = p.recs[i:]
}

// releaseLocked stops counting h against the in-flight bound.
func (in *Input) releaseLocked(h *held) {
	if h.state == heldReleased || h.state == heldEngine {
		return // a record with the engine is released when it is settled
	}
	h.state = heldReleased
	in.holding--
	in.heldGauge.Dec()
	select {
	case in.freed <- struct{}{}:
	default:
	}
}

// idleLocked records that one record came back from the engine.
func (in *Input) idleLocked() {
	in.busy--
	if in.busy == 0 {
		close(in.drained)
		in.drained = make(chan struct{})
	}
}

// dropLocked forgets p: its records' settlements no longer move a commit, and the records not
// with the engine stop counting against the bound (those with it do when they are settled).
func (in *Input) dropLocked(p *partition) {
	p.gone = true
	for _, h := range p.recs {
		if t := in.retrying[h]; t != nil {
			t.Stop()
			delete(in.retrying, h)
		}
		in.releaseLocked(h)
	}
	p.recs = nil
	if in.parts[p.tp] == p {
		delete(in.parts, p.tp)
	}
}

// assigned starts the commit state of newly assigned partitions. Called by franz-go.
func (in *Input) assigned(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for topic, ps := range tps {
		for _, n := range ps {
			tp := topicPartition{topic, n}
			if old := in.parts[tp]; old != nil {
				in.dropLocked(old)
			}
			in.parts[tp] = &partition{tp: tp, committed: -1, next: kgo.EpochOffset{Epoch: -1, Offset: -1}}
		}
	}
	in.log.Info("kafka partitions assigned", "partitions", fmt.Sprint(tps))
}

// revoked commits the settled prefix of the revoked partitions and forgets them; records still
// unsettled there are read again by the partitions' next owner. Called by franz-go.
func (in *Input) revoked(ctx context.Context, cl *kgo.Client, tps map[string][]int32) {
	if len(tps) == 0 {
		return
	}
	set := map[topicPartition]bool{}
	for topic, ps := range tps {
		for _, n := range ps {
			set[topicPartition{topic, n}] = true
		}
	}
	cctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
	defer cancel()
	if err := in.commit(cctx, cl, set); err != nil {
		in.log.Warn("kafka commit on revocation failed; the next owner reads those records again", "error", err)
	}
	in.mu.Lock()
	for tp := range set {
		if p := in.parts[tp]; p != nil {
			in.dropLocked(p)
		}
	}
	in.mu.Unlock()
	in.log.Info("kafka partitions revoked", "partitions", fmt.Sprint(tps))
}

// lost forgets partitions the group took away without a revocation (the member's session
// expired): a commit would fail now. Called by franz-go.
func (in *Input) lost(_ context.Context, _ *kgo.Client, tps map[string][]int32) {
	if len(tps) == 0 {
		return // a fatal group error before any assignment
	}
	in.mu.Lock()
	for topic, ps := range tps {
		for _, n := range ps {
			if p := in.parts[topicPartition{topic, n}]; p != nil {
				in.dropLocked(p)
			}
		}
	}
	in.mu.Unlock()
	in.log.Warn("kafka partitions lost; their unsettled records are read again", "partitions", fmt.Sprint(tps))
}

// commitLoop commits every commit_interval, on its own goroutine until ctx ends.
func (in *Input) commitLoop(ctx context.Context, cl *kgo.Client) {
	defer in.workers.Done()
	t := time.NewTicker(in.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
			if err := in.commit(cctx, cl, nil); err != nil && ctx.Err() == nil {
				in.log.Warn("kafka commit failed; retried at the next interval", "error", err)
			}
			cancel()
		}
	}
}

// commit commits the settled prefix of every held partition (of those in only, when only is not
// nil) whose commit moved. It returns the first error of the request or of a partition.
func (in *Input) commit(ctx context.Context, cl *kgo.Client, only map[topicPartition]bool) error {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	var parts []*partition
	in.mu.Lock()
	for tp, p := range in.parts {
		if (only != nil && !only[tp]) || p.next.Offset <= p.committed {
			continue
		}
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.topic][tp.partition] = p.next
		parts = append(parts, p)
	}
	in.mu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	var cerr error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		cerr = commitErr(resp)
	})
	if cerr != nil {
		return fmt.Errorf("kafka commit group %s: %w", in.cfg.Group, cerr)
	}
	in.mu.Lock()
	for _, p := range parts {
		if o := offsets[p.tp.topic][p.tp.partition].Offset; o > p.committed {
			p.committed = o
		}
	}
	in.mu.Unlock()
	return nil
}

// commitErr returns the first partition error of an offset commit response.
func commitErr(resp *kmsg.OffsetCommitResponse) error {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}
