package submit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe
// (commands on the browser's fd 3, answers on its fd 4, each message JSON
// ended by a NUL byte). It needs no WebSocket and no module beyond the
// standard library, which is why the browser test uses it rather than
// chromedp: the few commands below are all it drives.

// browser is a headless Chromium under test.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	w      *os.File // commands, the browser's fd 3
	r      *os.File // answers and events, the browser's fd 4
	stderr *bytes.Buffer
	done   chan struct{} // closed when the reader ends

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex // guards the fields below
	next    int64
	pending map[int64]chan cdpMsg
	logs    []string // console and log entries, exceptions
	errs    []string // exceptions, console errors and CSP violations
}

const callTimeout = 90 * time.Second

type cdpMsg struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *cdpError       `json:"error,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
}

type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *cdpError) Error() string { return fmt.Sprintf("cdp error %d: %s", e.Code, e.Message) }

// startBrowser starts headless Chromium with extra flags. Chromium must be
// installed: a test of the page that cannot run fails, it does not skip.
func startBrowser(t *testing.T, flags ...string) *browser {
	t.Helper()
	bin := lookPath(t, "chromium", "the browser tests need Debian's chromium: run .ci/install-chromium")
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{
		// As the machines' notes say Chromium runs here: no sandbox (root),
		// no GPU, nothing that reaches out to the network by itself.
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-default-browser-check", "--disable-extensions", "--mute-audio", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), // new and empty; also needed for the SPKI list
		"--remote-debugging-pipe",
		"--lang=de-DE", "--accept-lang=de-DE",
		"--window-size=1280,900",
	}, flags...)
	args = append(args, "about:blank")
	b := &browser{t: t, w: cmdW, r: outR, stderr: new(bytes.Buffer), done: make(chan struct{}), pending: map[int64]chan cdpMsg{}}
	b.cmd = exec.Command(bin, args...)
	b.cmd.ExtraFiles = []*os.File{cmdR, outW} // fd 3, fd 4
	// The UI locale, which date fields follow (TT.MM.JJJJ), comes from the
	// environment on Linux; no D-Bus here, so don't look for one.
	b.cmd.Env = append(os.Environ(), "LANGUAGE=de", "LANG=de_DE.UTF-8", "DBUS_SESSION_BUS_ADDRESS=disabled:")
	b.cmd.Stdout = io.Discard
	b.cmd.Stderr = &lockedBuffer{b: b.stderr, mu: &b.mu}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	cmdR.Close()
	outW.Close()
	go b.read()
	t.Cleanup(b.close)
	start := time.Now()
	var v struct {
		Product string `json:"product"`
	}
	if err := b.call("", "Browser.getVersion", nil, &v); err != nil {
		t.Fatalf("%s does not answer on the DevTools pipe: %v", bin, err)
	}
	t.Logf("%s up in %v", v.Product, time.Since(start).Round(time.Millisecond))
	return b
}

type lockedBuffer struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 { // bounded: Chromium can be chatty
		l.b.Write(p)
	}
	return len(p), nil
}

func (b *browser) read() {
	defer close(b.done)
	br := bufio.NewReaderSize(b.r, 1<<20)
	for {
		line, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMsg
		if err := json.Unmarshal(line[:len(line)-1], &m); err != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch, ok := b.pending[m.ID]; ok {
				delete(b.pending, m.ID)
				ch <- m // buffered
			}
		} else {
			b.eventLocked(m)
		}
		b.mu.Unlock()
	}
}

// eventLocked records what the page says in its console, exceptions and
// security (CSP) messages. b.mu must be held.
func (b *browser) eventLocked(m cdpMsg) {
	switch m.Method {
	case "Runtime.exceptionThrown":
		var p struct {
			ExceptionDetails struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(m.Params, &p)
		s := "exception: " + p.ExceptionDetails.Text + " " + p.ExceptionDetails.Exception.Description
		b.logs = append(b.logs, s)
		b.errs = append(b.errs, s)
	case "Runtime.consoleAPICalled":
		var p struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		json.Unmarshal(m.Params, &p)
		var parts []string
		for _, a := range p.Args {
			parts = append(parts, fmt.Sprint(a.Value, a.Description))
		}
		s := "console." + p.Type + ": " + strings.Join(parts, " ")
		b.logs = append(b.logs, s)
		if p.Type == "error" || p.Type == "assert" {
			b.errs = append(b.errs, s)
		}
	case "Log.entryAdded":
		var p struct {
			Entry struct {
				Source string `json:"source"`
				Level  string `json:"level"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		json.Unmarshal(m.Params, &p)
		e := p.Entry
		s := fmt.Sprintf("log %s/%s: %s %s", e.Source, e.Level, e.Text, e.URL)
		b.logs = append(b.logs, s)
		// A 404 for /favicon.ico is the browser's own doing; a CSP
		// violation or a script error is the page's.
		if e.Level == "error" && (e.Source == "security" || e.Source == "javascript") {
			b.errs = append(b.errs, s)
		}
	}
}

// call sends a command (to a page when session is set) and decodes its
// result into result, if not nil.
func (b *browser) call(session, method string, params, result any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpMsg, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(struct {
		ID        int64  `json:"id"`
		Method    string `json:"method"`
		Params    any    `json:"params,omitempty"`
		SessionID string `json:"sessionId,omitempty"`
	}{id, method, params, session})
	if err != nil {
		return err
	}
	b.wmu.Lock()
	_, err = b.w.Write(append(msg, 0))
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: write to the browser: %w", method, err)
	}
	// Generous: on a loaded machine (2 cores, other test binaries running)
	// a new renderer can take long to start.
	timer := time.NewTimer(callTimeout)
	defer timer.Stop()
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %w", method, m.Error)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-b.done:
		return fmt.Errorf("%s: the browser went away", method)
	case <-timer.C:
		return fmt.Errorf("%s: no answer in %v", method, callTimeout)
	}
}

