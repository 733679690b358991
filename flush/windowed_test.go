package flush

import (
	"context"
	"io"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"etrnflush/logging"
	"etrnflush/sender"
	"etrnflush/spool"
)

// flushWindow is the sender window flushTo uses: one message, so that the
// messages a fault finds offered do not depend on timing.
const flushWindow = 1

// TestFaultsWindowed runs faults with the default window: messages after
// the faulty one are already on the wire, so a dropped session leaves
// them deferred or uncertain, never sent and never lost.
func TestFaultsWindowed(t *testing.T) {
	batch := []testMsg{
		{"a@s.example", []string{"a1@h.example"}},
		{"b@s.example", []string{"b1@h.example", "b2@h.example", "b3@h.example"}},
		{"c@s.example", []string{"c1@h.example"}},
	}
	all := sorted(batch[0].String(), batch[1].String(), batch[2].String())
	for _, tc := range []struct {
		name    string
		faults  map[string]string
		arrived []string
		left    []string
	}{
		{"all accepted", nil, all, nil},
		{"MAIL 451", map[string]string{"MAIL b@s.example": "451"}, sorted(batch[0].String(), batch[2].String()), sorted(batch[1].String())},
		{"dropped right after the dot", map[string]string{"DATA b@s.example": "drop-dot"}, sorted(batch[0].String()), sorted(batch[1].String(), batch[2].String())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &faultSink{faults: tc.faults, slow: time.Second}
			addr := startFaultSink(t, be)
			path := filepath.Join(t.TempDir(), "h.example")
			writeSpool(t, path, batch, -1)
			cfg := Config{
				Host:   "h.example",
				Spool:  spool.Options{Path: path},
				Sender: sender.Options{Helo: "test.example", TLS: sender.TLSNone, Timeout: 2 * time.Second, DataTimeout: 2 * time.Second},
				Log:    logging.NewWriter(io.Discard, true),
				Dests:  []string{addr},
			}
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := be.accepted(); !reflect.DeepEqual(got, tc.arrived) {
				t.Errorf("arrived %q, want %q", got, tc.arrived)
			}
			if got := leftIn(t, path); !reflect.DeepEqual(got, tc.left) {
				t.Errorf("left in the spool %q, want %q", got, tc.left)
			}
			if sum.Sent != len(tc.arrived) || sum.Sent+sum.Deferred+sum.Uncertain+sum.Failed != len(batch) {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}
