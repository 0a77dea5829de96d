package ca

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// caMetrics are the CA server's Prometheus metrics. Every request is
// counted with its answer, so refused enrolments and renewals show as
// 4xx codes of their endpoint.
type caMetrics struct {
	requests *prometheus.CounterVec
	notAfter *prometheus.GaugeVec
}

func newCAMetrics(reg prometheus.Registerer, c *CA) *caMetrics {
	m := &caMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurier_ca_requests_total",
			Help: "Requests to the CA by endpoint and HTTP status code (503 while shutting down).",
		}, []string{"endpoint", "code"}),
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kurier_ca_not_after_seconds",
			Help: "Expiry (Unix time) of the current root, of the intermediate that signs members, and of the server's own TLS certificate.",
		}, []string{"cert"}),
	}
	m.notAfter.WithLabelValues("root").Set(float64(c.roots[0].NotAfter.Unix()))
	m.notAfter.WithLabelValues("intermediate").Set(float64(c.inter.NotAfter.Unix()))
	reg.MustRegister(m.requests, m.notAfter)
	return m
}

// endpoint names a request's endpoint from a fixed set, so that the label
// stays bounded whatever paths clients send.
func endpoint(path string) string {
	if rest, ok := strings.CutPrefix(path, "/kurier/v1/"); ok {
		switch rest {
		case "trust", "directory", "seal-keys":
			return "kurier/" + rest
		}
		return "other"
	}
	p := strings.TrimPrefix(path, "/1.0")
	seg, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	switch seg {
	case "sign", "renew", "rekey", "re-sign", "revoke", "roots", "root", "health", "version", "provisioners", "federation", "crl":
		return seg
	}
	return "other"
}

// statusWriter records the status code a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (m *caMetrics) count(r *http.Request, status int) {
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(endpoint(r.URL.Path), strconv.Itoa(status)).Inc()
}