// close asks the browser to quit, then kills it if it does not.
func (b *browser) close() {
	b.call("", "Browser.close", nil, nil) // it may close the pipe before answering
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-exited
	}
	b.w.Close()
	<-b.done
	b.r.Close()
	if b.t.Failed() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.t.Logf("browser log:\n%s", strings.Join(b.logs, "\n"))
		out := b.stderr.String()
		if len(out) > 8<<10 {
			out = out[len(out)-8<<10:]
		}
		b.t.Logf("chromium stderr (tail):\n%s", out)
	}
}

// checkErrors fails t if the page reported exceptions, console errors or
// CSP violations so far.
func (b *browser) checkErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	errs := slices.Clone(b.errs)
	b.mu.Unlock()
	if len(errs) != 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// page is one tab.
type page struct {
	b       *browser
	t       *testing.T
	session string
}

// newPage opens a tab and attaches to it.
func (b *browser) newPage(t *testing.T) *page {
	t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	p := &page{b: b, t: t, session: att.SessionID}
	for _, domain := range []string{"Page", "Runtime", "Log", "Accessibility"} {
		p.call(domain+".enable", nil, nil)
	}
	// German formats in date fields (TT.MM.JJJJ), whatever the machine's locale.
	p.call("Emulation.setLocaleOverride", map[string]any{"locale": "de-DE"}, nil)
	var lang string
	p.eval("navigator.language", &lang)
	if !strings.HasPrefix(lang, "de") {
		t.Fatalf("Chromium runs in %q, not German (date fields would want another order): install chromium-l10n with .ci/install-chromium", lang)
	}
	return p
}

func (p *page) call(method string, params, result any) {
	p.t.Helper()
	if err := p.b.call(p.session, method, params, result); err != nil {
		p.t.Fatal(err)
	}
}

// navigate loads url and waits until the document is complete.
func (p *page) navigate(url string) {
	p.t.Helper()
	var r struct {
		ErrorText string `json:"errorText"`
	}
	p.call("Page.navigate", map[string]any{"url": url}, &r)
	if r.ErrorText != "" {
		p.t.Fatalf("navigate %s: %s", url, r.ErrorText)
	}
	p.waitFor(`document.readyState === "complete"`)
}

// eval evaluates a JavaScript expression in the page (awaiting a promise)
// and decodes its value into v, if not nil.
func (p *page) eval(expr string, v any) {
	p.t.Helper()
	if err := p.tryEval(expr, v); err != nil {
		p.t.Fatalf("%v\nexpression: %s", err, expr)
	}
}

func (p *page) tryEval(expr string, v any) error {
	var r struct {
		Result struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := p.b.call(p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true,
	}, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("evaluate: %s %s", e.Text, e.Exception.Description)
	}
	if v != nil {
		if len(r.Result.Value) == 0 {
			return errors.New("evaluate: no value")
		}
		return json.Unmarshal(r.Result.Value, v)
	}
	return nil
}

// waitFor polls a JavaScript condition until it is true, for at most 30s.
func (p *page) waitFor(cond string) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		err := p.tryEval("!!("+cond+")", &ok)
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waited 30s for %s (last error: %v)", cond, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not synchronizing by sleep
	}
}

// keys are the DevTools key descriptions the test presses.
var keys = map[string]map[string]any{
	"Tab":       {"key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9},
	"Enter":     {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
	"Space":     {"key": " ", "code": "Space", "windowsVirtualKeyCode": 32, "text": " "},
	"ArrowDown": {"key": "ArrowDown", "code": "ArrowDown", "windowsVirtualKeyCode": 40},
	"ArrowUp":   {"key": "ArrowUp", "code": "ArrowUp", "windowsVirtualKeyCode": 38},
	"End":       {"key": "End", "code": "End", "windowsVirtualKeyCode": 35},
	"Backspace": {"key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
}

// press presses and releases a key of keys, or a digit.
func (p *page) press(key string, modifiers int) {
	p.t.Helper()
	k, ok := keys[key]
	if !ok && len(key) == 1 && '0' <= key[0] && key[0] <= '9' {
		k = map[string]any{"key": key, "code": "Digit" + key, "windowsVirtualKeyCode": int(key[0]), "text": key}
	} else if !ok {
		p.t.Fatalf("no key %q", key)
	}
	down := map[string]any{"type": "keyDown", "modifiers": modifiers}
	if _, hasText := k["text"]; !hasText {
		down["type"] = "rawKeyDown"
	}
	up := map[string]any{"type": "keyUp", "modifiers": modifiers}
	for kk, v := range k {
		down[kk] = v
		if kk != "text" {
			up[kk] = v
		}
	}
	p.call("Input.dispatchKeyEvent", down, nil)
	p.call("Input.dispatchKeyEvent", up, nil)
}

// typeDigits presses digit keys one by one, as into a date field.
func (p *page) typeDigits(s string) {
	p.t.Helper()
	for _, r := range s {
		p.press(string(r), 0)
	}
}

// insertText types text at the focus, as an input method commits it.
func (p *page) insertText(s string) {
	p.t.Helper()
	p.call("Input.insertText", map[string]any{"text": s}, nil)
}

// screenshot writes a PNG of the page to path.
func (p *page) screenshot(path string) {
	p.t.Helper()
	var r struct {
		Data []byte `json:"data"`
	}
	p.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	if err := os.WriteFile(path, r.Data, 0o644); err != nil {
		p.t.Fatal(err)
	}
}
