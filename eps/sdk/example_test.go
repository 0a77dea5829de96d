package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/eps/sdk"
)

type Query struct {
	Location string    `json:"location"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
}

type Guest struct {
	Name  string `json:"name"`
	Phone string `json:"phone"`
}

// A health office's software asks a vendor for a guest list.
func ExampleCall() {
	c := &sdk.Client{URL: "http://127.0.0.1:8321/", Token: sdk.Token(os.Getenv("KURIER_TOKEN"))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	guests, err := sdk.Call[[]Guest](ctx, c, "vendor-a", "guest-lists", Query{Location: "Café Rot"})
	switch {
	case errors.Is(err, sdk.ErrUnavailable), errors.Is(err, sdk.ErrTimeout):
		log.Print("vendor-a cannot be reached now; try again later")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(len(guests), "guests")
}

// A vendor's software sends a submission asynchronously and waits for the
// office's receipt.
func ExampleClient_Send() {
	c := &sdk.Client{URL: "http://127.0.0.1:8321/"}
	ctx := context.Background()
	id, err := c.Send(ctx, "hd-1", "submit", map[string]any{"guests": []Guest{{Name: "Erika Mustermann"}}},
		sdk.SendOptions{Deadline: time.Now().Add(48 * time.Hour)})
	if err != nil {
		log.Fatal(err)
	}
	d, err := c.Wait(ctx, id) // or handle the status report with Mux.HandleStatus
	if err != nil {
		log.Fatal(err)
	}
	if err := d.Err(); err != nil {
		log.Fatal(err)
	}
	log.Printf("delivered; keep the receipt as proof: %s", d.Receipt.Raw)
}

// Software that cannot accept connections polls its endpoint server.
func ExamplePoller() {
	dedup, err := sdk.OpenDedup("/var/lib/office-app/kurier-dedup.db")
	if err != nil {
		log.Fatal(err)
	}
	defer dedup.Close()
	mux := &sdk.Mux{Dedup: dedup}
	mux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		var guests []Guest
		if err := m.Decode(&guests); err != nil {
			return nil, err // the sender gets Invalid params
		}
		log.Printf("%d guests from %s", len(guests), m.From) // m.From: the verified sender
		return map[string]string{"case": "A-17"}, nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	p := &sdk.Poller{Client: &sdk.Client{URL: "http://127.0.0.1:8321/"}, Mux: mux}
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// A vendor's software seals a guest list itself, so that its own endpoint
// server never holds the plaintext, and sends it.
func ExampleSealFor() {
	c := &sdk.Client{URL: "http://127.0.0.1:8321/"}
	ctx := context.Background()
	env, id, err := sdk.SealFor(ctx, c, "hd-1", "submit", []Guest{{Name: "Erika Mustermann", Phone: "0172 5551234"}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.SendSealed(ctx, "hd-1", "submit", env, id, sdk.SendOptions{}); err != nil {
		log.Fatal(err)
	}
}

// The endpoint server POSTs incoming messages to the software's callback;
// here one is delivered by hand, as eps does it, to show what the handler
// sees and what goes back.
func ExampleMux_Handler() {
	mux := &sdk.Mux{}
	mux.Handle("guest-lists", func(ctx context.Context, m *sdk.Message) (any, error) {
		var q Query
		if err := m.Decode(&q); err != nil {
			return nil, err
		}
		// The sender is what the endpoint server says; the "caller" in the
		// params is only data.
		return map[string]any{"caller": m.From, "location": q.Location, "guests": []Guest{}}, nil
	})
	// Serve it: http.ListenAndServe("127.0.0.1:8400", mux.Handler(...)),
	// with eps.Config.Callback "http://127.0.0.1:8400/" and the same token
	// as eps.Config.CallbackToken.
	h := mux.Handler(sdk.CallbackOptions{Token: "s3cret"})

	const id = "6b7c1f0e2d3a4b5c6d7e8f9091a2b3c4"
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(
		`{"jsonrpc":"2.0","id":"`+id+`","method":"guest-lists","params":{"location":"Café Rot","caller":"vendor-b"}}`))
	r.Header.Set("Authorization", "Bearer s3cret")
	r.Header.Set("Kurier-From", "hd-1")
	r.Header.Set("Kurier-Message-Id", id)
	r.Header.Set("Kurier-Kind", "request")
	r.Header.Set("Kurier-Service", "guest-lists")
	r.Header.Set("Kurier-Deadline", "2030-01-01T00:00:00Z")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Body)
	// Output: 200 {"jsonrpc":"2.0","result":{"caller":"hd-1","guests":[],"location":"Café Rot"},"id":"6b7c1f0e2d3a4b5c6d7e8f9091a2b3c4"}
}

// A handler keeps its effects in the Dedup's file with Dedup.Update, so
// that they and the record of the message commit together: the message is
// delivered twice (as after a crash before the acknowledgement) but the
// case is created once, and both deliveries get the same answer.
func ExampleDedup_Update() {
	dir, err := os.MkdirTemp("", "dedup-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dedup, err := sdk.OpenDedup(filepath.Join(dir, "office.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer dedup.Close()

	mux := &sdk.Mux{Dedup: dedup}
	mux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		return dedup.Update(ctx, func(tx *bolt.Tx) (any, error) {
			cases, err := tx.CreateBucketIfNotExists([]byte("cases"))
			if err != nil {
				return nil, err
			}
			n, err := cases.NextSequence()
			if err != nil {
				return nil, err
			}
			return map[string]uint64{"case": n}, cases.Put([]byte(m.ID.String()), m.Params)
		})
	})
	h := mux.Handler(sdk.CallbackOptions{Token: "s3cret"})

	deliver := func() string {
		const id = "00112233445566778899aabbccddeeff"
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(
			`{"jsonrpc":"2.0","id":"`+id+`","method":"submit","params":{"guest":"Erika"}}`))
		r.Header.Set("Authorization", "Bearer s3cret")
		r.Header.Set("Kurier-From", "vendor-a")
		r.Header.Set("Kurier-Message-Id", id)
		r.Header.Set("Kurier-Kind", "request")
		r.Header.Set("Kurier-Service", "submit")
		r.Header.Set("Kurier-Deadline", "2030-01-01T00:00:00Z")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Body.String()
	}
	fmt.Println(deliver())
	fmt.Println(deliver())
	dedup.DB().View(func(tx *bolt.Tx) error {
		fmt.Println("cases:", tx.Bucket([]byte("cases")).Stats().KeyN)
		return nil
	})
	// Output:
	// {"jsonrpc":"2.0","result":{"case":1},"id":"00112233445566778899aabbccddeeff"}
	// {"jsonrpc":"2.0","result":{"case":1},"id":"00112233445566778899aabbccddeeff"}
	// cases: 1
}

// Errors from the endpoint server and from other members' software match
// sentinels by code.
func ExampleError() {
	var err error = &sdk.Error{Code: -32003, Message: "hd-1 unreachable"}
	fmt.Println(errors.Is(err, sdk.ErrUnavailable), errors.Is(err, sdk.ErrTimeout))

	// A handler chooses the code its caller sees.
	err = fmt.Errorf("%w: no location given", sdk.ErrInvalidParams)
	fmt.Println(err)
	// Output:
	// true false
	// sdk: invalid params: no location given
}
