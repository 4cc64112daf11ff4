package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// The segment log on disk.
//
// A spool directory holds segment files named after the sequence number of their first record,
// "<20 digits>.seg", a cursor file and a lock file. A segment starts with the 8-byte magic
// segMagic, followed by records:
//
//	offset size
//	0      4    payload length n (little endian)
//	4      4    CRC-32C (Castagnoli) over bytes 0-3, 8-23 and the payload
//	8      8    sequence number: one more than the record before it, across segments (a gap
//	            only where a damaged record was discarded)
//	16     8    spool time, Unix nanoseconds
//	24     n    payload: the event in the CloudEvents JSON format
//
// The CRC covers the length and the sequence number as well as the payload, so neither a torn
// write nor a region of zeroes can pass for a record (the CRC-32C of zeroes is not zero once the
// sequence number, never 0, is in it). Records are only ever appended; a segment is deleted
// whole, once every record in it has been confirmed by the output.

const (
	segMagic    = "TSPOOL01"
	segSuffix   = ".seg"
	hdrSize     = 24
	cursorFile  = "cursor"
	lockFile    = "LOCK"
	cursorMagic = "TSPCUR01"
	// maxPayload bounds one record; a longer length field is damage, not data.
	maxPayload = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errTorn: the bytes end inside a record (a write cut short).
	errTorn = errors.New("record cut short")
	// errDamaged: a record's length, sequence number or CRC is wrong.
	errDamaged = errors.New("record damaged")
)

// record is one decoded record; data aliases the buffer it was read from.
type record struct {
	seq  uint64
	at   int64
	data []byte
}

// appendRecord appends the encoding of one record to dst.
func appendRecord(dst []byte, seq uint64, at int64, data []byte) []byte {
	var h [hdrSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(data)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint64(h[16:], uint64(at))
	binary.LittleEndian.PutUint32(h[4:], recordCRC(h[:], data))
	dst = append(dst, h[:]...)
	return append(dst, data...)
}

func recordCRC(h, data []byte) uint32 {
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, h[8:hdrSize])
	return crc32.Update(crc, castagnoli, data)
}

// decodeRecord decodes the record at the start of b, which must have a sequence number above
// prev. It returns the record and its encoded size, errTorn when b ends inside the record, or
// errDamaged. It never reads past b and never panics, whatever b holds.
func decodeRecord(b []byte, prev uint64) (record, int, error) {
	if len(b) < hdrSize {
		return record{}, 0, errTorn
	}
	n := binary.LittleEndian.Uint32(b[0:])
	seq := binary.LittleEndian.Uint64(b[8:])
	if n > maxPayload || seq <= prev {
		return record{}, 0, errDamaged
	}
	size := hdrSize + int(n)
	if len(b) < size {
		return record{}, 0, errTorn
	}
	if binary.LittleEndian.Uint32(b[4:]) != recordCRC(b[:hdrSize], b[hdrSize:size]) {
		return record{}, 0, errDamaged
	}
	return record{seq: seq, at: int64(binary.LittleEndian.Uint64(b[16:])), data: b[hdrSize:size]}, size, nil
}

// scanner reads the records of one segment through a buffer, from an io.ReaderAt, up to limit
// bytes of the file (the part known to be written). It is used by one goroutine.
type scanner struct {
	r      io.ReaderAt
	limit  int64 // bytes of the file that may be read
	off    int64 // offset of the next record
	prev   uint64
	buf    []byte // file bytes [bufOff, bufOff+len(buf))
	bufOff int64
}

// scanChunk is how much the scanner reads at a time.
const scanChunk = 256 << 10

// window returns the file bytes [off, min(off+n, limit)), reading them when the buffer does not
// hold them. The result may be shorter than n only at limit.
func (s *scanner) window(off int64, n int) ([]byte, error) {
	end := min(off+int64(n), s.limit)
	if off >= s.bufOff && end <= s.bufOff+int64(len(s.buf)) {
		return s.buf[off-s.bufOff : end-s.bufOff], nil
	}
	want := int(min(max(int64(n), scanChunk), s.limit-off))
	if cap(s.buf) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	got, err := s.r.ReadAt(s.buf, off)
	s.buf, s.bufOff = s.buf[:got], off
	if got < want && err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return s.buf[:min(int64(got), end-off)], nil
}

// next returns the next record, io.EOF at limit, errTorn or errDamaged for bytes that are not
// a record (the offset stays on them), or a read error. The record's data is valid until the
// next call.
func (s *scanner) next() (record, error) {
	if s.off >= s.limit {
		return record{}, io.EOF
	}
	n, err := s.plausible(s.off)
	if err != nil {
		return record{}, err
	}
	b, err := s.window(s.off, hdrSize+n)
	if err != nil {
		return record{}, err
	}
	rec, size, err := decodeRecord(b, s.prev)
	if err != nil {
		return record{}, err
	}
	s.off += int64(size)
	s.prev = rec.seq
	return rec, nil
}

