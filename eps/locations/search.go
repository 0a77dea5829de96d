package locations

import (
	"bytes"
	"strings"
	"unicode"

	"github.com/kurier-net/kurier/eps/contactdata"
)

// fold prepares text for matching: lower case, German umlauts and ß
// spelled out (ä → ae, ß → ss, also a decomposed ä), other combining
// marks and the accents of Latin-1 letters dropped (é → e), and every run of characters that are neither
// letters nor digits turned into one space. A location's text and a query
// are folded alike, so "Loewen", "löwen" and "LÖWEN" find "Löwen".
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := true // no leading space
	for _, r := range s {
		switch {
		case r == '\u0308': // combining diaeresis: the decomposed umlaut
			b.WriteByte('e')
			continue
		case unicode.Is(unicode.Mn, r):
			continue
		}
		switch r = unicode.ToLower(r); r {
		case 'ä':
			b.WriteString("ae")
		case 'ö':
			b.WriteString("oe")
		case 'ü':
			b.WriteString("ue")
		case 'ß', 'ẞ':
			b.WriteString("ss")
		case 'æ':
			b.WriteString("ae")
		case 'œ':
			b.WriteString("oe")
		default:
			r = unaccent(r)
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				if !space {
					b.WriteByte(' ')
					space = true
				}
				continue
			}
			b.WriteRune(r)
		}
		space = false
	}
	return strings.TrimRight(b.String(), " ")
}

// searchText is what the index stores to match a location against: its
// folded name, a zero byte, and the folded text searched (name, official
// name, street, house number, postcode, city), words separated by
// spaces.
func searchText(l *contactdata.Location) []byte {
	a := &l.Contact.Address
	name := fold(l.Name)
	text := strings.Join([]string{name, fold(l.Contact.OfficialName), fold(a.Street), fold(a.HouseNumber), fold(a.ZipCode), fold(a.City)}, " ")
	return []byte(name + "\x00" + text)
}

// matchesAll reports whether every term occurs in text.
func matchesAll(text []byte, terms [][]byte) bool {
	for _, t := range terms {
		if !bytes.Contains(text, t) {
			return false
		}
	}
	return true
}

// unaccent returns the base letter of an accented lower-case letter of
// Latin-1 other than the umlauts (without golang.org/x/text a precomposed é
// does not decompose), and r itself for any other rune.
func unaccent(r rune) rune {
	switch r {
	case 'à', 'á', 'â', 'ã', 'å':
		return 'a'
	case 'ç':
		return 'c'
	case 'è', 'é', 'ê', 'ë':
		return 'e'
	case 'ì', 'í', 'î', 'ï':
		return 'i'
	case 'ñ':
		return 'n'
	case 'ò', 'ó', 'ô', 'õ', 'ø':
		return 'o'
	case 'ù', 'ú', 'û':
		return 'u'
	case 'ý', 'ÿ':
		return 'y'
	}
	return r
}
