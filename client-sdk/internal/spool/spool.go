// Package spool keeps a client's queued reports on disk until the server has committed them, so
// that a restart of the process loses none. It is an append-only journal, one file per namespace
// and group:
//
//	<dir>/reports-<namespace>.<group>.journal   (names escaped to [A-Za-z0-9_-] and %XX)
//	<dir>/reports-<namespace>.<group>.lock      (held with flock while a client uses it)
//
// Where the escaped names would make a file name longer than a file system takes (255 bytes),
// "<namespace>.<group>" is replaced by "sha256-" and the SHA-256 of both names, in hex.
//
// Every line is one record: the CRC-32C of the JSON as 8 hex digits, a space, the JSON, and a
// newline. The JSON is one of
//
//	{"v":1}                          the header, first in the file
//	{"seq":7,"item":{…ReportItem…}}  a queued report, as the client will send it
//	{"done":[7,8,9]}                 reports the server settled (committed or rejected)
//
// Writers append records and fsync before they return, several callers sharing one fsync (group
// commit). When every report is settled the journal is replaced by a bare header; when settled
// records dominate it is rewritten with the live reports only (a new file, fsynced, then renamed
// over the old). On open, the reports without a done record are handed back to be queued again,
// each exactly as it was written (its failure time included). A torn last line (a crash
// mid-write) is ignored; a damaged line elsewhere is skipped with an error log.
package spool

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// format is the journal format this package writes and reads.
const format = 1

// compactBytes is how many bytes of settled records make the writer rewrite the journal (when
// they also outweigh the live ones two to one).
const compactBytes = 4 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is one line of the journal.
type journalRecord struct {
	V    int                  `json:"v,omitempty"`
	Seq  uint64               `json:"seq,omitempty"`
	Item *protocol.ReportItem `json:"item,omitempty"`
	Done []uint64             `json:"done,omitempty"`
}

// Item is a queued report read back from the journal.
type Item struct {
	// Seq is the number the report was added with.
	Seq    uint64
	Report protocol.ReportItem
}

// ErrClosed is the error of a write to a closed spool.
var ErrClosed = errors.New("the spool is closed")

// span locates a record in the journal file.
type span struct{ off, n int64 }

// pendingRec is a record waiting for the writer.
type pendingRec struct {
	seq  uint64 // of an added report, 0 for a done record
	line []byte
	done []uint64
}

// Spool is one open journal. Its methods are safe for concurrent use.
type Spool struct {
	path      string
	lock      *os.File
	log       *slog.Logger
	compactAt int64

	mu      sync.Mutex
	idle    *sync.Cond // signalled when the writer role is released
	pend    []pendingRec
	waiters []chan error
	writing bool
	closed  bool

	// Writer state: touched only by the goroutine holding the writer role (or under mu when
	// nobody can hold it).
	f         *os.File
	size      int64
	live      map[uint64]span
	liveBytes int64
}

// escapeName escapes a name part to [A-Za-z0-9_-] and %XX.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// maxFileName is the longest file name the spool makes: what file systems take (NAME_MAX).
const maxFileName = 255

// longestSuffix is the longest suffix put after a journal's name (the rewrite's file).
const longestSuffix = ".journal.tmp"

// journalName is the name of the journal of namespace and group, without a suffix: the names
// escaped, or, where that would be too long a file name, their SHA-256.
func journalName(namespace, group string) string {
	name := "reports-" + escapeName(namespace) + "." + escapeName(group)
	if len(name)+len(longestSuffix) <= maxFileName {
		return name
	}
	sum := sha256.Sum256([]byte(namespace + "\x00" + group))
	return "reports-sha256-" + hex.EncodeToString(sum[:])
}

// Open opens (creating it if needed) the journal of namespace and group in dir, locks it, and
// returns the reports it holds that were never settled, in the order they were added. A journal
// that another process (or another Spool of this one) holds is refused.
func Open(dir, namespace, group string, log *slog.Logger) (*Spool, []Item, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create spool directory: %w", err)
	}
	base := filepath.Join(dir, journalName(namespace, group))
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("spool %s is in use (%v): each client of a group needs a spool directory of its own", base+".journal", err)
	}
	s := &Spool{path: base + ".journal", lock: lock, log: log, compactAt: compactBytes}
	s.idle = sync.NewCond(&s.mu)
	items, err := s.read()
	if err == nil {
		// Start from a clean file: only the live reports, no torn tail.
		err = s.rewrite(len(items), func(i int) (uint64, []byte, error) {
			line, err := encodeRecord(journalRecord{Seq: items[i].Seq, Item: &items[i].Report})
			return items[i].Seq, line, err
		})
	}
	if err != nil {
		lock.Close()
		return nil, nil, err
	}
	return s, items, nil
}

