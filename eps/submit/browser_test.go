package submit

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// The browser tests drive Debian's headless Chromium (.ci/install-chromium)
// through the submission page over real TLS, as a citizen would with a
// keyboard, and open in Go what the page sealed.

var screenshots = flag.String("screenshots", "", "write PNG screenshots of the page's steps to this directory")

// linkHost is the link's host name: label, office, network. Chromium
// resolves it to 127.0.0.1 (--host-resolver-rules) and trusts the test
// certificate by its key (--ignore-certificate-errors-spki-list).
const linkHost = "k7x2mq.hd-1.kurier.test"

// site is a link's Handler served over TLS on loopback.
type site struct {
	key   pki.SealPrivateKey
	link  *Link
	url   string // https://<linkHost>:<port>/#<secret>
	base  string // https://<linkHost>:<port>
	got   chan *seal.Envelope
	flags []string // for Chromium
}

func serveSite(t *testing.T, now time.Time) *site {
	t.Helper()
	s := &site{key: x25519Key(t, "browser-1"), got: make(chan *seal.Envelope, 4)}
	s.link = testLink(t, s.key, now)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := Handler(Config{
		Link: *s.link,
		OnSubmit: func(ctx context.Context, env *seal.Envelope) error {
			s.got <- env
			return nil
		},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ca := pkitest.NewCA(t, "kurier.test", now)
	cert := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{DNSNames: []string{linkHost}, KeyType: pkitest.P256}) // Chromium: no Ed25519
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	pin := sha256.Sum256(cert.Leaf.RawSubjectPublicKeyInfo)
	s.flags = []string{
		"--ignore-certificate-errors-spki-list=" + base64.StdEncoding.EncodeToString(pin[:]),
		"--host-resolver-rules=MAP " + linkHost + " 127.0.0.1",
	}
	s.base = fmt.Sprintf("https://%s:%d", linkHost, ln.Addr().(*net.TCPAddr).Port)
	s.url = s.base + "/#" + string(s.link.Secret)
	return s
}

func shot(p *page, name string) {
	if *screenshots != "" {
		p.screenshot(filepath.Join(*screenshots, name+".png"))
	}
}

// a11yScript returns the accessibility problems of the page as shown now,
// that can be found from the DOM and computed styles: language, labels,
// legends, names, headings, id references, live regions, contrast of every
// visible text (WCAG 2.1 formula on computed colors), external resources
// and cookies.
const a11yScript = `(() => {
  const v = [];
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length) && getComputedStyle(e).visibility !== "hidden";
  if (document.documentElement.lang !== "de") v.push("html lang is " + JSON.stringify(document.documentElement.lang));
  if (!document.title.trim()) v.push("no title");
  for (const e of document.querySelectorAll("input, select, textarea")) {
    if (e.type === "hidden") continue;
    const names = [...(e.labels || [])].map((l) => l.textContent.trim()).filter(Boolean);
    if (!names.length && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby")) v.push("no label: " + (e.id || e.outerHTML.slice(0, 80)));
  }
  const ids = new Set();
  for (const e of document.querySelectorAll("[id]")) {
    if (ids.has(e.id)) v.push("duplicate id " + e.id);
    ids.add(e.id);
  }
  for (const a of ["aria-describedby", "aria-labelledby", "for"]) {
    for (const e of document.querySelectorAll("[" + a + "]")) {
      for (const id of e.getAttribute(a).split(/\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) v.push(a + " of " + (e.id || e.tagName) + " names no element: " + id);
      }
    }
  }
  for (const f of document.querySelectorAll("fieldset")) {
    const l = f.firstElementChild;
    if (!l || l.tagName !== "LEGEND" || !l.textContent.trim()) v.push("fieldset without legend: " + f.id);
  }
  for (const b of document.querySelectorAll("button, a[href], [role=button]")) {
    if (visible(b) && !b.textContent.trim() && !b.getAttribute("aria-label")) v.push("unnamed " + b.tagName + " " + b.id);
  }
  const hs = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].filter(visible);
  if (hs.filter((h) => h.tagName === "H1").length !== 1) v.push("not exactly one visible h1");
  let prev = 0;
  for (const h of hs) {
    const l = +h.tagName[1];
    if (l > prev + 1) v.push("heading level skips to " + h.tagName + ": " + h.textContent.trim());
    prev = l;
  }
  if (document.getElementById("status").getAttribute("role") !== "status") v.push("no polite status region");
  if (document.getElementById("alert").getAttribute("role") !== "alert") v.push("no alert region");
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bgOf = (e) => {
    for (let n = e; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a === 1) return c;
      if (c && c.a > 0) return null; // translucent: not handled, reported
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let texts = 0;
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const e = t.parentElement;
    if (!t.textContent.trim() || seen.has(e) || !visible(e) || e.closest(".visually-hidden, noscript, template")) continue;
    seen.add(e);
    texts++;
    const fg = parse(getComputedStyle(e).color);
    const bg = bgOf(e);
    if (!fg || !bg || fg.a !== 1) { v.push("cannot compute the colors of: " + t.textContent.trim().slice(0, 40)); continue; }
    const [a, b] = [lum(fg), lum(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) v.push("contrast " + ratio.toFixed(2) + ":1 of: " + t.textContent.trim().slice(0, 40));
  }
  if (texts < 3) v.push("only " + texts + " visible texts checked");
  for (const r of performance.getEntriesByType("resource")) {
    if (new URL(r.name).origin !== location.origin) v.push("resource from another origin: " + r.name);
  }
  if (document.cookie) v.push("cookies: " + document.cookie);
  return v;
})()`

// interactiveRoles are the accessibility roles that must have a name.
var interactiveRoles = map[string]bool{
	"textbox": true, "searchbox": true, "combobox": true, "button": true, "radio": true, "checkbox": true,
	"link": true, "spinbutton": true, "slider": true, "listbox": true, "date": true, "DateTime": true, "InputTime": true,
}

// checkA11y fails t for every problem a11yScript finds and for every
// interactive node of Chromium's accessibility tree without a name.
func checkA11y(t *testing.T, p *page, step string) {
	t.Helper()
	var problems []string
	p.eval(a11yScript, &problems)
	for _, v := range problems {
		t.Errorf("%s: %s", step, v)
	}
	var tree struct {
		Nodes []struct {
			Ignored bool `json:"ignored"`
			Role    *struct {
				Value string `json:"value"`
			} `json:"role"`
			Name *struct {
				Value string `json:"value"`
			} `json:"name"`
		} `json:"nodes"`
	}
	p.call("Accessibility.getFullAXTree", nil, &tree)
	var named int
	for _, n := range tree.Nodes {
		if n.Ignored || n.Role == nil || !interactiveRoles[n.Role.Value] {
			continue
		}
		if n.Name == nil || strings.TrimSpace(n.Name.Value) == "" {
			t.Errorf("%s: a %s in the accessibility tree has no name", step, n.Role.Value)
			continue
		}
		named++
	}
	if named == 0 {
		t.Errorf("%s: no named controls in the accessibility tree", step)
	}
}

// focused describes document.activeElement and how its focus shows.
type focused struct {
	ID           string  `json:"id"`
	Tag          string  `json:"tag"`
	Text         string  `json:"text"`
	OutlineStyle string  `json:"outlineStyle"`
	OutlineWidth float64 `json:"outlineWidth"`
	FocusVisible bool    `json:"focusVisible"`
}

const focusedScript = `(() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  return { id: e.id, tag: e.tagName, text: (e.textContent || "").trim().slice(0, 60),
    outlineStyle: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth) || 0, focusVisible: e.matches(":focus-visible") };
})()`

func (p *page) focused() focused {
	p.t.Helper()
	var f focused
	p.eval(focusedScript, &f)
	return f
}

// tab presses Tab (shift: Shift+Tab) and checks that the element it
// reaches shows its focus: an outline of at least 2px (WCAG 2.4.7).
func (p *page) tab(shift bool) focused {
	p.t.Helper()
	mod := 0
	if shift {
		mod = 8
	}
	p.press("Tab", mod)
	f := p.focused()
	if f.Tag == "BODY" {
		p.t.Fatalf("Tab left the page's controls (focus on BODY)")
	}
	if f.OutlineStyle == "none" || f.OutlineWidth < 2 {
		p.t.Errorf("focus on %s#%s %q is not visible: outline %s %gpx (:focus-visible %v)", f.Tag, f.ID, f.Text, f.OutlineStyle, f.OutlineWidth, f.FocusVisible)
	}
	return f
}

// tabTo presses Tab until an element with the id (or, for "text:…", the
// text) has the focus, at most max times.
func (p *page) tabTo(target string, max int) {
	p.t.Helper()
	var path []string
	for range max {
		f := p.tab(false)
		path = append(path, f.Tag+"#"+f.ID+" "+f.Text)
		if f.ID == target || strings.HasPrefix(target, "text:") && f.Text == strings.TrimPrefix(target, "text:") {
			return
		}
	}
	p.t.Fatalf("%d Tabs did not reach %s; focus went:\n%s", max, target, strings.Join(path, "\n"))
}

func (p *page) activeID() string {
	p.t.Helper()
	return p.focused().ID
}

func (p *page) text(id string) string {
	p.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`document.getElementById(%q).textContent`, id), &s)
	return s
}

