package cluster

import (
	"errors"
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/crypto/cryptobyte"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

// Cluster messages travel inside memberlist user messages, so the cluster key
// already encrypts and authenticates them (AES-GCM, with the cluster label as
// additional data). Every message starts with
//
//	version (1) = 0x01 | type (1)
//
// and continues with the fields of its type, big endian, no padding:
//
//	0x01 routes (gossip)    origin | inc (8) | base (8) | n (2) | n × (op (1) | name)
//	0x02 dir (gossip)       origin | inc (8) | version (8)
//	0x03 state (push/pull)  n (4) | n × record
//	     record             origin | inc (8) | version (8) | dir (8) | n (4) | n × name
//	0x10 forward (request)  id (8) | from | reply addr | token (32) | name | pair addr
//	0x11 fetch_dir (req.)   id (8) | from | reply addr | version (8)
//	0x12 pull (request)     id (8) | from | reply addr
//	0x13 refused (one-way)  from | n (1) | n × token (32)
//	0x20 reply              id (8) | from | code (1) | body length (4) | body
//
// origin and from are member names (1 length byte, then 1-63 bytes), name is
// a route name (1 length byte, then 1-253 bytes of a-z, 0-9, '-' and '.'),
// pair addr is 1 length byte and 0-255 bytes. reply addr is the asker's
// gossip address, an IP literal and port ("192.0.2.7:7946", "[2001:db8::7]:7946")
// after 1 length byte: the answer goes there if the asker is not (yet) a
// member the receiver knows. op is 1 for held, 0 for
// withdrawn. A routes message carries the changes of versions base+1 to
// base+n of its origin's route list. A refused message carries 1 to
// maxRefused tokens of announcements the receiver forwarded to the sender
// that the member will not answer. The decoders check every length before
// allocating and reject trailing bytes.
const (
	protoVersion = 1

	// maxGossip bounds routes and dir messages: they must fit a gossip
	// packet (memberlist's UDPBufferSize).
	maxGossip = 1400
	// maxDelta is the size flush packs route changes into, leaving room in
	// the packet for memberlist's own messages and framing.
	maxDelta = 1024
	// maxRequest bounds forward, fetch_dir, pull and refused messages.
	maxRequest = 1 << 10
	// maxRefused bounds the tokens of one refused message, so that it
	// fits maxRequest.
	maxRefused = 24
	// maxBody bounds a reply body: a signed directory or one route record.
	maxBody = pki.MaxDirectorySize
	// maxState bounds a push/pull state message. memberlist refuses remote
	// state over 20 MiB.
	maxState = 16 << 20
	// maxRecords bounds the relays one state message describes.
	maxRecords = 4096
	// recordMin is the smallest encoded record: empty origin aside, the
	// fixed fields.
	recordMin = 1 + 1 + 8 + 8 + 8 + 4
)

type msgType uint8

const (
	typeRoutes   msgType = 0x01
	typeDir      msgType = 0x02
	typeState    msgType = 0x03
	typeForward  msgType = 0x10
	typeFetchDir msgType = 0x11
	typePull     msgType = 0x12
	typeRefused  msgType = 0x13
	typeReply    msgType = 0x20
)

func (t msgType) String() string {
	switch t {
	case typeRoutes:
		return "routes"
	case typeDir:
		return "dir"
	case typeState:
		return "state"
	case typeForward:
		return "forward"
	case typeFetchDir:
		return "fetch_dir"
	case typePull:
		return "pull"
	case typeRefused:
		return "refused"
	case typeReply:
		return "reply"
	}
	return fmt.Sprintf("type_%#02x", uint8(t))
}

// Reply codes.
const (
	codeOK          uint8 = 0
	codeNoRoute     uint8 = 1 // forward: this relay does not hold the name
	codeFailed      uint8 = 2 // forward: delivery failed otherwise
	codeUnavailable uint8 = 3 // fetch_dir: no directory; pull: not ready
)

// Decoding errors. They map to the dropped-messages metric.
var (
	errMalformed = errors.New("cluster: malformed message")
	errTooLarge  = errors.New("cluster: message exceeds size limit")
	errUnknown   = errors.New("cluster: unknown message type or version")
)

// message is one decoded cluster message.
type message interface{ msgType() msgType }

// change is one entry of a routes message.
type change struct {
	held bool
	name string
}

// routesMsg carries the route changes of versions base+1..base+len(changes)
// of origin's incarnation inc.
type routesMsg struct {
	origin    string
	inc, base uint64
	changes   []change
}

// dirMsg says origin holds directory version.
type dirMsg struct {
	origin       string
	inc, version uint64
}

// record is a relay's complete route list at version, and the newest
// directory version it holds.
type record struct {
	origin            string
	inc, version, dir uint64
	names             []string
}

// stateMsg is the push/pull state: what the sender knows of every relay.
type stateMsg struct{ records []record }

// request is the head of every request.
type request struct {
	id   uint64
	from string
	addr string // where to send the reply if from is unknown: IP:port
}

// forwardMsg asks the receiver to deliver in to its local control session.
type forwardMsg struct {
	request
	in wire.Incoming
}

// fetchDirMsg asks for the receiver's signed directory.
type fetchDirMsg struct {
	request
	version uint64 // the version the asker expects; informational
}

// pullMsg asks for the receiver's own route record.
type pullMsg struct{ request }

// refusedMsg tells the receiver that the announcements with these tokens,
// which it forwarded to from, will not be answered: the member withdrew
// the route before its proxy dialled back. It expects no reply.
type refusedMsg struct {
	from   string
	tokens []wire.Token
}

// replyMsg answers the request with the same id.
type replyMsg struct {
	id   uint64
	from string
	code uint8
	body []byte
}

func (routesMsg) msgType() msgType   { return typeRoutes }
func (dirMsg) msgType() msgType      { return typeDir }
func (stateMsg) msgType() msgType    { return typeState }
func (forwardMsg) msgType() msgType  { return typeForward }
func (fetchDirMsg) msgType() msgType { return typeFetchDir }
func (pullMsg) msgType() msgType     { return typePull }
func (refusedMsg) msgType() msgType  { return typeRefused }
func (replyMsg) msgType() msgType    { return typeReply }

// maxSize is the largest encoding of a message of type t, or 0 if t is
// unknown.
func maxSize(t msgType) int {
	switch t {
	case typeRoutes, typeDir:
		return maxGossip
	case typeState:
		return maxState
	case typeForward, typeFetchDir, typePull, typeRefused:
		return maxRequest
	case typeReply:
		return maxRequest + maxBody
	}
	return 0
}

// validRouteName reports whether s can be a route name: 1-253 bytes of
// a-z, 0-9, '-' and '.', the form the relay normalizes server names to.
func validRouteName(s string) bool {
	if len(s) == 0 || len(s) > wire.MaxName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validMemberName(s string) bool { return pki.ValidName(s) == nil }

// routesHeader is the encoded size of a routes message without changes.
func routesHeader(origin string) int { return 2 + 1 + len(origin) + 8 + 8 + 2 }

// changeSize is the encoded size of one change.
func changeSize(name string) int { return 1 + 1 + len(name) }

func addString(b *cryptobyte.Builder, s string) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

func readString(s *cryptobyte.String, valid func(string) bool) (string, bool) {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || !valid(string(v)) {
		return "", false
	}
	return string(v), true
}

// validReplyAddr reports whether s is an IP literal and a nonzero port.
func validReplyAddr(s string) bool {
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Port() != 0
}

func addRequest(b *cryptobyte.Builder, r request) {
	b.AddUint64(r.id)
	addString(b, r.from)
	addString(b, r.addr)
}

func readRequest(s *cryptobyte.String) (request, bool) {
	var r request
	ok := s.ReadUint64(&r.id)
	if ok {
		r.from, ok = readString(s, validMemberName)
	}
	if ok {
		r.addr, ok = readString(s, validReplyAddr)
	}
	return r, ok
}

// encode returns the encoding of m. It fails only for a message this package
// could not have built, such as a name that does not fit its length byte.
func encode(m message) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	b.AddUint8(protoVersion)
	b.AddUint8(uint8(m.msgType()))
	switch m := m.(type) {
	case routesMsg:
		addString(b, m.origin)
		b.AddUint64(m.inc)
		b.AddUint64(m.base)
		if len(m.changes) > math.MaxUint16 {
			return nil, fmt.Errorf("%w: %d changes", errTooLarge, len(m.changes))
		}
		b.AddUint16(uint16(len(m.changes)))
		for _, c := range m.changes {
			var op uint8
			if c.held {
				op = 1
			}
			b.AddUint8(op)
			addString(b, c.name)
		}
	case dirMsg:
		addString(b, m.origin)
		b.AddUint64(m.inc)
		b.AddUint64(m.version)
	case stateMsg:
		b.AddUint32(uint32(len(m.records)))
		for _, r := range m.records {
			addRecord(b, r)
		}
	case forwardMsg:
		addRequest(b, m.request)
		// The same layout as a wire Incoming payload, so that wire.Decode
		// checks it on the receiving side.
		b.AddBytes(m.in.Token[:])
		addString(b, m.in.Name)
		addString(b, m.in.PairAddr)
	case fetchDirMsg:
		addRequest(b, m.request)
		b.AddUint64(m.version)
	case pullMsg:
		addRequest(b, m.request)
	case refusedMsg:
		addString(b, m.from)
		if len(m.tokens) == 0 || len(m.tokens) > maxRefused {
			return nil, fmt.Errorf("%w: refused message with %d tokens", errTooLarge, len(m.tokens))
		}
		b.AddUint8(uint8(len(m.tokens)))
		for _, t := range m.tokens {
			b.AddBytes(t[:])
		}
	case replyMsg:
		b.AddUint64(m.id)
		addString(b, m.from)
		b.AddUint8(m.code)
		if len(m.body) > maxBody {
			return nil, fmt.Errorf("%w: reply body of %d bytes", errTooLarge, len(m.body))
		}
		b.AddUint32(uint32(len(m.body)))
		b.AddBytes(m.body)
	default:
		return nil, errUnknown
	}
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if len(out) > maxSize(m.msgType()) {
		return nil, fmt.Errorf("%w: %v message of %d bytes", errTooLarge, m.msgType(), len(out))
	}
	return out, nil
}

func addRecord(b *cryptobyte.Builder, r record) {
	addString(b, r.origin)
	b.AddUint64(r.inc)
	b.AddUint64(r.version)
	b.AddUint64(r.dir)
	b.AddUint32(uint32(len(r.names)))
	for _, n := range r.names {
		addString(b, n)
	}
}

// recordSize is the encoded size of r.
func recordSize(r record) int {
	n := recordMin - 1 + len(r.origin)
	for _, name := range r.names {
		n += 1 + len(name)
	}
	return n
}

// decode decodes one message. It never panics and never aliases b. lim
// bounds the names one record may carry.
func decode(b []byte, lim limits) (message, error) {
	if len(b) < 2 {
		return nil, errMalformed
	}
	t := msgType(b[1])
	max := maxSize(t)
	if b[0] != protoVersion || max == 0 {
		return nil, fmt.Errorf("%w: version %d, %v", errUnknown, b[0], t)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w: %v message of %d bytes", errTooLarge, t, len(b))
	}
	s := cryptobyte.String(b[2:])
	var m message
	ok := true
	switch t {
	case typeRoutes:
		var r routesMsg
		var n uint16
		r.origin, ok = readString(&s, validMemberName)
		ok = ok && s.ReadUint64(&r.inc) && s.ReadUint64(&r.base) && s.ReadUint16(&n)
		// Each change takes at least 3 bytes; the versions must not wrap.
		ok = ok && n > 0 && int(n) <= len(s)/3 && r.base <= math.MaxUint64-uint64(n)
		if ok {
			r.changes = make([]change, n)
			for i := range r.changes {
				var op uint8
				if !s.ReadUint8(&op) || op > 1 {
					ok = false
					break
				}
				r.changes[i].held = op == 1
				if r.changes[i].name, ok = readString(&s, validRouteName); !ok {
					break
				}
			}
		}
		m = r
	case typeDir:
		var d dirMsg
		d.origin, ok = readString(&s, validMemberName)
		ok = ok && s.ReadUint64(&d.inc) && s.ReadUint64(&d.version)
		m = d
	case typeState:
		var st stateMsg
		var n uint32
		ok = s.ReadUint32(&n) && n <= maxRecords && int(n) <= len(s)/recordMin
		if ok {
			st.records = make([]record, n)
			for i := range st.records {
				if st.records[i], ok = readRecord(&s, lim); !ok {
					break
				}
			}
		}
		m = st
	case typeForward:
		var f forwardMsg
		if f.request, ok = readRequest(&s); ok {
			fr, err := wire.Decode(wire.TypeIncoming, s)
			if err != nil {
				return nil, fmt.Errorf("%w: forward: %v", errMalformed, err)
			}
			f.in = fr.(wire.Incoming)
			s = nil
		}
		m = f
	case typeFetchDir:
		var f fetchDirMsg
		f.request, ok = readRequest(&s)
		ok = ok && s.ReadUint64(&f.version)
		m = f
	case typePull:
		var p pullMsg
		p.request, ok = readRequest(&s)
		m = p
	case typeRefused:
		var r refusedMsg
		var n uint8
		r.from, ok = readString(&s, validMemberName)
		ok = ok && s.ReadUint8(&n) && n > 0 && n <= maxRefused && len(s) == int(n)*len(wire.Token{})
		if ok {
			r.tokens = make([]wire.Token, n)
			for i := range r.tokens {
				s.CopyBytes(r.tokens[i][:])
			}
		}
		m = r
	case typeReply:
		var r replyMsg
		var n uint32
		var body []byte
		ok = s.ReadUint64(&r.id)
		if ok {
			r.from, ok = readString(&s, validMemberName)
		}
		ok = ok && s.ReadUint8(&r.code) && s.ReadUint32(&n) && n <= maxBody && s.ReadBytes(&body, int(n))
		r.body = append([]byte(nil), body...)
		m = r
	}
	if !ok || !s.Empty() {
		return nil, fmt.Errorf("%w: %v", errMalformed, t)
	}
	return m, nil
}

func readRecord(s *cryptobyte.String, lim limits) (record, bool) {
	var r record
	var n uint32
	var ok bool
	r.origin, ok = readString(s, validMemberName)
	ok = ok && s.ReadUint64(&r.inc) && s.ReadUint64(&r.version) && s.ReadUint64(&r.dir) && s.ReadUint32(&n)
	// Each name takes at least 2 bytes.
	if !ok || int64(n) > int64(lim.maxNames) || int(n) > len(*s)/2 {
		return r, false
	}
	r.names = make([]string, n)
	bytes := 0
	for i := range r.names {
		if r.names[i], ok = readString(s, validRouteName); !ok {
			return r, false
		}
		bytes += len(r.names[i])
	}
	return r, bytes <= lim.maxNameBytes
}

// decodeRecord decodes the body of a pull reply: a state message with
// exactly one record.
func decodeRecord(body []byte, lim limits) (record, error) {
	m, err := decode(body, lim)
	if err != nil {
		return record{}, err
	}
	st, ok := m.(stateMsg)
	if !ok || len(st.records) != 1 {
		return record{}, fmt.Errorf("%w: pull reply is not one record", errMalformed)
	}
	return st.records[0], nil
}