// plausible checks the header at off against prev and limit and returns the payload length. A
// record longer than the scanner's chunk has its CRC checked as a stream first, so that a damaged
// length never makes the scanner read (and allocate) megabytes it will throw away.
func (s *scanner) plausible(off int64) (int, error) {
	h, err := s.window(off, hdrSize)
	if err != nil {
		return 0, err
	}
	if len(h) < hdrSize {
		return 0, errTorn
	}
	n := binary.LittleEndian.Uint32(h[0:])
	if n > maxPayload || binary.LittleEndian.Uint64(h[8:]) <= s.prev {
		return 0, errDamaged
	}
	if off+hdrSize+int64(n) > s.limit {
		return 0, errTorn
	}
	if hdrSize+int(n) > scanChunk {
		want := binary.LittleEndian.Uint32(h[4:])
		crc := crc32.Update(0, castagnoli, h[0:4])
		crc = crc32.Update(crc, castagnoli, h[8:hdrSize])
		var chunk [32 << 10]byte
		for at, end := off+hdrSize, off+hdrSize+int64(n); at < end; {
			k, err := s.r.ReadAt(chunk[:min(int64(len(chunk)), end-at)], at)
			if k == 0 && err != nil {
				return 0, err
			}
			crc = crc32.Update(crc, castagnoli, chunk[:k])
			at += int64(k)
		}
		if crc != want {
			return 0, errDamaged
		}
	}
	return int(n), nil
}

// resync looks for the next whole, valid record after the damaged bytes at s.off and moves
// there; it reports whether it found one. A false match needs a CRC-32C collision on top of a
// plausible length and sequence number.
func (s *scanner) resync() (bool, error) {
	for p := s.off + 1; p+hdrSize <= s.limit; p++ {
		n, err := s.plausible(p)
		if errors.Is(err, errTorn) || errors.Is(err, errDamaged) {
			continue
		}
		if err != nil {
			return false, err
		}
		b, err := s.window(p, hdrSize+n)
		if err != nil {
			return false, err
		}
		if _, _, err := decodeRecord(b, s.prev); err == nil {
			s.off = p
			return true, nil
		}
	}
	return false, nil
}

