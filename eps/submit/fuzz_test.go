package submit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/seal"
)

// FuzzSubmitBody: the body of POST /submit comes from anyone who holds a
// link; the handler's parser must never panic and must accept only an
// anonymous envelope for its own message id and key.
//
//	go test -run '^$' -fuzz FuzzSubmitBody -fuzztime 60s ./eps/submit
func FuzzSubmitBody(f *testing.F) {
	key := x25519Key(&testing.T{}, "browser-1")
	link := testLink(&testing.T{}, key, time.Now())
	env, err := seal.SealUnsigned(key.Public(), link.Context(), []byte(`{"format":"kurier-submission/v2"}`))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(map[string]any{"message_id": link.MessageID, "sealed": env})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"message_id":"x","sealed":null}`))
	f.Add(bytes.Replace(good, []byte(link.MessageID), []byte(strings.Repeat("0", 32)), 1))
	f.Fuzz(func(t *testing.T, body []byte) {
		lh := &LinkHandler{cfg: Config{Link: *link}}
		got, result, msg := lh.parse(body)
		if got == nil {
			if result == "" || msg == "" {
				t.Fatalf("refusal without a reason: %q %q", result, msg)
			}
			return
		}
		if got.Signed() || got.KeyID != link.Recipient.ID || got.KEM != link.Recipient.KEM {
			t.Fatalf("accepted an envelope not for this link: %+v", got)
		}
	})
}

// FuzzParseSubmission: what the office's software decodes after opening a
// citizen's envelope is the citizen's input. Whatever it accepts must
// re-encode to the same, and every contact's names must be names to the
// contact-data model, which IndexCase converts them into.
//
//	go test -run '^$' -fuzz FuzzParseSubmission -fuzztime 60s ./eps/submit
func FuzzParseSubmission(f *testing.F) {
	f.Add([]byte(`{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-11-24T10:00:00Z","contacts":[{"first_name":"Erika","phone":"+49 30 1","category":"household","last_contact":"2026-11-20"}],"events":[]}`))
	f.Add([]byte(`{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-11-24T10:00:00Z","contacts":[{"first_name":"Aylin","last_name":"Şahin-O’Brien","email":"a@example.de","category":"work","first_contact":"2026-11-19","last_contact":"2026-11-20","note":"Büro"}],"events":[{"name":"Chorprobe","place":"Köln","start":"2026-11-18T19:30"}]}`))
	f.Add([]byte(`{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-11-24T10:00:00Z","contacts":[{"last_name":"Müller","phone":"0221/1234567","category":"close","last_contact":"2026-11-20"}],"events":[]}`))
	f.Add([]byte(`{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-11-24T10:00:00Z","contacts":[{"last_name":"Dr. Müller","phone":"0221/1234567","category":"close","last_contact":"2026-11-20"}],"events":[]}`))
	f.Add([]byte(`{"format":"kurier-submission/v1","label":"k7x2mq","submitted_at":"2026-11-24T10:00:00Z","contacts":[{"name":"Erika Mustermann","phone":"+49 30 1","category":"household","last_contact":"2026-11-20"}],"events":[]}`))
	f.Add([]byte(`{"format":"kurier-submission/v2","contacts":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSubmission(b)
		if err != nil {
			if !errors.Is(err, ErrBadSubmission) {
				t.Fatalf("error %v does not match ErrBadSubmission", err)
			}
			return
		}
		for i, c := range s.Contacts {
			p := contactdata.ContactPerson{FirstName: c.FirstName, LastName: c.LastName}
			ve, _ := errors.AsType[contactdata.ValidationErrors](p.Validate())
			for _, e := range ve {
				if e.Field == "first_name" || e.Field == "last_name" || e.Field == "" {
					t.Fatalf("contacts[%d]: accepted names the model refuses: %v", i, e)
				}
			}
		}
		// What was accepted re-encodes and parses again the same.
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ParseSubmission(again)
		if err != nil {
			t.Fatalf("re-encoded submission refused: %v\n%s", err, again)
		}
		if a, b := mustJSON(t, s), mustJSON(t, s2); a != b {
			t.Fatalf("round trip changed it:\n%s\n%s", a, b)
		}
	})
}
