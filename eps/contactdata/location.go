package contactdata

// An Address is a postal address. Country is an ISO 3166-1 alpha-2 code;
// "" (left out in JSON) means Germany, and then ZipCode must be a German
// postcode of five digits.
type Address struct {
	Street      string `json:"street"`                 // required, at most 200 characters
	HouseNumber string `json:"house_number,omitempty"` // at most 16; some addresses have none
	ZipCode     string `json:"zip_code"`               // required
	City        string `json:"city"`                   // required, at most 100
	Country     string `json:"country,omitempty"`      // "DE", "AT", ...; "" means DE
}

// CountryCode returns a.Country, or "DE" if it is empty.
func (a *Address) CountryCode() string {
	if a.Country == "" {
		return "DE"
	}
	return a.Country
}

func (a *Address) validate(c *checker, path string) {
	c.required(path, "street", a.Street, line(maxLine))
	c.optional(path, "house_number", a.HouseNumber, line(maxHouseNumber))
	c.required(path, "zip_code", a.ZipCode, func(s string) string { return zipRule(s, a.Country) })
	c.required(path, "city", a.City, line(maxCity))
	c.optional(path, "country", a.Country, countryRule)
}

// A Location is a place where a provider (the vendor of a check-in app)
// records guests: a restaurant, a shop, an event venue. Providers publish
// their locations so that a health office can find the one it needs and
// ask for its guests with a DataRequest.
//
// A location lives with the provider that publishes it: its EPS serves it,
// and only that provider creates, changes or deletes it. An office never
// sends a Location; it names one by the provider (a member, so the
// directory vouches for it) and ID. ID is therefore unique per provider
// only: the pair (provider, ID) names a location network-wide.
type Location struct {
	ID      string          `json:"id"`      // required: 1 to 128 of A-Z a-z 0-9 . _ ~ : -, unique per provider
	Name    string          `json:"name"`    // required: the name guests know, at most 200 characters
	Contact LocationContact `json:"contact"` // required
	// Context says what kind of place this is, in the provider's words
	// ("Restaurant", "Veranstaltungsort"); at most 100 characters.
	Context string `json:"context,omitempty"`
}

// LocationContact is whom the health office deals with about a location.
// At least one of Email and Phone is required.
type LocationContact struct {
	OfficialName   string  `json:"official_name"`            // required: the operator's legal name, at most 200
	Representative string  `json:"representative,omitempty"` // a person or a role, at most 200
	Address        Address `json:"address"`                  // required
	Email          string  `json:"email,omitempty"`
	Phone          string  `json:"phone,omitempty"`
}

func (*Location) schema() string { return "location" }

// Validate checks l and returns nil or a ValidationErrors.
func (l *Location) Validate() error {
	var c checker
	l.validate(&c)
	return c.err()
}

func (l *Location) validate(c *checker) {
	c.required("", "id", l.ID, locationIDRule)
	c.required("", "name", l.Name, line(maxLine))
	k := &l.Contact
	c.required("contact", "official_name", k.OfficialName, line(maxLine))
	c.optional("contact", "representative", k.Representative, line(maxLine))
	k.Address.validate(c, "contact.address")
	c.optional("contact", "email", k.Email, emailRule)
	c.optional("contact", "phone", k.Phone, phoneRule)
	if k.Email == "" && k.Phone == "" {
		c.fail("contact", ruleLocationContact)
	}
	c.optional("", "context", l.Context, line(maxContext))
}

const ruleLocationContact = "must have email or phone"
