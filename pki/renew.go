package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// RenewCert renews cert at the CA and returns the new certificate with the
// same private key. It checks that the CA kept the identity and the key.
func (c *CAClient) RenewCert(ctx context.Context, cert *tls.Certificate) (*tls.Certificate, error) {
	chain, err := c.Renew(ctx, cert)
	if err != nil {
		return nil, err
	}
	oldID, err := IDFromCert(cert.Leaf)
	if err != nil {
		return nil, err
	}
	newID, err := IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("renewed certificate: %w", err)
	}
	if newID != oldID || Pin(chain[0]) != Pin(cert.Leaf) {
		return nil, fmt.Errorf("pki: CA renewed %s with another identity or key", oldID)
	}
	nc := &tls.Certificate{PrivateKey: cert.PrivateKey, Leaf: chain[0]}
	for _, x := range chain {
		if x.IsCA && x.CheckSignatureFrom(x) == nil {
			continue // a self-signed root is not sent in handshakes
		}
		nc.Certificate = append(nc.Certificate, x.Raw)
	}
	return nc, nil
}

// RenewerConfig configures a Renewer.
type RenewerConfig struct {
	// Identity holds the certificate to keep fresh. Required.
	Identity *Identity
	// Renew obtains a new certificate for the current one, typically
	// CAClient.RenewCert. Required.
	Renew func(ctx context.Context, c *tls.Certificate) (*tls.Certificate, error)
	// Save persists a renewed certificate (State.SaveCert). Optional; a save
	// error is logged and the new certificate is used anyway.
	Save func(c *tls.Certificate) error
	// At is the fraction of the lifetime after which to renew. If zero,
	// 2/3 is used.
	At float64
	// Jitter spreads renewals of many members: the renewal time moves by up
	// to ±Jitter of the lifetime. If zero, 0.05 is used; negative disables.
	Jitter float64
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// doubling from the first to the second. If zero, 1s and 5m are used.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives lifecycle logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the renewal metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// Renewer renews a certificate at about 2/3 of its lifetime and swaps it into
// an Identity without a restart, retrying with backoff while the CA is down.
type Renewer struct {
	cfg      RenewerConfig
	log      *slog.Logger
	renewals *prometheus.CounterVec
	expiry   prometheus.Gauge
}

// NewRenewer checks cfg and fills defaults.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	if cfg.Identity == nil || cfg.Renew == nil {
		return nil, errors.New("pki: renewer needs an identity and a renew function")
	}
	if cfg.At <= 0 || cfg.At >= 1 {
		cfg.At = 2.0 / 3
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.05
	}
	if cfg.Jitter < 0 {
		cfg.Jitter = 0
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Minute, cfg.MinBackoff)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(cfg.Registerer)
	return &Renewer{
		cfg: cfg,
		log: log.With("component", "renewer"),
		renewals: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kurier_cert_renewals_total",
			Help: "Certificate renewal attempts by result.",
		}, []string{"result"}),
		expiry: f.NewGauge(prometheus.GaugeOpts{
			Name: "kurier_cert_expiry_timestamp_seconds",
			Help: "When the current certificate expires (Unix seconds).",
		}),
	}, nil
}

// NextRenewal returns when the current certificate should be renewed.
func (r *Renewer) NextRenewal() time.Time {
	leaf := r.cfg.Identity.Certificate().Leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(time.Duration(float64(life) * r.cfg.At))
	if j := time.Duration(float64(life) * r.cfg.Jitter); j > 0 {
		at = at.Add(time.Duration(rand.Int64N(int64(2*j))) - j)
	}
	return at
}

