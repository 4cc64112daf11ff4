package wire

// Encoded decision (little-endian, every string a u32 length then its bytes):
//
//	u8   action: 1 drop, 2 route, 3 fail
//	u32  output count (<= MaxOutputs), then that many str output names
//	str  reason (for fail; may be empty otherwise)
//	u32  mutation count (<= MaxMutations), then per mutation: u8 op, str name, str value
//
// The buffer must end right after the last mutation.

// AppendDecision appends a decision header (action, outputs, reason) followed by the mutation
// count n; the caller then appends n mutations with AppendMutation (or copies them from a buffer
// built earlier).
func AppendDecision(dst []byte, action byte, outputs []string, reason string, n uint32) []byte {
	dst = append(dst, action)
	dst = AppendU32(dst, uint32(len(outputs)))
	for _, o := range outputs {
		dst = AppendStr(dst, o)
	}
	dst = AppendStr(dst, reason)
	return AppendU32(dst, n)
}

// AppendMutation appends one mutation.
func AppendMutation[T ~string | ~[]byte](dst []byte, op byte, name string, value T) []byte {
	dst = append(dst, op)
	dst = AppendStr(dst, name)
	return AppendStr(dst, value)
}

// Mutation is one parsed mutation; Name and Value point into the parsed buffer.
type Mutation struct {
	Op          byte
	Name, Value []byte
}

// DecisionView is a parsed decision. Reuse one across decisions to avoid allocation.
type DecisionView struct {
	buf     []byte
	Action  byte
	outputs []span
	reason  span
	muts    []mspan
	// OutputsRaw is the encoded output list (count and names), usable as a cache key.
	OutputsRaw []byte
}

type mspan struct {
	op          byte
	name, value span
}

// Parse decodes b, checking every length, count, action and op.
func (d *DecisionView) Parse(b []byte) error {
	r := reader{b: b}
	d.buf, d.outputs, d.muts, d.OutputsRaw = nil, d.outputs[:0], d.muts[:0], nil
	d.Action = r.u8()
	if r.err == nil && (d.Action < ActionDrop || d.Action > ActionFail) {
		return &ParseError{"decision action", 0, ErrAction}
	}
	start := r.off
	n := r.u32()
	if r.err == nil && n > MaxOutputs {
		return &ParseError{"decision outputs", r.off, ErrLimit}
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		s, _ := r.str(false)
		d.outputs = append(d.outputs, s)
	}
	end := r.off
	d.reason, _ = r.str(false)
	m := r.u32()
	if r.err == nil && m > MaxMutations {
		return &ParseError{"decision mutations", r.off, ErrLimit}
	}
	for i := uint32(0); i < m && r.err == nil; i++ {
		op := r.u8()
		if r.err == nil && (op < OpSetAttribute || op > OpSetData) {
			return &ParseError{"decision mutation", r.off - 1, ErrOp}
		}
		name, _ := r.str(false)
		val, _ := r.str(false)
		d.muts = append(d.muts, mspan{op, name, val})
	}
	if r.err == nil && r.off != len(b) {
		r.fail(ErrTrail)
	}
	if r.err != nil {
		d.outputs, d.muts = d.outputs[:0], d.muts[:0]
		return &ParseError{"decision", r.off, r.err}
	}
	d.buf = b
	d.OutputsRaw = b[start:end]
	return nil
}

// NumOutputs returns the number of outputs.
func (d *DecisionView) NumOutputs() int { return len(d.outputs) }

// Output returns output name i.
func (d *DecisionView) Output(i int) []byte {
	s := d.outputs[i]
	return d.buf[s.off : s.off+s.n]
}

// Reason returns the failure reason.
func (d *DecisionView) Reason() []byte { return d.buf[d.reason.off : d.reason.off+d.reason.n] }

// NumMutations returns the number of mutations.
func (d *DecisionView) NumMutations() int { return len(d.muts) }

// Mutation returns mutation i.
func (d *DecisionView) Mutation(i int) Mutation {
	m := d.muts[i]
	return Mutation{m.op, d.buf[m.name.off : m.name.off+m.name.n], d.buf[m.value.off : m.value.off+m.value.n]}
}
