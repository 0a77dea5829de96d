package sni_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/relay/sni"
)

// helloCase is a ClientHello produced by crypto/tls and what Parse must
// report for it.
type helloCase struct {
	name   string
	stream []byte // the records tls.Client wrote
	want   sni.Hello
}

var (
	longName = strings.Repeat(strings.Repeat("a", 63)+".", 4)[:253] // longest DNS name
	overName = strings.Repeat("b", 300)                             // not a DNS name; crypto/tls sends it anyway
)

// helloCases returns real hellos written by this Go version's crypto/tls.
func helloCases(t testing.TB) []helloCase {
	const name = "abc.office.example"
	tls13 := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS13}
	return []helloCase{
		{"default PQ", clientHello(t, &tls.Config{ServerName: name}), sni.Hello{ServerName: name, TLS13: true}},
		{"TLS 1.3 only", clientHello(t, tls13), sni.Hello{ServerName: name, TLS13: true}},
		{"TLS 1.2 only", clientHello(t, &tls.Config{ServerName: name, MaxVersion: tls.VersionTLS12}), sni.Hello{ServerName: name}},
		{"ALPN", clientHello(t, &tls.Config{ServerName: name, NextProtos: []string{"h2", "http/1.1"}}),
			sni.Hello{ServerName: name, ALPN: []string{"h2", "http/1.1"}, TLS13: true}},
		{"IP address", clientHello(t, &tls.Config{ServerName: "10.0.0.7"}), sni.Hello{TLS13: true}},
		{"no server name", clientHello(t, &tls.Config{InsecureSkipVerify: true}), sni.Hello{TLS13: true}},
		{"trailing dot stripped by client", clientHello(t, &tls.Config{ServerName: name + "."}), sni.Hello{ServerName: name, TLS13: true}},
		{"case kept", clientHello(t, &tls.Config{ServerName: "ABC.Office.Example"}), sni.Hello{ServerName: "ABC.Office.Example", TLS13: true}},
		{"253-byte name", clientHello(t, &tls.Config{ServerName: longName}), sni.Hello{ServerName: longName, TLS13: true}},
		{"300-byte name", clientHello(t, &tls.Config{ServerName: overName}), sni.Hello{ServerName: overName, TLS13: true}},
		{"resumption PSK", resumptionHello(t, name), sni.Hello{ServerName: name, ALPN: []string{"kurier/1"}, TLS13: true}},
	}
}

// clientHello returns the bytes tls.Client writes for its first flight.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &recordConn{}
	if err := tls.Client(c, cfg).Handshake(); !errors.Is(err, io.EOF) {
		t.Fatalf("capture ClientHello: handshake ended with %v, want EOF", err)
	}
	return bytes.Clone(c.written.Bytes())
}

// resumptionHello completes a TLS 1.3 handshake over loopback TCP to get a
// session ticket, and returns the next hello, which carries pre_shared_key.
func resumptionHello(t testing.TB, name string) []byte {
	t.Helper()
	now := time.Now()
	cert := selfSigned(t, name, now)
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"kurier/1"}, Time: func() time.Time { return now }}
	cliCfg := &tls.Config{
		ServerName:         name,
		RootCAs:            roots,
		NextProtos:         []string{"kurier/1"},
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: tls.NewLRUClientSessionCache(1),
		Time:               func() time.Time { return now },
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		sc := tls.Server(c, srvCfg)
		if _, err := sc.Write([]byte("x")); err != nil { // handshakes, then sends the ticket before "x"
			t.Error(err)
		}
		io.Copy(io.Discard, sc) // until the client closes
	})

	c, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil { // processes the ticket
		t.Fatal(err)
	}
	return clientHello(t, cliCfg)
}

// selfSigned returns an ECDSA P-256 certificate for name, valid around now.
func selfSigned(t testing.TB, name string, now time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// recordConn is a net.Conn that records what is written to it and reads
// EOF, which ends a client handshake right after its first flight.
type recordConn struct {
	streamConn
	written bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error) { return c.written.Write(p) }

// streamConn is a net.Conn that reads r and discards writes.
type streamConn struct{ r bytes.Reader }

func (c *streamConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

var errStop = errors.New("stop after GetConfigForClient")

// stdlibHello runs a crypto/tls server on stream and returns the
// ClientHelloInfo it passes to GetConfigForClient, or false if it never
// gets that far.
func stdlibHello(stream []byte) (*tls.ClientHelloInfo, bool) {
	var got *tls.ClientHelloInfo
	c := &streamConn{}
	c.r.Reset(stream)
	tls.Server(c, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			got = chi
			return nil, errStop // abort: the handshake fails with errStop
		},
	}).Handshake()
	return got, got != nil
}

// reframe splits msg into handshake records whose payload sizes are taken
// from sizes in turn, the last one repeating. The first record has legacy
// version 0x0301 and the rest 0x0303, as clients send them.
func reframe(msg []byte, sizes ...int) []byte {
	var out []byte
	vers := byte(1)
	for i := 0; len(msg) > 0; i++ {
		n := min(sizes[min(i, len(sizes)-1)], len(msg))
		out = append(out, 0x16, 3, vers, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
		vers = 3
	}
	return out
}

// payloads joins the payloads of the records in stream, which must be
// whole records.
func payloads(stream []byte) []byte {
	var msg []byte
	for len(stream) >= 5 {
		n := int(stream[3])<<8 | int(stream[4])
		msg = append(msg, stream[5:5+n]...)
		stream = stream[5+n:]
	}
	return msg
}

// deviation reports why ReadHello may rightly reject a stream that crypto/tls
// accepts up to GetConfigForClient, or "" if it must not. The reasons are
// the rules documented on ReadHello and MaxHelloLen.
func deviation(stream []byte) string {
	var msg []byte
	for records := 1; len(stream) >= 5; records++ {
		n := int(stream[3])<<8 | int(stream[4])
		switch {
		case stream[0] != 0x16:
			return "non-handshake record"
		case records > sni.MaxRecords:
			return "too many records"
		case len(stream) < 5+n:
			return ""
		}
		msg = append(msg, stream[5:5+n]...)
		stream = stream[5+n:]
		if len(msg) < 4 {
			continue
		}
		want := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		switch {
		case want > sni.MaxHelloLen:
			return "too large"
		case len(msg) > want:
			return "handshake data after the ClientHello"
		case len(msg) == want:
			return ""
		}
	}
	return ""
}

// checkAgrees fails t unless got reports what crypto/tls reported in chi.
func checkAgrees(t *testing.T, got *sni.Hello, chi *tls.ClientHelloInfo) {
	t.Helper()
	if got.ServerName != chi.ServerName || !slices.Equal(got.ALPN, chi.SupportedProtos) {
		t.Fatalf("got ServerName %q, ALPN %q; crypto/tls says %q, %q", got.ServerName, got.ALPN, chi.ServerName, chi.SupportedProtos)
	}
	for _, e := range chi.Extensions {
		if e != 43 { // supported_versions
			continue
		}
		want := false
		for _, v := range chi.SupportedVersions {
			want = want || v == tls.VersionTLS13
		}
		if got.TLS13 != want {
			t.Fatalf("got TLS13 %v; crypto/tls says supported versions %x", got.TLS13, chi.SupportedVersions)
		}
	}
}