// Run renews the certificate whenever it is due until ctx is done. It
// blocks and returns nil when ctx is cancelled.
func (r *Renewer) Run(ctx context.Context) error {
	for {
		r.expiry.Set(float64(r.cfg.Identity.Certificate().Leaf.NotAfter.Unix()))
		if !sleepCtx(ctx, time.Until(r.NextRenewal())) {
			return nil
		}
		backoff := r.cfg.MinBackoff
		for {
			err := r.RenewNow(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			leaf := r.cfg.Identity.Certificate().Leaf
			if time.Now().After(leaf.NotAfter) {
				r.log.Error("certificate expired and cannot be renewed; re-enrol with a new token", "err", err, "expired_at", leaf.NotAfter)
			} else {
				r.log.Warn("certificate renewal failed; retrying", "err", err, "retry_in", backoff, "expires_at", leaf.NotAfter)
			}
			if !sleepCtx(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		}
	}
}

// RenewNow renews once and swaps the new certificate in.
func (r *Renewer) RenewNow(ctx context.Context) error {
	cur := r.cfg.Identity.Certificate()
	nc, err := r.cfg.Renew(ctx, cur)
	if err == nil {
		err = r.cfg.Identity.Store(nc)
	}
	if err != nil {
		r.renewals.WithLabelValues("error").Inc()
		return err
	}
	r.renewals.WithLabelValues("ok").Inc()
	r.expiry.Set(float64(nc.Leaf.NotAfter.Unix()))
	r.log.Info("certificate renewed", "not_after", nc.Leaf.NotAfter)
	if r.cfg.Save != nil {
		if err := r.cfg.Save(nc); err != nil {
			r.log.Error("renewed certificate could not be saved; it is in use but a restart will load the old one", "err", err)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// DirectoryWatcherConfig configures a DirectoryWatcher.
type DirectoryWatcherConfig struct {
	// Verifier receives every fetched document. Required.
	Verifier *Verifier
	// Fetch returns the newest signed directory, typically
	// CAClient.Directory. Required.
	Fetch func(ctx context.Context) ([]byte, error)
	// Interval is the time between fetches. If zero, 30s is used. A
	// revocation takes effect everywhere within about one interval.
	Interval time.Duration
	// Save caches each newly accepted document (State.SaveDirectory).
	// Optional.
	Save func(signed []byte) error
	// Logger receives logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives directory metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// DirectoryWatcher polls for new directory versions and feeds them to a
// Verifier. A bad document is refused and counted; the last good one stays.
type DirectoryWatcher struct {
	cfg     DirectoryWatcherConfig
	log     *slog.Logger
	updates *prometheus.CounterVec
}

// NewDirectoryWatcher checks cfg and fills defaults.
func NewDirectoryWatcher(cfg DirectoryWatcherConfig) (*DirectoryWatcher, error) {
	if cfg.Verifier == nil || cfg.Fetch == nil {
		return nil, errors.New("pki: directory watcher needs a verifier and a fetch function")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(cfg.Registerer)
	w := &DirectoryWatcher{
		cfg: cfg,
		log: log.With("component", "directory"),
		updates: f.NewCounterVec(prometheus.CounterOpts{
			Name: "kurier_directory_updates_total",
			Help: "Directory fetches by result: new, unchanged, fetch_error, refused.",
		}, []string{"result"}),
	}
	v := cfg.Verifier
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kurier_directory_version",
		Help: "Version of the directory in use (0 if none).",
	}, func() float64 {
		if s := v.Current(); s != nil {
			return float64(s.Dir.Version)
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kurier_directory_age_seconds",
		Help: "Seconds since the directory in use was issued (-1 if none).",
	}, func() float64 {
		if a, ok := v.Age(); ok {
			return a.Seconds()
		}
		return -1
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kurier_directory_expiry_timestamp_seconds",
		Help: "When the directory in use expires (Unix seconds; 0 if none).",
	}, func() float64 {
		if s := v.Current(); s != nil {
			return float64(s.Dir.ExpiresAt.Unix())
		}
		return 0
	})
	return w, nil
}

// Poll fetches once and applies the result. It returns the error that
// prevented an update, if any.
func (w *DirectoryWatcher) Poll(ctx context.Context) error {
	b, err := w.cfg.Fetch(ctx)
	if err != nil {
		w.updates.WithLabelValues("fetch_error").Inc()
		return err
	}
	changed, err := w.cfg.Verifier.Update(b)
	if err != nil {
		w.updates.WithLabelValues("refused").Inc()
		return err
	}
	if !changed {
		w.updates.WithLabelValues("unchanged").Inc()
		return nil
	}
	w.updates.WithLabelValues("new").Inc()
	w.log.Info("directory updated", "version", w.cfg.Verifier.Current().Dir.Version)
	if w.cfg.Save != nil {
		if err := w.cfg.Save(b); err != nil {
			w.log.Warn("directory cache could not be written", "err", err)
		}
	}
	return nil
}

// Run polls every interval until ctx is done, starting at once. It blocks and
// returns nil when ctx is cancelled.
func (w *DirectoryWatcher) Run(ctx context.Context) error {
	for {
		if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			lvl := slog.LevelWarn
			if w.cfg.Verifier.Current() == nil {
				lvl = slog.LevelError
			}
			w.log.Log(ctx, lvl, "directory update failed; keeping the last good version", "err", err)
		}
		if !sleepCtx(ctx, w.cfg.Interval) {
			return nil
		}
	}
}
