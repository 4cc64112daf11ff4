package reliability

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// TestHTTPProducerCountsOnly2xx posts to a server that answers 500 to every tenth event: those
// are posted again until the deadline, then left out of what the producer reports as sent, and
// the others are sent once.
func TestHTTPProducerCountsOnly2xx(t *testing.T) {
	r, err := NewHTTPReceiver("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	run := fmt.Sprintf("refuse%d", time.Now().UnixNano())
	refused := map[string]bool{}
	for seq := 0; seq < 50; seq += 10 {
		refused[EventID(run, seq)] = true
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// refused is filled before the server starts and only read here.
		body, _ := io.ReadAll(req.Body)
		if refused[idOf(body)] {
			http.Error(w, "refused", http.StatusInternalServerError)
			return
		}
		r.record(idOf(body))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	p := NewHTTPProducer(srv.URL)
	defer p.Close()
	// Ten in flight: five stay busy with the refused events, five post the others.
	seqs, err := p.Publish(run, 0, 50, 300, 10, time.Now().Add(2*time.Second))
	if err == nil {
		t.Fatal("Publish reported no error although five events were refused until the deadline")
	}
	for _, s := range seqs {
		if s%10 == 0 {
			t.Fatalf("seq %d counted as sent although every answer to it was 500 (sent: %v)", s, seqs)
		}
	}
	if len(seqs) != 45 {
		t.Fatalf("%d events counted as sent, want the 45 answered 204: %v", len(seqs), seqs)
	}
	if !slices.IsSorted(seqs) {
		t.Fatalf("sent seqs not in ascending order: %v", seqs)
	}
	if rep := r.Report(run, seqs); rep.Missing != 0 || rep.Duplicates != 0 {
		t.Fatalf("receiver: %s", rep)
	}
}