func (p *page) value(id string) string {
	p.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`document.getElementById(%q).value`, id), &s)
	return s
}

func visibleJS(id string) string { return fmt.Sprintf(`!document.getElementById(%q).hidden`, id) }

// typeDate types a date into a focused date field as digits, in the German
// order of the fields (TT.MM.JJJJ, then hh:mm for datetime-local), and
// checks the value the field took.
func (p *page) typeDate(id string, t time.Time, withTime bool) {
	p.t.Helper()
	if got := p.activeID(); got != id {
		p.t.Fatalf("focus on %q, want %q", got, id)
	}
	p.typeDigits(t.Format("02012006"))
	want := t.Format(time.DateOnly)
	if withTime {
		p.press("Tab", 0) // the year takes more than four digits: Tab on to the hour
		p.typeDigits(t.Format("1504"))
		want = t.Format(localMinute)
	}
	if got := p.value(id); got != want {
		p.t.Fatalf("typed %s into #%s, it holds %q", want, id, got)
	}
}

func TestBrowserSubmit(t *testing.T) {
	now := time.Now()
	s := serveSite(t, now)
	b := startBrowser(t, s.flags...)
	p := b.newPage(t)
	p.navigate(s.url)
	p.waitFor(visibleJS("step-form"))
	if got := p.text("office-name"); got != "Gesundheitsamt Musterstadt" {
		t.Errorf("office name %q", got)
	}
	shot(p, "1-form")
	checkA11y(t, p, "form")

	day := func(d int) time.Time {
		y, m, dd := now.AddDate(0, 0, d).Date()
		return time.Date(y, m, dd, 0, 0, 0, 0, time.Local)
	}
	first1, last1, last2 := day(-10), day(-3), day(-2)
	start := day(-5).Add(19 * time.Hour)
	end := start.Add(4*time.Hour + 30*time.Minute)

	// Contact 1, name only, with a title in the last name as people
	// write it; asking for the review fails, says why, and leads back to
	// the first problem by keyboard.
	p.tabTo("c1-first-name", 1) // focus was on the step's heading
	p.insertText("Jürgen")
	p.tabTo("c1-last-name", 1)
	p.insertText("Dr. Groß")
	p.tabTo("to-review", 20)
	p.press("Enter", 0)
	p.waitFor(visibleJS("error-summary"))
	if got := p.activeID(); got != "error-summary" {
		t.Errorf("after a failed check the focus is on %q, want the error summary", got)
	}
	summary := p.text("error-summary")
	for _, want := range []string{
		"Bitte korrigieren Sie 4 Angaben",
		"Kontaktperson 1: Der Nachname darf nur Buchstaben, Leerzeichen, Bindestriche und Apostrophe enthalten, also zum Beispiel keinen Titel wie „Dr.“ und keine Ziffern.",
		"Kontaktperson 1: Bitte geben Sie eine Telefonnummer oder eine E-Mail-Adresse an.",
		"Kontaktperson 1: Bitte wählen Sie die Art des Kontakts.",
		"Kontaktperson 1: Bitte geben Sie das Datum des letzten Kontakts an",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("error summary %q lacks %q", summary, want)
		}
	}
	var marked struct {
		Invalid       []string `json:"invalid"`
		Described     string   `json:"described"`
		Message       string   `json:"message"`
		NameDescribed string   `json:"nameDescribed"`
		NameMessage   string   `json:"nameMessage"`
		NameAfter     string   `json:"nameAfter"` // the label the name's message follows
		FirstDesc     string   `json:"firstDesc"`
		Role          string   `json:"role"`
	}
	p.eval(`({
	  invalid: [...document.querySelectorAll("[aria-invalid=true]")].map((e) => e.id),
	  described: document.getElementById("c1-phone").getAttribute("aria-describedby"),
	  message: document.getElementById("c1-phone-error").textContent,
	  nameDescribed: document.getElementById("c1-last-name").getAttribute("aria-describedby"),
	  nameMessage: document.getElementById("c1-last-name-error").textContent,
	  nameAfter: document.getElementById("c1-last-name-error").previousElementSibling.htmlFor,
	  firstDesc: document.getElementById("c1-first-name").getAttribute("aria-describedby"),
	  role: document.getElementById("error-summary").getAttribute("role"),
	})`, &marked)
	if fmt.Sprint(marked.Invalid) != "[c1-last-name c1-phone c1-category c1-last]" || marked.Described != "c1-phone-error" ||
		!strings.HasPrefix(marked.Message, "Fehler: ") || marked.Role != "alert" {
		t.Errorf("errors marked as %+v", marked)
	}
	// The name's message is at its field, and the field is described by
	// the names' hint and its message; the valid first name by the hint.
	if marked.NameDescribed != "c1-name-hint c1-last-name-error" || marked.NameAfter != "c1-last-name" ||
		!strings.HasPrefix(marked.NameMessage, "Fehler: Der Nachname darf nur") || marked.FirstDesc != "c1-name-hint" {
		t.Errorf("the last name's error marked as %+v", marked)
	}
	if got := p.text("c1-name-hint"); !strings.Contains(got, "ohne Titel wie „Dr.“") {
		t.Errorf("the names' hint says %q", got)
	}
	shot(p, "2-errors")
	checkA11y(t, p, "errors")

	p.tab(false) // the first problem's link
	p.press("Enter", 0)
	if got := p.activeID(); got != "c1-last-name" {
		t.Fatalf("the summary's first link led to %q, want c1-last-name", got)
	}
	p.press("End", 0)
	for range len([]rune("Dr. Groß")) {
		p.press("Backspace", 0)
	}
	p.insertText("Groß")
	if got := p.value("c1-last-name"); got != "Groß" {
		t.Fatalf("the corrected last name is %q", got)
	}
	p.tabTo("c1-phone", 1)
	p.insertText("+49 30 1234567")
	p.tabTo("c1-email", 1)
	p.tabTo("c1-category-household", 1) // into the radio group
	p.press("ArrowDown", 0)             // arrows choose within it
	if got := p.activeID(); got != "c1-category-close" {
		t.Fatalf("ArrowDown in the category went to %q", got)
	}
	p.tabTo("c1-first", 1)
	p.typeDate("c1-first", first1, false)
	p.tabTo("c1-last", 4) // Tab may first step through the date field's parts
	p.typeDate("c1-last", last1, false)
	p.tabTo("c1-note", 4)
	p.insertText("Kollege im Großraumbüro")

	// Contact 2, added by keyboard; the new row takes the focus. The
	// citizen knows her first name only, which is enough.
	p.tabTo("add-contact", 6)
	p.press("Enter", 0)
	if got := p.activeID(); got != "c2-first-name" {
		t.Fatalf("after adding a contact the focus is on %q, want c2-first-name", got)
	}
	p.waitFor(`document.getElementById("status").textContent === "Kontaktperson 2 hinzugefügt."`)
	p.insertText("Erika")
	p.tabTo("c2-email", 3)
	p.insertText("erika@example.de")
	p.tabTo("c2-category-household", 1)
	p.press("Space", 0)
	p.tabTo("c2-last", 6)
	p.typeDate("c2-last", last2, false)

	// A third contact, added and removed again by keyboard.
	p.tabTo("add-contact", 6)
	p.press("Enter", 0)
	p.tabTo("text:Kontaktperson 3 entfernen", 20)
	p.press("Enter", 0)
	if got := p.activeID(); got != "add-contact" {
		t.Errorf("after removing a contact the focus is on %q, want add-contact", got)
	}
	p.waitFor(`document.getElementById("status").textContent === "Kontaktperson 3 wurde entfernt."`)
	// An event.
	p.tabTo("add-event", 6)
	p.press("Enter", 0)
	if got := p.activeID(); got != "e4-name" {
		t.Fatalf("after adding an event the focus is on %q, want e4-name", got)
	}
	p.insertText("Geburtstagsfeier")
	p.tabTo("e4-place", 1)
	p.insertText("Musterstraße 1, 10115 Berlin")
	p.tabTo("e4-start", 1)
	p.typeDate("e4-start", start, true)
	p.tabTo("e4-end", 6)
	p.typeDate("e4-end", end, true)

	checkA11y(t, p, "form filled")
	shot(p, "3-filled")

	// Review.
	p.tabTo("to-review", 20)
	p.press("Enter", 0)
	p.waitFor(visibleJS("step-review"))
	if got := p.activeID(); got != "review-title" {
		t.Errorf("the review step has the focus on %q, want its heading", got)
	}
	review := p.text("review-content")
	for _, want := range []string{
		"Kontaktpersonen (2)", "Kontaktperson 1: Jürgen Groß", "VornameJürgen", "NachnameGroß", "+49 30 1234567", "Enger Kontakt", first1.Format("02.01.2006"),
		"Kontaktperson 2: Erika", "erika@example.de", "Im selben Haushalt", last2.Format("02.01.2006"),
		"Ereignisse (1)", "Ereignis 1: Geburtstagsfeier", "Musterstraße 1, 10115 Berlin", start.Format("02.01.2006, 15:04") + " Uhr",
	} {
		if !strings.Contains(review, want) {
			t.Errorf("review lacks %q:\n%s", want, review)
		}
	}
	checkA11y(t, p, "review")
	shot(p, "4-review")

	// Send, with the space bar.
	p.tabTo("send", 3)
	p.press("Space", 0)
	p.waitFor(visibleJS("step-done"))
	done := p.text("step-done")
	if !strings.Contains(done, "Vielen Dank! Ihre Angaben wurden übermittelt.") || !strings.Contains(done, "Gesundheitsamt Musterstadt") ||
		!strings.Contains(done, "kann nicht noch einmal verwendet werden") {
		t.Errorf("confirmation: %q", done)
	}
	var hash string
	p.eval(`location.hash`, &hash)
	if hash != "" {
		t.Errorf("after use the address still holds the fragment %q", hash)
	}
	if got := p.activeID(); got != "step-done" {
		t.Errorf("focus after sending on %q, want the confirmation", got)
	}
	checkA11y(t, p, "done")
	shot(p, "5-done")

	// The office opens what the browser sealed.
	var env *seal.Envelope
	select {
	case env = <-s.got:
	case <-time.After(10 * time.Second):
		t.Fatal("OnSubmit got no envelope")
	}
	if env.Signed() || env.KEM != seal.KEMX25519 || env.AEAD != seal.AEADAES128GCM || env.KeyID != "browser-1" {
		t.Errorf("envelope %+v", env)
	}
	plain, err := seal.Open(env, s.link.Context(), []pki.SealPrivateKey{s.key})
	if err != nil {
		t.Fatalf("office cannot open the browser's envelope: %v", err)
	}
	sub, err := ParseSubmission(plain)
	if err != nil {
		t.Fatalf("%v\n%s", err, plain)
	}
	at, _ := time.Parse(time.RFC3339, sub.SubmittedAt)
	if d := time.Since(at); d < -time.Minute || d > time.Minute {
		t.Errorf("submitted_at %s", sub.SubmittedAt)
	}
	sub.SubmittedAt = ""
	want := Submission{
		Format: Format, Label: "k7x2mq",
		Contacts: []Contact{
			{FirstName: "Jürgen", LastName: "Groß", Phone: "+49 30 1234567", Category: CategoryClose, FirstContact: first1.Format(time.DateOnly), LastContact: last1.Format(time.DateOnly), Note: "Kollege im Großraumbüro"},
			{FirstName: "Erika", Email: "erika@example.de", Category: CategoryHousehold, LastContact: last2.Format(time.DateOnly)},
		},
		Events: []Event{{Name: "Geburtstagsfeier", Place: "Musterstraße 1, 10115 Berlin", Start: start.Format(localMinute), End: end.Format(localMinute)}},
	}
	if g, w := mustJSON(t, sub), mustJSON(t, want); g != w {
		t.Errorf("the office reads\n%s\nwant\n%s", g, w)
	}

	// The link is dead: another submission with the right secret is
	// refused, and so is one with a wrong secret.
	if got := postFromPage(t, p, s.link, string(s.link.Secret)); got != http.StatusGone {
		t.Errorf("second submission: %d, want 410", got)
	}
	if got := postFromPage(t, p, s.link, base64.RawURLEncoding.EncodeToString(make([]byte, 32))); got != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d, want 401", got)
	}
	select {
	case <-s.got:
		t.Error("OnSubmit called again")
	default:
	}
	// Opening the used link again says so.
	p.navigate("about:blank") // else only the fragment changes, and the page reloads itself
	p.navigate(s.url)
	p.waitFor(visibleJS("step-dead"))
	if got := p.text("dead-reason"); !strings.Contains(got, "bereits verwendet") {
		t.Errorf("used link: %q", got)
	}
	checkA11y(t, p, "used link")
	shot(p, "6-used")

	b.checkErrors(t)
}

