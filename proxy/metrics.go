package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values. They are small fixed sets; no names or addresses go into
// labels.
const (
	transportQUIC = "quic"
	transportTCP  = "tcp"
)

// Outcomes of an Incoming announcement (proxy_incoming_total{outcome}).
const (
	outPaired           = "paired"             // paired and handed to the target
	outDialError        = "dial_error"         // dialling the relay's pairing port failed
	outPairError        = "pair_error"         // writing the preamble or reading the status failed
	outRefusedUnknown   = "refused_unknown"    // relay answered PairUnknown
	outRefusedWrongName = "refused_wrong_name" // relay answered PairWrongName
	outBusy             = "busy"               // relay answered PairBusy
	outBadStatus        = "bad_status"         // relay answered an unknown status byte
	outNoRoute          = "no_route"           // no such route (or expired, or a single-use route already taken)
	outOverLimit        = "over_limit"         // MaxConns relayed connections already active
	outBadPairAddr      = "bad_pair_addr"      // PairAddr is no known relay's pairing endpoint
	outTargetError      = "target_error"       // the local target could not be dialled or is closed
	outBacklogFull      = "backlog_full"       // the Listener's backlog is full
	outShutdown         = "shutdown"           // the proxy is shutting down
)

var incomingOutcomes = []string{
	outPaired, outDialError, outPairError, outRefusedUnknown, outRefusedWrongName, outBusy,
	outBadStatus, outNoRoute, outOverLimit, outBadPairAddr, outTargetError, outBacklogFull, outShutdown,
}

// Reasons a control session ended (proxy_session_closes_total{reason}).
const (
	closeShutdown       = "shutdown"
	closeRelayRemoved   = "relay_removed"
	closeRelayClosed    = "relay_closed"
	closeReadError      = "read_error"
	closeWriteError     = "write_error"
	closeProtocolError  = "protocol_error"
	closePingTimeout    = "ping_timeout"
	closeRequestTimeout = "request_timeout"
	closeQueueFull      = "queue_full"
	closeGoAway         = "goaway"
)

var sessionCloseReasons = []string{
	closeShutdown, closeRelayRemoved, closeRelayClosed, closeReadError, closeWriteError,
	closeProtocolError, closePingTimeout, closeRequestTimeout, closeQueueFull, closeGoAway,
}

// Reasons a relayed connection ended (proxy_relayed_closes_total{reason}).
const (
	relayedDone     = "done"     // both directions finished, or the Listener's user closed it
	relayedError    = "error"    // a read or write failed (reset by a peer)
	relayedIdle     = "idle"     // no bytes either way for IdleTimeout (Linger after a half-close)
	relayedMaxAge   = "max_age"  // MaxAge reached
	relayedShutdown = "shutdown" // force-closed by Close or at the end of Shutdown's budget
)

type metrics struct {
	sessions      *prometheus.GaugeVec   // proxy_control_sessions{transport}
	connects      *prometheus.CounterVec // proxy_session_connects_total{transport,result}
	sessionCloses *prometheus.CounterVec // proxy_session_closes_total{reason}
	registrations *prometheus.CounterVec // proxy_registrations_total{op,code}
	routes        prometheus.Gauge       // proxy_routes
	incoming      *prometheus.CounterVec // proxy_incoming_total{outcome}
	active        prometheus.Gauge       // proxy_relayed_connections
	relayedCloses *prometheus.CounterVec // proxy_relayed_closes_total{reason}
	bytes         *prometheus.CounterVec // proxy_relayed_bytes_total{direction}
	bytesIn       prometheus.Counter     // bytes{direction="in"}: relay → target
	bytesOut      prometheus.Counter     // bytes{direction="out"}: target → relay
	pairing       prometheus.Histogram   // proxy_pairing_duration_seconds
}

// newMetrics builds the proxy's metrics and registers them on reg. A nil reg
// means nothing is exported. Registering twice on one registry (two proxies
// with the same Registerer) is an error, not a panic.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proxy_control_sessions",
			Help: "Established control sessions to relays, by transport.",
		}, []string{"transport"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_session_connects_total",
			Help: "Control session connection attempts, by transport and result (ok, error).",
		}, []string{"transport", "result"}),
		sessionCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_session_closes_total",
			Help: "Control sessions ended, by reason.",
		}, []string{"reason"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_registrations_total",
			Help: "Route registrations and withdrawals answered by relays, by operation and result code.",
		}, []string{"op", "code"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxy_routes",
			Help: "Routes the proxy holds locally.",
		}),
		incoming: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_incoming_total",
			Help: "Incoming connection announcements from relays, by outcome.",
		}, []string{"outcome"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "proxy_relayed_connections",
			Help: "Relayed connections currently open.",
		}),
		relayedCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_relayed_closes_total",
			Help: "Relayed connections ended, by reason.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proxy_relayed_bytes_total",
			Help: "Bytes relayed, by direction (in: from the relay to the target; out: back to the relay). Spliced connections are counted when a direction ends.",
		}, []string{"direction"}),
		pairing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "proxy_pairing_duration_seconds",
			Help:    "Time from an Incoming announcement to the relay's PairOK.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. 16 s
		}),
	}
	for _, tr := range []string{transportQUIC, transportTCP} {
		m.sessions.WithLabelValues(tr)
		m.connects.WithLabelValues(tr, "ok")
		m.connects.WithLabelValues(tr, "error")
	}
	for _, o := range incomingOutcomes {
		m.incoming.WithLabelValues(o)
	}
	for _, r := range sessionCloseReasons {
		m.sessionCloses.WithLabelValues(r)
	}
	for _, r := range []string{relayedDone, relayedError, relayedIdle, relayedMaxAge, relayedShutdown} {
		m.relayedCloses.WithLabelValues(r)
	}
	m.bytesIn = m.bytes.WithLabelValues("in")
	m.bytesOut = m.bytes.WithLabelValues("out")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sessions, m.connects, m.sessionCloses, m.registrations, m.routes,
		m.incoming, m.active, m.relayedCloses, m.bytes, m.pairing} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	return m, nil
}