// read parses the journal.
func (s *Spool) read() ([]Item, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", s.path, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	live := make(map[uint64]protocol.ReportItem)
	var order []uint64
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				s.log.Warn("retryhub: spool: ignored an incomplete last record (the process stopped while writing it; its caller was not told it was queued)",
					"file", s.path, "line", lineNo)
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read spool %s: %w", s.path, err)
		}
		rec, err := parseRecord(line)
		if err != nil {
			s.log.Error("retryhub: spool: skipped a damaged record; if it held a report, that report is lost",
				"file", s.path, "line", lineNo, "err", err)
			continue
		}
		if rec.V > format {
			return nil, fmt.Errorf("spool %s has format %d, newer than this SDK's %d: upgrade the SDK or move the file away", s.path, rec.V, format)
		}
		if rec.Item != nil && rec.Seq != 0 {
			if _, ok := live[rec.Seq]; !ok {
				order = append(order, rec.Seq)
			}
			live[rec.Seq] = *rec.Item
		}
		for _, d := range rec.Done {
			delete(live, d)
		}
	}
	items := make([]Item, 0, len(live))
	for _, seq := range order {
		if it, ok := live[seq]; ok {
			items = append(items, Item{Seq: seq, Report: it})
			delete(live, seq)
		}
	}
	return items, nil
}

func encodeRecord(rec journalRecord) ([]byte, error) {
	js, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode spool record: %w", err)
	}
	line := make([]byte, 0, len(js)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(js, castagnoli))
	line = append(line, js...)
	return append(line, '\n'), nil
}

func parseRecord(line []byte) (journalRecord, error) {
	var rec journalRecord
	line = line[:len(line)-1] // the newline
	if len(line) < 10 || line[8] != ' ' {
		return rec, errors.New("malformed record")
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return rec, errors.New("malformed checksum")
	}
	js := line[9:]
	if crc32.Checksum(js, castagnoli) != uint32(want) {
		return rec, errors.New("checksum mismatch")
	}
	if err := json.Unmarshal(js, &rec); err != nil {
		return rec, fmt.Errorf("decode record: %w", err)
	}
	return rec, nil
}

// rewrite replaces the journal with a header and n records from rec, fsyncs, and renames it
// into place. It runs with the writer role (or before the spool is shared).
func (s *Spool) rewrite(n int, rec func(i int) (uint64, []byte, error)) error {
	tmp := s.path + ".tmp"
	tf, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("compact spool: %w", err)
	}
	fail := func(err error) error {
		tf.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact spool %s: %w", s.path, err)
	}
	w := bufio.NewWriterSize(tf, 64<<10)
	hdr, _ := encodeRecord(journalRecord{V: format})
	w.Write(hdr)
	off := int64(len(hdr))
	live := make(map[uint64]span, n)
	var liveBytes int64
	for i := range n {
		seq, line, err := rec(i)
		if err != nil {
			return fail(err)
		}
		if _, err := w.Write(line); err != nil {
			return fail(err)
		}
		live[seq] = span{off: off, n: int64(len(line))}
		off += int64(len(line))
		liveBytes += int64(len(line))
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := tf.Sync(); err != nil {
		return fail(err)
	}
	if err := tf.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact spool %s: %w", s.path, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact spool %s: %w", s.path, err)
	}
	syncDir(filepath.Dir(s.path))
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reopen spool %s: %w", s.path, err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.size, s.live, s.liveBytes = f, off, live, liveBytes
	return nil
}

// syncDir makes a rename in dir durable, where the platform allows.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Add writes a queued report under seq, a number unique within the journal, and returns once it
// is on disk.
func (s *Spool) Add(seq uint64, item protocol.ReportItem) error {
	line, err := encodeRecord(journalRecord{Seq: seq, Item: &item})
	if err != nil {
		return err
	}
	return s.submit(pendingRec{seq: seq, line: line})
}