// postFromPage seals {} in the page and posts it with the given secret; it
// returns the HTTP status.
func postFromPage(t *testing.T, p *page, l *Link, secret string) int {
	t.Helper()
	to := mustJSON(t, jsTarget(l.Recipient, l.Context(), seal.AEADAES128GCM))
	var status int
	p.eval(fmt.Sprintf(`(async () => {
	  const { sealFor } = await import("/kurier-seal.js");
	  const sealed = await sealFor(%s, new TextEncoder().encode("{}"));
	  const r = await fetch("/submit", { method: "POST", credentials: "omit",
	    headers: { "Authorization": "Bearer " + %q, "Content-Type": "application/json" },
	    body: JSON.stringify({ message_id: %q, sealed }) });
	  return r.status;
	})()`, to, secret, l.MessageID), &status)
	return status
}

func TestBrowserWrongSecret(t *testing.T) {
	s := serveSite(t, time.Now())
	b := startBrowser(t, s.flags...)
	p := b.newPage(t)
	for _, tt := range []struct{ name, fragment, want string }{
		{"wrong", base64.RawURLEncoding.EncodeToString(make([]byte, 32)), "ungültig"},
		{"cut short", string(s.link.Secret)[:12], "ungültig"},
		{"none", "", "ungültig"},
	} {
		p.navigate(s.base + "/#" + tt.fragment)
		p.waitFor(visibleJS("step-dead"))
		if got := p.text("dead-reason"); !strings.Contains(got, tt.want) {
			t.Errorf("%s secret: page says %q, want %q", tt.name, got, tt.want)
		}
		checkA11y(t, p, tt.name+" secret")
		p.navigate("about:blank")
	}
	select {
	case <-s.got:
		t.Error("OnSubmit called")
	default:
	}
}

