package submit

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Static checks of the page's files. The browser test checks the live page
// in Chromium; these check what can be seen without running it, so that a
// change that breaks a rule fails even where the reason is not visible on
// the page a test happens to render.

func readStatic(t *testing.T, name string) string {
	t.Helper()
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ---- the stylesheet: contrast (WCAG 2.1 1.4.3, 1.4.11) and focus (2.4.7) ----

type cssRule struct {
	selector string
	decls    [][2]string // property, value
}

// parseCSS reads the flat rules of a stylesheet, descending into @media
// blocks. It is enough for style.css, not a general CSS parser.
func parseCSS(t *testing.T, src string) []cssRule {
	t.Helper()
	src = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(src, "")
	var rules []cssRule
	for {
		open := strings.IndexByte(src, '{')
		if open < 0 {
			if strings.TrimSpace(src) != "" && strings.TrimSpace(src) != "}" {
				t.Fatalf("css: trailing %q", src)
			}
			return rules
		}
		sel := strings.TrimSpace(src[:open])
		sel = strings.TrimSpace(strings.TrimPrefix(sel, "}")) // end of an @media block
		if strings.HasPrefix(sel, "@media") {
			src = src[open+1:]
			continue
		}
		end := strings.IndexByte(src[open:], '}')
		if end < 0 {
			t.Fatalf("css: unterminated rule %q", sel)
		}
		r := cssRule{selector: sel}
		for _, d := range strings.Split(src[open+1:open+end], ";") {
			if strings.TrimSpace(d) == "" {
				continue
			}
			p, v, ok := strings.Cut(d, ":")
			if !ok {
				t.Fatalf("css: declaration %q in %q", d, sel)
			}
			r.decls = append(r.decls, [2]string{strings.TrimSpace(p), strings.TrimSpace(v)})
		}
		rules = append(rules, r)
		src = src[open+end+1:]
	}
}

type rgb [3]float64

func parseHex(t *testing.T, s string) rgb {
	t.Helper()
	if !regexp.MustCompile(`^#[0-9a-fA-F]{6}$`).MatchString(s) {
		t.Fatalf("color %q: want #rrggbb", s)
	}
	var c rgb
	for i := range c {
		v, _ := strconv.ParseUint(s[1+2*i:3+2*i], 16, 8)
		c[i] = float64(v) / 255
	}
	return c
}

// luminance is WCAG 2.1's relative luminance.
func luminance(c rgb) float64 {
	var l [3]float64
	for i, v := range c {
		if v <= 0.03928 {
			l[i] = v / 12.92
		} else {
			l[i] = math.Pow((v+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*l[0] + 0.7152*l[1] + 0.0722*l[2]
}

func contrast(a, b rgb) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func TestContrastFormula(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want float64
	}{
		{"#000000", "#ffffff", 21},
		{"#ffffff", "#ffffff", 1},
		{"#767676", "#ffffff", 4.54}, // the classic lightest gray that passes on white
		{"#777777", "#ffffff", 4.48},
	} {
		if got := contrast(parseHex(t, tt.a), parseHex(t, tt.b)); math.Abs(got-tt.want) > 0.01 {
			t.Errorf("contrast(%s, %s) = %.3f, want %.2f", tt.a, tt.b, got, tt.want)
		}
	}
}

var colorProps = regexp.MustCompile(`^(color|background|background-color|border(-(top|right|bottom|left))?(-color)?|outline(-color)?|accent-color|text-decoration(-color)?|box-shadow|caret-color|fill|stroke)$`)

func TestStylesheetContrast(t *testing.T) {
	rules := parseCSS(t, readStatic(t, "style.css"))
	palette := map[string]rgb{}
	for _, r := range rules {
		if r.selector != ":root" {
			continue
		}
		for _, d := range r.decls {
			if strings.HasPrefix(d[0], "--") {
				palette[d[0]] = parseHex(t, d[1])
			}
		}
	}
	var fgs, bgs, lines []string
	for name := range palette {
		switch {
		case strings.HasPrefix(name, "--fg-"):
			fgs = append(fgs, name)
		case strings.HasPrefix(name, "--bg-"):
			bgs = append(bgs, name)
		case strings.HasPrefix(name, "--line-"):
			lines = append(lines, name)
		case name == "--btn-fg" || name == "--btn-bg":
		default:
			t.Errorf("custom property %s: name it --fg-*, --bg-*, --line-*, --btn-fg or --btn-bg", name)
		}
	}
	if len(fgs) == 0 || len(bgs) == 0 || len(lines) == 0 {
		t.Fatalf("palette %v: want text, surface and line colors", palette)
	}
	check := func(a, b string, min float64) {
		if c := contrast(palette[a], palette[b]); c < min {
			t.Errorf("%s on %s: contrast %.2f:1, want at least %.1f:1", a, b, c, min)
		} else {
			t.Logf("%s on %s: %.2f:1", a, b, c)
		}
	}
	for _, bg := range bgs {
		for _, fg := range fgs {
			check(fg, bg, 4.5) // 1.4.3, normal-size text
		}
		for _, l := range lines {
			check(l, bg, 3) // 1.4.11, borders and the focus ring
		}
		check("--btn-bg", bg, 3) // the primary button's shape
	}
	check("--btn-fg", "--btn-bg", 4.5)

	// Every color in use comes from the palette, and in its role, so the
	// checks above cover every pair the page can show.
	varRef := regexp.MustCompile(`var\((--[a-z0-9-]+)\)`)
	allowedWord := map[string]bool{"solid": true, "none": true, "transparent": true, "inherit": true, "currentcolor": true, "underline": true, "important": true, "px": true, "em": true, "rem": true}
	for _, r := range rules {
		if r.selector == ":root" {
			continue
		}
		for _, d := range r.decls {
			prop, val := d[0], d[1]
			if regexp.MustCompile(`#[0-9a-fA-F]{3}|rgba?\(|hsla?\(`).MatchString(val) {
				t.Errorf("%s { %s: %s }: a color outside :root", r.selector, prop, val)
			}
			if !colorProps.MatchString(prop) {
				continue
			}
			for _, m := range varRef.FindAllStringSubmatch(val, -1) {
				name := m[1]
				if _, ok := palette[name]; !ok {
					t.Errorf("%s { %s: %s }: %s is not defined", r.selector, prop, val, name)
				}
				var ok bool
				switch prop {
				case "color":
					ok = strings.HasPrefix(name, "--fg-") || name == "--btn-fg"
				case "background", "background-color":
					ok = strings.HasPrefix(name, "--bg-") || name == "--btn-bg"
				default:
					ok = strings.HasPrefix(name, "--line-") || name == "--btn-bg"
				}
				if !ok {
					t.Errorf("%s { %s: %s }: %s used out of its role", r.selector, prop, val, name)
				}
			}
			rest := varRef.ReplaceAllString(val, "")
			for _, w := range regexp.MustCompile(`[a-zA-Z]+`).FindAllString(rest, -1) {
				if !allowedWord[strings.ToLower(w)] {
					t.Errorf("%s { %s: %s }: %q may be a named color; use the palette", r.selector, prop, val, w)
				}
			}
		}
	}
}

func TestStylesheetFocusAndLinks(t *testing.T) {
	rules := parseCSS(t, readStatic(t, "style.css"))
	var focusRing bool
	for _, r := range rules {
		for _, d := range r.decls {
			prop, val := d[0], strings.ToLower(d[1])
			if strings.HasPrefix(prop, "outline") && (strings.Contains(val, "none") || val == "0") {
				t.Errorf("%s { %s: %s } hides the focus", r.selector, prop, val)
			}
			if strings.Contains(r.selector, ":focus-visible") && prop == "outline" {
				m := regexp.MustCompile(`^(\d+(?:\.\d+)?)px solid var\(--line-focus\)$`).FindStringSubmatch(val)
				if m != nil {
					w, _ := strconv.ParseFloat(m[1], 64)
					focusRing = focusRing || w >= 2
				}
			}
			if prop == "text-decoration" && val == "none" && regexp.MustCompile(`(^|[\s,])a($|[\s,:.\[])`).MatchString(r.selector) {
				t.Errorf("%s: links without underline are told apart by color alone", r.selector)
			}
		}
	}
	if !focusRing {
		t.Error("no :focus-visible rule with a solid outline of at least 2px in --line-focus")
	}
}

// ---- the page's markup ----

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func TestPageMarkup(t *testing.T) {
	src := readStatic(t, "index.html")
	doc, err := html.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	var h1s int
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "html":
			if lang, _ := attr(n, "lang"); lang != "de" {
				t.Errorf(`<html lang=%q>, want "de"`, lang)
			}
		case "h1":
			h1s++
		case "script":
			if s, ok := attr(n, "src"); !ok || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
				t.Errorf("<script src=%q>: only scripts of the page's own origin, no inline code", s)
			}
		case "style":
			t.Error("<style>: no inline styles (the CSP refuses them)")
		case "fieldset":
			first := n.FirstChild
			for first != nil && first.Type != html.ElementNode {
				first = first.NextSibling
			}
			if first == nil || first.Data != "legend" {
				t.Errorf("a <fieldset> (%v) without a <legend> first", n.Attr)
			}
		}
		for _, a := range n.Attr {
			if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s %s=…>: no inline style or event handler", n.Data, a.Key)
			}
			if (a.Key == "src" || a.Key == "href" || a.Key == "action") && (strings.Contains(a.Val, "//") || strings.HasPrefix(a.Val, "data:")) {
				t.Errorf("<%s %s=%q>: nothing from other origins", n.Data, a.Key, a.Val)
			}
		}
	})
	if h1s != 1 {
		t.Errorf("%d <h1>, want 1", h1s)
	}

	// Every control has a label: in the page by for=id; in the row
	// templates by data-for=field (app.js turns both into ids), radios by
	// data-for-choice.
	labels := map[string]bool{}
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "label" {
			for _, k := range []string{"for", "data-for", "data-for-choice"} {
				if v, ok := attr(n, k); ok {
					labels[k+"="+v] = true
				}
			}
		}
	})
	var controls int
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode || (n.Data != "input" && n.Data != "textarea" && n.Data != "select") {
			return
		}
		controls++
		id, _ := attr(n, "id")
		field, _ := attr(n, "data-field")
		choice, _ := attr(n, "data-choice")
		if !labels["for="+id] && !labels["data-for="+field] && !labels["data-for-choice="+choice] {
			t.Errorf("<%s %v> has no label", n.Data, n.Attr)
		}
	})
	if controls < 10 {
		t.Errorf("found %d form controls; the templates were not parsed", controls)
	}
	// Templates are parsed as their own fragment by x/net/html (in
	// n.FirstChild of the template's content); make sure it saw them.
	if !labels["data-for=name"] || !labels["data-for-choice=close"] {
		t.Error("labels of the row templates not found")
	}
}

// TestScriptsStayInTheirLane checks the scripts for what the CSP and the
// secret's handling rule out: HTML from strings, eval, other origins, the
// secret in a URL.
func TestScriptsStayInTheirLane(t *testing.T) {
	for _, name := range []string{"app.js", "kurier-seal.js"} {
		src := readStatic(t, name)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "sessionStorage", "document.cookie", "http://", "https://"} {
			if strings.Contains(src, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
	app := readStatic(t, "app.js")
	for _, m := range regexp.MustCompile(`fetch\(\s*("[^"]*"|[^,)]*)`).FindAllStringSubmatch(app, -1) {
		if !strings.HasPrefix(m[1], `"/`) || strings.Contains(m[1], "?") {
			t.Errorf("fetch(%s): only the page's own fixed paths", m[1])
		}
	}
	for _, line := range strings.Split(app, "\n") {
		if strings.Contains(line, "state.secret") && !strings.Contains(line, "Bearer ${state.secret}") && !strings.Contains(line, "state.secret = ") {
			t.Errorf("app.js uses the secret outside an Authorization header: %s", strings.TrimSpace(line))
		}
	}
}
