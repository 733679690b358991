package spool

import "testing"

func TestHostBusy(t *testing.T) {
	dir := t.TempDir()
	if busy, err := HostBusy(dir, "h.example"); err != nil || busy {
		t.Fatalf("no lock file: busy=%v err=%v", busy, err)
	}
	l, err := LockHost(dir, "h.example")
	if err != nil {
		t.Fatal(err)
	}
	if busy, err := HostBusy(dir, "h.example"); err != nil || !busy {
		t.Fatalf("while held: busy=%v err=%v", busy, err)
	}
	if busy, err := HostBusy(dir, "other.example"); err != nil || busy {
		t.Fatalf("other host: busy=%v err=%v", busy, err)
	}
	if l.TakeAgain() {
		t.Error("HostBusy asked the holder for another pass")
	}
	if again, err := l.Release(); err != nil || again {
		t.Fatalf("release: again=%v err=%v", again, err)
	}
	if busy, err := HostBusy(dir, "h.example"); err != nil || busy {
		t.Fatalf("after release: busy=%v err=%v", busy, err)
	}
}