// TestBrowserKeyboardAndReflow walks the whole page by Tab alone (the skip
// link first, every stop with a visible focus, no trap) and checks that it
// reflows to 320 CSS pixels without horizontal scrolling (WCAG 1.4.10).
func TestBrowserKeyboardAndReflow(t *testing.T) {
	s := serveSite(t, time.Now())
	b := startBrowser(t, s.flags...)
	p := b.newPage(t)
	p.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 320, "height": 640, "deviceScaleFactor": 1, "mobile": true}, nil)
	p.navigate(s.url)
	p.waitFor(visibleJS("step-form"))

	// The page put the focus on the step's heading; before it comes only
	// the skip link, which leads to the main content.
	if f := p.tab(true); f.Text != "Zum Inhalt springen" {
		t.Errorf("Tab stop before the content: %q, want the skip link", f.Text)
	}
	p.press("Enter", 0)
	if got := p.activeID(); got != "main" {
		t.Errorf("the skip link led to %q, want main", got)
	}
	var hash string
	p.eval(`location.hash`, &hash)
	if hash != "#"+string(s.link.Secret) {
		t.Error("the skip link changed the fragment that holds the secret")
	}

	// Add an event so both kinds of rows are there, then Tab through all.
	p.tabTo("add-event", 20)
	p.press("Enter", 0)
	p.eval(`document.getElementById("main").focus()`, nil)
	var stops []string
	for range 60 {
		f := p.tab(false)
		stops = append(stops, f.ID+"|"+f.Text)
		if f.ID == "to-review" {
			break
		}
	}
	if len(stops) == 60 || !strings.HasPrefix(stops[len(stops)-1], "to-review|") {
		t.Fatalf("Tab did not reach the review button:\n%s", strings.Join(stops, "\n"))
	}
	for _, want := range []string{"c1-first-name", "c1-last-name", "c1-phone", "c1-email", "c1-category-household", "c1-first", "c1-last", "c1-note", "|Kontaktperson 1 entfernen", "add-contact",
		"e2-name", "e2-place", "e2-start", "e2-end", "e2-note", "|Ereignis 1 entfernen", "add-event", "to-review"} {
		found := false
		for _, s := range stops {
			if strings.HasPrefix(s, want+"|") || strings.HasPrefix(want, "|") && strings.HasSuffix(s, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("Tab never reached %s; stops:\n%s", want, strings.Join(stops, "\n"))
		}
	}
	// And back: Shift+Tab from the end reaches the first field.
	for range 40 {
		if p.tab(true).ID == "c1-first-name" {
			break
		}
	}
	if got := p.activeID(); got != "c1-first-name" {
		t.Errorf("Shift+Tab did not get back to c1-first-name (at %q)", got)
	}

	var widths struct{ Scroll, Client int }
	p.eval(`({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })`, &widths)
	if widths.Client != 320 || widths.Scroll > widths.Client {
		t.Errorf("at 320px the page is %dpx wide in a %dpx viewport: it scrolls sideways", widths.Scroll, widths.Client)
	}
	checkA11y(t, p, "320px")
	shot(p, "7-narrow")

	// A date typed only in part is an error, not an empty field. The row
	// has no name either: that is said at the names' group, as "phone or
	// e-mail" is at theirs, and tied to the first of its fields.
	p.tabTo("c1-first", 10)
	p.typeDigits("1411")
	p.tabTo("to-review", 60)
	p.press("Enter", 0)
	p.waitFor(visibleJS("error-summary"))
	summary := p.text("error-summary")
	for _, want := range []string{
		"Kontaktperson 1: Bitte geben Sie ein vollständiges Datum an",
		"Kontaktperson 1: Bitte geben Sie den Vornamen, den Nachnamen oder beide an.",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("the summary %q lacks %q", summary, want)
		}
	}
	var group struct {
		Invalid   string `json:"invalid"`
		Described string `json:"described"`
		After     string `json:"after"` // the legend the message follows
	}
	p.eval(`({
	  invalid: document.getElementById("c1-first-name").getAttribute("aria-invalid"),
	  described: document.getElementById("c1-first-name").getAttribute("aria-describedby"),
	  after: document.getElementById("c1-first-name-error").previousElementSibling.textContent,
	})`, &group)
	if group.Invalid != "true" || group.Described != "c1-name-hint c1-first-name-error" || !strings.HasPrefix(group.After, "Name") {
		t.Errorf("no name: marked as %+v", group)
	}
	var widths2 struct{ Scroll, Client int }
	p.eval(`({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })`, &widths2)
	if widths2.Scroll > widths2.Client {
		t.Errorf("at 320px with errors shown the page is %dpx wide: it scrolls sideways", widths2.Scroll)
	}
	checkA11y(t, p, "320px with errors")
	b.checkErrors(t)
}

