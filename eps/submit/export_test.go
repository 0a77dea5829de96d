package submit

import (
	"testing"
	"time"
)

// SubmitInBrowser is for the tests of other packages (the endpoint
// server's links through a real relay, in relay_browser_test.go): it opens
// url in headless Chromium started with flags, enters one contact person
// (first and last name, phone, household, last contact yesterday) by
// keyboard, sends it, and returns the confirmation's text. It fails t if
// any step does.
func SubmitInBrowser(t *testing.T, url, firstName, lastName string, flags ...string) string {
	t.Helper()
	b := startBrowser(t, flags...)
	p := b.newPage(t)
	p.navigate(url)
	p.waitFor(visibleJS("step-form"))
	p.tabTo("c1-first-name", 1)
	p.insertText(firstName)
	p.tabTo("c1-last-name", 1)
	p.insertText(lastName)
	p.tabTo("c1-phone", 1)
	p.insertText("+49 30 1234567")
	p.tabTo("c1-category-household", 2)
	p.press("Space", 0)
	p.tabTo("c1-last", 8) // through the parts of the first date field
	y, m, d := time.Now().AddDate(0, 0, -1).Date()
	p.typeDate("c1-last", time.Date(y, m, d, 0, 0, 0, 0, time.Local), false)
	p.tabTo("to-review", 20)
	p.press("Enter", 0)
	p.waitFor(visibleJS("step-review"))
	p.tabTo("send", 3)
	p.press("Space", 0)
	p.waitFor(`!document.getElementById("step-done").hidden || !document.getElementById("step-dead").hidden`)
	b.checkErrors(t)
	return p.text("step-done")
}
