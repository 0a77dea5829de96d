package locations

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kurier-net/kurier/eps/contactdata"
)

func loc(id, name, street, zip, city string) *contactdata.Location {
	return &contactdata.Location{
		ID:   id,
		Name: name,
		Contact: contactdata.LocationContact{
			OfficialName: name + " GmbH",
			Address:      contactdata.Address{Street: street, HouseNumber: "1", ZipCode: zip, City: city},
			Phone:        "+49 221 1234567",
		},
	}
}

func openIndex(t *testing.T, path string, max int) *Index {
	t.Helper()
	ix, err := Open(Config{Path: path, MaxPerProvider: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

func ids(r *Result) []string {
	var out []string
	for _, e := range r.Locations {
		out = append(out, e.Provider+"/"+e.Location.ID)
	}
	return out
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"Gasthaus Zum Löwen":    "gasthaus zum loewen",
		"LÖWEN":                 "loewen",
		"Lo\u0308wen":           "loewen", // decomposed ö
		"Straße":                "strasse",
		"Café":                  "cafe",
		"  Am  Markt, 3 a ":     "am markt 3 a",
		"Deutz-Mülheimer Str.":  "deutz muelheimer str",
		"50667":                 "50667",
		"":                      "",
		"---":                   "",
		"Heuriger Zum Grünen B": "heuriger zum gruenen b",
	} {
		if got := fold(in); got != want {
			t.Errorf("fold(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSearchOrderLimitAndReplace(t *testing.T) {
	ix := openIndex(t, filepath.Join(t.TempDir(), "ix.db"), 0)
	for _, p := range []struct {
		owner string
		l     *contactdata.Location
	}{
		{"vendor-b", loc("x1", "Zum Löwen", "Hauptstraße", "50667", "Köln")},
		{"vendor-a", loc("x1", "Zum Löwen", "Ringstraße", "50667", "Köln")},
		{"vendor-a", loc("a2", "Café am Markt", "Am Markt", "01067", "Dresden")},
		{"vendor-a", loc("a3", "Bäckerei Löwenzahn", "Am Dom", "50667", "Köln")},
	} {
		if created, err := ix.Put(p.owner, p.l); err != nil || !created {
			t.Fatalf("Put(%s, %s) = %v, %v", p.owner, p.l.ID, created, err)
		}
	}
	search := func(text string, limit int) *Result {
		t.Helper()
		r, err := ix.Search(Query{Text: text, Limit: limit})
		if err != nil {
			t.Fatalf("Search(%q): %v", text, err)
		}
		return r
	}
	// Sorted by folded name, then provider, then id; both words must match.
	if got := fmt.Sprint(ids(search("loewen koeln", 0))); got != "[vendor-a/a3 vendor-a/x1 vendor-b/x1]" {
		t.Errorf("search = %s", got)
	}
	if got := fmt.Sprint(ids(search("LÖWEN ring", 0))); got != "[vendor-a/x1]" {
		t.Errorf("search = %s", got)
	}
	if got := fmt.Sprint(ids(search("01067", 0))); got != "[vendor-a/a2]" {
		t.Errorf("search by postcode = %s", got)
	}
	r := search("köln", 2)
	if len(r.Locations) != 2 || !r.More {
		t.Errorf("limit 2: %v more=%v", ids(r), r.More)
	}
	if r := search("nowhere", 0); len(r.Locations) != 0 || r.More || r.Locations == nil {
		t.Errorf("no match: %+v", r)
	}

	// Replace: same owner and id.
	if created, err := ix.Put("vendor-a", loc("x1", "Zum Roten Ochsen", "Ringstraße", "50667", "Köln")); err != nil || created {
		t.Fatalf("replace = %v, %v", created, err)
	}
	if got := fmt.Sprint(ids(search("ochsen", 0))); got != "[vendor-a/x1]" {
		t.Errorf("after replace: %s", got)
	}
	if got := fmt.Sprint(ids(search("zum loewen", 0))); got != "[vendor-b/x1]" {
		t.Errorf("vendor-b's x1 changed with vendor-a's: %s", got)
	}

	// Delete only the owner's.
	if err := ix.Delete("vendor-b", "a2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("vendor-b deleting vendor-a's a2 = %v", err)
	}
	if err := ix.Delete("vendor-a", "a2"); err != nil {
		t.Fatal(err)
	}
	if err := ix.Delete("vendor-a", "a2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete = %v", err)
	}

	for _, bad := range []Query{{Text: ""}, {Text: "   "}, {Text: "a", Limit: -1}, {Text: "a", Limit: MaxLimit + 1}, {Text: "a b c d e f g h i"}, {Text: "!!"}} {
		if _, err := ix.Search(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Search(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := ix.Put("vendor-a", &contactdata.Location{ID: "bad"}); err == nil {
		t.Error("invalid location accepted")
	}
}

func TestListPagingLimitAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ix.db")
	ix := openIndex(t, path, 5)
	for i := range 5 {
		if _, err := ix.Put("vendor-a", loc(fmt.Sprintf("l%d", i), "Ort", "Weg", "50667", "Köln")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ix.Put("vendor-a", loc("l9", "Ort", "Weg", "50667", "Köln")); !errors.Is(err, ErrFull) {
		t.Errorf("sixth location = %v, want ErrFull", err)
	}
	if _, err := ix.Put("vendor-a", loc("l0", "Ort neu", "Weg", "50667", "Köln")); err != nil {
		t.Errorf("replacing at the limit = %v", err)
	}
	if _, err := ix.Put("vendor-ab", loc("l0", "Ort", "Weg", "50667", "Köln")); err != nil {
		t.Fatal(err) // another provider, whose name starts with vendor-a's
	}
	r, err := ix.List("vendor-a", "", 3)
	if err != nil || fmt.Sprint(ids(r)) != "[vendor-a/l0 vendor-a/l1 vendor-a/l2]" || !r.More {
		t.Fatalf("page 1 = %v, %v", ids(r), err)
	}
	r, err = ix.List("vendor-a", "l2", 3)
	if err != nil || fmt.Sprint(ids(r)) != "[vendor-a/l3 vendor-a/l4]" || r.More {
		t.Fatalf("page 2 = %v more=%v, %v", ids(r), r.More, err)
	}
	ix.Close()

	ix = openIndex(t, path, 5)
	e, err := ix.Get("vendor-a", "l0")
	if err != nil || e.Location.Name != "Ort neu" || e.Provider != "vendor-a" || e.UpdatedAt.IsZero() {
		t.Fatalf("after reopening: %+v, %v", e, err)
	}
	if err := ix.Delete("vendor-a", "l1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Put("vendor-a", loc("l9", "Ort", "Weg", "50667", "Köln")); err != nil {
		t.Errorf("after a delete there is room again: %v", err)
	}
}