// TestBrowserNameRule checks the page's check of names against the
// contact-data model's rule, which ParseSubmission applies: each name, as a
// first and as a last name, gets an error on the page exactly when
// contactdata.NameRule refuses what the page would send (bidirectional
// controls dropped, trimmed).
func TestBrowserNameRule(t *testing.T) {
	s := serveSite(t, time.Now())
	b := startBrowser(t, s.flags...)
	p := b.newPage(t)
	p.navigate(s.url)
	p.waitFor(visibleJS("step-form"))
	names := []string{
		"Groß", "Jürgen", "Şahin-O’Brien", "d'Alembert", "Mu\u0308ller", "Zoë Anne", "Иван", "李", "Ngũgĩ wa Thiong’o",
		strings.Repeat("ä", 100), strings.Repeat("𝒜", 100), " Tom ", "Tom\u202e",
		"Dr. Müller", "Prof Dr. Groß", "Aylin 2", "Anna,", "O\"Brien", "Tom\u200b", "Tom_", "Tom/Tim", "Tom (Chor)",
		"- '", "\u0308", "’", strings.Repeat("ä", 101), strings.Repeat("𝒜", 101), "Tom\u00a0Sawyer",
	}
	var got map[string][]bool
	p.eval(`(() => {
	  const out = {};
	  for (const field of ["first-name", "last-name"]) {
	    out[field] = [];
	    const input = document.getElementById("c1-" + field);
	    for (const n of `+mustJSON(t, names)+`) {
	      input.value = n;
	      document.getElementById("entry-form").requestSubmit(); // the row's other problems keep the form
	      out[field].push(!!document.getElementById("c1-" + field + "-error"));
	      input.value = "";
	    }
	  }
	  return out;
	})()`, &got)
	bidi := strings.NewReplacer("\u202a", "", "\u202b", "", "\u202c", "", "\u202d", "", "\u202e", "", "\u2066", "", "\u2067", "", "\u2068", "", "\u2069", "")
	for _, field := range []string{"first-name", "last-name"} {
		if len(got[field]) != len(names) {
			t.Fatalf("%s: the page checked %d names of %d", field, len(got[field]), len(names))
		}
		for i, n := range names {
			rule := contactdata.NameRule(strings.TrimSpace(bidi.Replace(n)))
			if refused := got[field][i]; refused != (rule != "") {
				t.Errorf("%s %q: the page refuses it: %v; the model: %q", field, n, refused, rule)
			}
		}
	}
	b.checkErrors(t)
}

