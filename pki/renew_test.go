package pki_test

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == label && l.GetValue() == value {
					return m.Counter.GetValue()
				}
			}
		}
	}
	return 0
}

// TestRenewerSchedule checks that the renewer renews at about 2/3 of the
// lifetime, swaps the new certificate in, saves it, and retries with
// doubling backoff while the CA is down.
func TestRenewerSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now() // the bubble's clock
		ca := pkitest.NewCA(t, "kurier.test", now)
		life := 3 * time.Hour
		first := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{NotBefore: now, NotAfter: now.Add(life)})
		id, err := pki.NewIdentity(first)
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu       sync.Mutex
			attempts []time.Time
			saved    []*tls.Certificate
			down     = 3 // the CA fails this many attempts
		)
		renew := func(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			attempts = append(attempts, time.Now())
			if down > 0 {
				down--
				return nil, errors.New("CA unavailable")
			}
			n := time.Now()
			return ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{Key: nil, NotBefore: n, NotAfter: n.Add(life)}), nil
		}
		reg := prometheus.NewRegistry()
		r, err := pki.NewRenewer(pki.RenewerConfig{
			Identity: id, Renew: renew, Jitter: -1, MinBackoff: time.Second, MaxBackoff: 4 * time.Second,
			Save:       func(c *tls.Certificate) error { mu.Lock(); saved = append(saved, c); mu.Unlock(); return nil },
			Registerer: reg,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		time.Sleep(2*time.Hour + 10*time.Second) // fake clock
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		// Attempts at 2h (=2/3 of 3h), then +1s, +2s, +4s: the fourth works.
		wantAt := []time.Duration{2 * time.Hour, 2*time.Hour + time.Second, 2*time.Hour + 3*time.Second, 2*time.Hour + 7*time.Second}
		if len(attempts) != len(wantAt) {
			t.Fatalf("%d attempts at %v, want %d", len(attempts), attempts, len(wantAt))
		}
		for i, w := range wantAt {
			if got := attempts[i].Sub(now); got != w {
				t.Errorf("attempt %d at +%v, want +%v", i, got, w)
			}
		}
		if len(saved) != 1 || id.Certificate() != saved[0] {
			t.Error("the renewed certificate was not swapped in and saved")
		}
		if got := counter(t, reg, "kurier_cert_renewals_total", "result", "error"); got != 3 {
			t.Errorf("errors counted = %v, want 3", got)
		}
		if got := counter(t, reg, "kurier_cert_renewals_total", "result", "ok"); got != 1 {
			t.Errorf("successes counted = %v, want 1", got)
		}
	})
}

// TestRenewerKeepsOldCertOnBadRenewal: a renewal that returns a certificate
// for another identity is refused and the old one stays in service.
func TestRenewerKeepsOldCertOnBadRenewal(t *testing.T) {
	ca := pkitest.NewCA(t, "kurier.test", time.Now())
	first := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	id, _ := pki.NewIdentity(first)
	r, err := pki.NewRenewer(pki.RenewerConfig{Identity: id, Renew: func(context.Context, *tls.Certificate) (*tls.Certificate, error) {
		bad := ca.Issue(t, pki.RoleProvider, "vendor")
		bad.Leaf = nil // force Store to parse it
		bad.PrivateKey = first.PrivateKey
		return bad, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(t.Context()); err == nil {
		t.Fatal("a certificate whose key does not match was accepted")
	}
	if id.Certificate() != first {
		t.Error("the old certificate was replaced")
	}
}

// TestDirectoryWatcher polls a source that serves good, bad, older and newer
// documents in turn.
func TestDirectoryWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca := pkitest.NewCA(t, "kurier.test", time.Now())
		hd := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
		v1 := ca.Sign(t, ca.Directory(pkitest.Member(hd, "Office")))
		v2 := ca.Sign(t, ca.Directory(pkitest.Member(hd, "Office, renamed")))
		tampered := append([]byte{}, v2...)
		tampered[len(tampered)-3] ^= 1
		feed := [][]byte{v1, v1, tampered, nil, v2, v1}
		var mu sync.Mutex
		var saved [][]byte
		fetch := func(context.Context) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(feed) == 0 {
				return v2, nil
			}
			b := feed[0]
			feed = feed[1:]
			if b == nil {
				return nil, errors.New("CA unreachable")
			}
			return b, nil
		}
		ver := ca.Verifier(t, nil)
		reg := prometheus.NewRegistry()
		w, err := pki.NewDirectoryWatcher(pki.DirectoryWatcherConfig{
			Verifier: ver, Fetch: fetch, Interval: 10 * time.Second, Registerer: reg,
			Save: func(b []byte) error { mu.Lock(); saved = append(saved, b); mu.Unlock(); return nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		time.Sleep(55 * time.Second) // six polls on the fake clock
		synctest.Wait()
		cancel()
		<-done
		if got := ver.Current().Dir.Version; got != 2 {
			t.Errorf("version in use = %d, want 2", got)
		}
		for result, want := range map[string]float64{"new": 2, "unchanged": 1, "refused": 2, "fetch_error": 1} {
			if got := counter(t, reg, "kurier_directory_updates_total", "result", result); got != want {
				t.Errorf("updates{result=%q} = %v, want %v", result, got, want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(saved) != 2 {
			t.Errorf("saved %d documents, want the 2 new ones", len(saved))
		}
	})
}