// segment is one segment file. first is fixed; last and size grow as the writer appends.
type segment struct {
	first uint64 // the sequence number in the file name; records have seq >= first
	last  uint64 // the last record's seq; first-1 while the segment has none
	size  int64  // bytes written and visible to the reader, magic included
	path  string
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// recovery is what opening a spool directory found.
type recovery struct {
	segs []*segment
	// acked is the cursor: every record with seq <= acked was confirmed.
	acked uint64
	// pending counts the records above acked.
	pending int64
	// discarded counts bytes that were not records: a torn tail, damage.
	discarded int64
	// notes describe each repair, for the log.
	notes []string
}

// recoverDir scans every segment in dir, repairs what is damaged and returns the segments in
// order. A torn or damaged tail is truncated; damage followed by valid records is cut out by
// rewriting the segment; a segment whose magic is wrong is set aside as <name>.damaged. It
// creates nothing: an empty result means the caller starts a first segment.
func recoverDir(dir string) (*recovery, error) {
	rec := &recovery{acked: readCursor(filepath.Join(dir, cursorFile))}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			// A rewrite or cursor update that did not finish: the original is intact.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
		case strings.HasSuffix(name, segSuffix):
			first, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
			if err != nil || len(name) != 20+len(segSuffix) || first == 0 {
				rec.notes = append(rec.notes, fmt.Sprintf("ignored %s: not a segment name", name))
				continue
			}
			firsts = append(firsts, first)
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	var prev uint64
	for _, first := range firsts {
		seg, err := recoverSegment(dir, first, prev, rec)
		if err != nil {
			return nil, err
		}
		if seg == nil {
			continue
		}
		rec.segs = append(rec.segs, seg)
		prev = max(prev, seg.last)
	}
	return rec, nil
}

// recoverSegment scans one segment, whose records must have sequence numbers above prev, and
// repairs it; nil means it was set aside.
func recoverSegment(dir string, first, prev uint64, rec *recovery) (*segment, error) {
	path := filepath.Join(dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	seg := &segment{first: first, last: first - 1, size: st.Size(), path: path}
	magic := make([]byte, len(segMagic))
	if n, _ := f.ReadAt(magic, 0); n < len(segMagic) || string(magic) != segMagic {
		if st.Size() <= int64(len(segMagic)) && string(magic[:n]) == segMagic[:n] {
			// Created, then cut short before its magic was written whole: nothing in it.
			rec.discarded += st.Size()
			if err := rewriteSegment(f, path, nil); err != nil {
				return nil, err
			}
			seg.size = int64(len(segMagic))
			return seg, nil
		}
		rec.notes = append(rec.notes, fmt.Sprintf("%s is not a spool segment (bad magic): set aside as %s.damaged", path, filepath.Base(path)))
		rec.discarded += st.Size()
		f.Close()
		return nil, os.Rename(path, path+".damaged")
	}
	if prev < first-1 {
		prev = first - 1
	}
	sc := &scanner{r: f, limit: st.Size(), off: int64(len(segMagic)), prev: prev}
	type span struct{ from, to int64 }
	var keep []span // valid byte ranges after the magic, when there is damage
	damaged := false
	start := sc.off
	for {
		r, err := sc.next()
		if err == nil {
			seg.last = r.seq
			if r.seq > rec.acked {
				rec.pending++
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if !errors.Is(err, errTorn) && !errors.Is(err, errDamaged) {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		damaged = true
		keep = append(keep, span{start, sc.off})
		bad := sc.off
		found, err := sc.resync()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if !found {
			rec.discarded += st.Size() - bad
			rec.notes = append(rec.notes, fmt.Sprintf("%s: %d bytes after offset %d are not whole records (a write cut short): truncated", path, st.Size()-bad, bad))
			start = st.Size()
			break
		}
		rec.discarded += sc.off - bad
		rec.notes = append(rec.notes, fmt.Sprintf("%s: %d damaged bytes at offset %d skipped; records continue at sequence number above %d", path, sc.off-bad, bad, sc.prev))
		start = sc.off
	}
	if !damaged {
		return seg, nil
	}
	if start < st.Size() {
		keep = append(keep, span{start, st.Size()})
	}
	if len(keep) == 1 && keep[0].from == int64(len(segMagic)) {
		// Only the tail is bad: cut it off in place.
		if err := f.Truncate(keep[0].to); err != nil {
			return nil, fmt.Errorf("truncate %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("fsync %s: %w", path, err)
		}
		seg.size = keep[0].to
		return seg, nil
	}
	var ranges [][2]int64
	for _, k := range keep {
		if k.to > k.from {
			ranges = append(ranges, [2]int64{k.from, k.to})
		}
	}
	if err := rewriteSegment(f, path, ranges); err != nil {
		return nil, err
	}
	seg.size = int64(len(segMagic))
	for _, r := range ranges {
		seg.size += r[1] - r[0]
	}
	return seg, nil
}

// rewriteSegment replaces the segment at path by the magic followed by the byte ranges of src,
// through a temporary file that is fsynced and renamed over it.
func rewriteSegment(src *os.File, path string, ranges [][2]int64) error {
	tmp := path + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = out.WriteString(segMagic)
	for _, r := range ranges {
		if err != nil {
			break
		}
		_, err = io.Copy(out, io.NewSectionReader(src, r[0], r[1]-r[0]))
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rewrite %s: %w", path, err)
	}
	return nil
}

// createSegment creates the segment whose first record will be first, with its magic, durable
// together with its directory entry.
func createSegment(dir string, first uint64) (*os.File, *segment, error) {
	path := filepath.Join(dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if _, err := f.WriteString(segMagic); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, &segment{first: first, last: first - 1, size: int64(len(segMagic)), path: path}, nil
}

// syncDir makes the directory entries of dir durable (a created, renamed or removed file).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// readCursor returns the acknowledged sequence number stored in path, or 0 when the file is
// missing or damaged (every record is then forwarded again: duplicates, not losses).
func readCursor(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != len(cursorMagic)+12 || string(b[:len(cursorMagic)]) != cursorMagic {
		return 0
	}
	body := b[:len(cursorMagic)+8]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(body):]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[len(cursorMagic):])
}

// writeCursor stores acked in path through a temporary file renamed over it. It does not
// fsync: a cursor lost in a power cut only makes confirmed records go out again.
func writeCursor(path string, acked uint64) error {
	b := make([]byte, 0, len(cursorMagic)+12)
	b = append(b, cursorMagic...)
	b = binary.LittleEndian.AppendUint64(b, acked)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// lockDir takes an exclusive lock on dir's lock file, so that two processes never write one
// spool. The lock lasts until the returned file is closed (or the process ends).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another process (pid %s)", dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	// The holder's pid, for the error a second process gets.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