// TestBrowserSealVectors runs kurier-seal.js in Chromium on the cases of
// TestSealJSNode: with the ephemeral key fixed it must reproduce Go's
// envelopes byte for byte; the others must open in Go.
func TestBrowserSealVectors(t *testing.T) {
	s := serveSite(t, time.Now())
	b := startBrowser(t, s.flags...)
	p := b.newPage(t)
	p.navigate(s.base + "/")
	cases := sealCases(t)
	in := mustJSON(t, cases)
	var out map[string]json.RawMessage
	p.eval(`(async () => {
	  const { sealFor } = await import("/kurier-seal.js");
	  const subtle = crypto.subtle;
	  const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));
	  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
	  const out = {};
	  for (const c of `+in+`) {
	    if (c.ephemeral) {
	      // The test seam: the one source of randomness sealFor uses.
	      const pkcs8 = new Uint8Array([...fromHex("302e020100300506032b656e04220420"), ...fromHex(c.ephemeral.private)]);
	      subtle.generateKey = async (alg, extractable, usages) => ({
	        privateKey: await subtle.importKey("pkcs8", pkcs8, { name: "X25519" }, extractable, usages),
	        publicKey: await subtle.importKey("raw", fromB64(c.ephemeral.public), { name: "X25519" }, true, []),
	      });
	    }
	    try {
	      out[c.name] = JSON.stringify(await sealFor(c.to, fromB64(c.plaintext)));
	    } finally {
	      delete subtle.generateKey;
	    }
	  }
	  return out;
	})()`, &out)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var js string
			if err := json.Unmarshal(out[c.Name], &js); err != nil {
				t.Fatalf("no envelope: %v", err)
			}
			env, err := seal.Parse([]byte(js))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, js)
			}
			if c.Want != nil {
				if want, _ := c.Want.Marshal(); string(want) != js {
					t.Errorf("Chromium sealed\n%s\nGo sealed, with the same ephemeral key,\n%s", js, want)
				}
			}
			pt, err := seal.Open(env, c.ctx, []pki.SealPrivateKey{c.key})
			if err != nil || string(pt) != string(c.Plaintext) {
				t.Errorf("Open = %.60q, %v", pt, err)
			}
		})
	}
	b.checkErrors(t)
}