// Done records that the server settled the reports seqs, and returns once that is on disk.
func (s *Spool) Done(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	line, err := encodeRecord(journalRecord{Done: seqs})
	if err != nil {
		return err
	}
	return s.submit(pendingRec{line: line, done: seqs})
}

// submit hands r to the writer and waits until it is written and fsynced. The first caller to
// find no writer becomes the writer and writes, in rounds, everything submitted meanwhile.
func (s *Spool) submit(r pendingRec) error {
	// Only a writer settling reports compacts: a caller queueing a report never pays for it.
	mayCompact := r.done != nil
	ch := make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("write spool %s: %w", s.path, ErrClosed)
	}
	s.pend = append(s.pend, r)
	s.waiters = append(s.waiters, ch)
	if !s.writing {
		s.writing = true
		for len(s.pend) > 0 {
			pend, waiters := s.pend, s.waiters
			s.pend, s.waiters = nil, nil
			s.mu.Unlock()
			err := s.writeRound(pend)
			for _, w := range waiters {
				w <- err
			}
			if err == nil && mayCompact {
				s.maybeCompact()
			}
			s.mu.Lock()
		}
		s.writing = false
		s.idle.Broadcast()
	}
	s.mu.Unlock()
	return <-ch
}

// writeRound appends and fsyncs the records. On failure it cuts the file back, so that a
// failed write leaves no partial record behind.
func (s *Spool) writeRound(pend []pendingRec) error {
	var buf []byte
	if len(pend) == 1 {
		buf = pend[0].line
	} else {
		for _, r := range pend {
			buf = append(buf, r.line...)
		}
	}
	_, err := s.f.Write(buf)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		if terr := s.f.Truncate(s.size); terr != nil {
			s.log.Error("retryhub: spool: cannot cut back a failed write; the next start will skip the damaged record",
				"file", s.path, "err", terr)
		}
		return fmt.Errorf("write spool %s: %w", s.path, err)
	}
	off := s.size
	for _, r := range pend {
		if r.seq != 0 {
			s.live[r.seq] = span{off: off, n: int64(len(r.line))}
			s.liveBytes += int64(len(r.line))
		}
		for _, d := range r.done {
			if sp, ok := s.live[d]; ok {
				delete(s.live, d)
				s.liveBytes -= sp.n
			}
		}
		off += int64(len(r.line))
	}
	s.size = off
	return nil
}

// maybeCompact empties the journal when nothing is live, or rewrites it when settled records
// dominate.
func (s *Spool) maybeCompact() {
	hdr, _ := encodeRecord(journalRecord{V: format})
	dead := s.size - s.liveBytes - int64(len(hdr))
	var err error
	switch {
	case len(s.live) == 0 && dead > 0:
		err = s.rewrite(0, nil)
	case dead > s.compactAt && dead > 2*s.liveBytes:
		seqs := make([]uint64, 0, len(s.live))
		for seq := range s.live {
			seqs = append(seqs, seq)
		}
		slices.Sort(seqs)
		old := s.live
		var buf []byte
		err = s.rewrite(len(seqs), func(i int) (uint64, []byte, error) {
			sp := old[seqs[i]]
			buf = slices.Grow(buf[:0], int(sp.n))[:sp.n]
			if _, err := s.f.ReadAt(buf, sp.off); err != nil {
				return 0, nil, fmt.Errorf("read record %d: %w", seqs[i], err)
			}
			return seqs[i], buf, nil
		})
	}
	if err != nil {
		s.log.Warn("retryhub: spool: compaction failed; the journal keeps growing until it succeeds", "file", s.path, "err", err)
	}
}

// fileSize returns the journal's size once no write is under way, for tests.
func (s *Spool) fileSize() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.writing {
		s.idle.Wait()
	}
	return s.size
}

// Path returns the journal file's path.
func (s *Spool) Path() string { return s.path }

// Close waits for the writer, then closes the journal and releases the lock. The journal stays
// on disk with whatever was not settled; writes after Close fail with ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	s.closed = true
	for s.writing {
		s.idle.Wait()
	}
	s.mu.Unlock()
	err := s.f.Close()
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close spool %s: %w", s.path, err)
	}
	return nil
}
