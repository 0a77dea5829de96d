package locations

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/pki"
)

// The services the index offers.
const (
	ServiceLocations = "locations"       // for providers: put, delete, list
	ServiceSearch    = "location-search" // for health offices
)

// Bounds.
const (
	// DefaultLimit is how many search results or listed locations come
	// back when the request names no limit.
	DefaultLimit = 20
	// MaxLimit is the most search results one answer carries.
	MaxLimit = 100
	// MaxListLimit is the most locations one list answer carries.
	MaxListLimit = 1000
	// MaxParams bounds the params of one call, in bytes: a location is
	// far smaller.
	MaxParams = 64 << 10
	// MaxQuery bounds a search text, in characters, and MaxTerms the words
	// in it.
	MaxQuery = 200
	MaxTerms = 8
	// DefaultMaxPerProvider is Config.MaxPerProvider's default.
	DefaultMaxPerProvider = 100_000
)

// Errors of the Go API. The services answer them with JSON-RPC errors:
// ErrNotFound and ErrInvalid as Invalid params, ErrFull as Too large,
// ErrRole as Not allowed.
var (
	ErrNotFound = errors.New("locations: no such location of this provider")
	ErrInvalid  = errors.New("locations: invalid request")
	ErrFull     = errors.New("locations: provider has the most locations allowed")
	ErrRole     = errors.New("locations: caller has the wrong role for this service")
	ErrClosed   = errors.New("locations: index closed")
)

// Config configures an Index.
type Config struct {
	// Path is the bbolt file (created with mode 0600). Required. One
	// process at a time may open it.
	Path string
	// Client, if not nil, is the local API of the index member's endpoint
	// server: the index then looks each caller's role up in the directory
	// (_directory) and refuses providers that search and offices that
	// publish, whatever the permissions say. If nil, the directory's
	// permissions alone decide who calls what.
	Client *sdk.Client
	// MaxPerProvider bounds the locations one provider may publish. If
	// zero, DefaultMaxPerProvider.
	MaxPerProvider int
	// Logger receives the index's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Index is the location index. It is safe for concurrent use.
type Index struct {
	cfg Config
	db  *bolt.DB
	log *slog.Logger
}

// Entry is a published location with its owner.
type Entry struct {
	// Provider is the member that published the location: the verified
	// caller, never a field of the payload.
	Provider  string               `json:"provider"`
	Location  contactdata.Location `json:"location"`
	UpdatedAt time.Time            `json:"updated_at"`
}

// Result is a page of entries: search results or a provider's list.
type Result struct {
	Locations []Entry `json:"locations"`
	// More is set if more entries matched than the answer carries.
	More bool `json:"more"`
}

var (
	bucketLoc   = []byte("loc")   // owner \x00 id → Entry JSON
	bucketText  = []byte("text")  // owner \x00 id → folded name \x00 folded text
	bucketCount = []byte("count") // owner → number of locations (8 bytes)
)

// Open opens or creates the index file.
func Open(cfg Config) (*Index, error) {
	if cfg.Path == "" {
		return nil, errors.New("locations: Config.Path is required")
	}
	if cfg.MaxPerProvider <= 0 {
		cfg.MaxPerProvider = DefaultMaxPerProvider
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("locations: open %s: %w", cfg.Path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLoc, bucketText, bucketCount} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("locations: open %s: %w", cfg.Path, err)
	}
	return &Index{cfg: cfg, db: db, log: log}, nil
}

// Close closes the file. Handlers must have returned.
func (ix *Index) Close() error { return ix.db.Close() }

// Register registers the index's two services on mux.
func (ix *Index) Register(mux *sdk.Mux) {
	mux.Handle(ServiceLocations, ix.HandleLocations)
	mux.Handle(ServiceSearch, ix.HandleSearch)
}

func key(owner, id string) []byte {
	k := make([]byte, 0, len(owner)+1+len(id))
	k = append(k, owner...)
	k = append(k, 0)
	return append(k, id...)
}

func closedErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Put publishes loc as owner's, replacing owner's location with the same
// id. It reports whether the location is new. loc must be valid
// (contactdata.Location.Validate; its errors are returned as they are).
func (ix *Index) Put(owner string, loc *contactdata.Location) (created bool, err error) {
	if err := pki.ValidName(owner); err != nil {
		return false, fmt.Errorf("%w: owner: %v", ErrInvalid, err)
	}
	if err := loc.Validate(); err != nil {
		return false, err
	}
	e := Entry{Provider: owner, Location: *loc, UpdatedAt: time.Now().UTC()}
	v, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	k := key(owner, loc.ID)
	err = ix.db.Update(func(tx *bolt.Tx) error {
		locs, cnt := tx.Bucket(bucketLoc), tx.Bucket(bucketCount)
		if locs.Get(k) == nil {
			n := count(cnt, owner)
			if n >= uint64(ix.cfg.MaxPerProvider) {
				return fmt.Errorf("%w: %s has %d", ErrFull, owner, n)
			}
			created = true
			if err := cnt.Put([]byte(owner), binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
				return err
			}
		}
		if err := locs.Put(k, v); err != nil {
			return err
		}
		return tx.Bucket(bucketText).Put(k, searchText(loc))
	})
	return created, closedErr(err)
}

func count(b *bolt.Bucket, owner string) uint64 {
	v := b.Get([]byte(owner))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// Delete removes owner's location id. It returns ErrNotFound if owner has
// none of that id (another provider's location of that id is not owner's,
// and stays).
func (ix *Index) Delete(owner, id string) error {
	k := key(owner, id)
	err := ix.db.Update(func(tx *bolt.Tx) error {
		locs, cnt := tx.Bucket(bucketLoc), tx.Bucket(bucketCount)
		if locs.Get(k) == nil {
			return fmt.Errorf("%w: %s has no location %q", ErrNotFound, owner, id)
		}
		if err := locs.Delete(k); err != nil {
			return err
		}
		if err := tx.Bucket(bucketText).Delete(k); err != nil {
			return err
		}
		n := count(cnt, owner)
		if n <= 1 {
			return cnt.Delete([]byte(owner))
		}
		return cnt.Put([]byte(owner), binary.BigEndian.AppendUint64(nil, n-1))
	})
	return closedErr(err)
}

// Get returns owner's location id.
func (ix *Index) Get(owner, id string) (*Entry, error) {
	var e Entry
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLoc).Get(key(owner, id))
		if v == nil {
			return fmt.Errorf("%w: %s has no location %q", ErrNotFound, owner, id)
		}
		return json.Unmarshal(v, &e)
	})
	if err != nil {
		return nil, closedErr(err)
	}
	return &e, nil
}

// List returns owner's locations in the order of their ids, starting
// after the id after ("" from the first), at most limit (1 to
// MaxListLimit; 0 means DefaultLimit).
func (ix *Index) List(owner, after string, limit int) (*Result, error) {
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxListLimit:
		return nil, fmt.Errorf("%w: limit must be between 1 and %d", ErrInvalid, MaxListLimit)
	}
	res := &Result{Locations: []Entry{}}
	prefix := key(owner, "")
	err := ix.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLoc).Cursor()
		k, v := c.Seek(key(owner, after))
		if after != "" && k != nil && bytes.Equal(k, key(owner, after)) {
			k, v = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(res.Locations) == limit {
				res.More = true
				break
			}
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("locations: entry %q: %w", k, err)
			}
			res.Locations = append(res.Locations, e)
		}
		return nil
	})
	if err != nil {
		return nil, closedErr(err)
	}
	return res, nil
}

// Query is a search.
type Query struct {
	// Text is what to look for: words that must all occur (as parts of
	// words, case and umlaut spelling ignored: "loewen" finds "Löwen") in
	// the location's name, the operator's official name, street, house
	// number, postcode or city. Required: 1 to MaxQuery characters, at
	// most MaxTerms words.
	Text string `json:"text"`
	// Limit is the most results (1 to MaxLimit); 0 means DefaultLimit.
	Limit int `json:"limit,omitempty"`
}

// Search returns the locations that match q, sorted by name (folded),
// then provider, then id; at most q.Limit of them, with More set if there
// were more.
func (ix *Index) Search(q Query) (*Result, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return nil, fmt.Errorf("%w: limit must be between 1 and %d", ErrInvalid, MaxLimit)
	}
	terms, err := queryTerms(q.Text)
	if err != nil {
		return nil, err
	}
	type match struct{ name, key []byte }
	var matches []match
	res := &Result{Locations: []Entry{}}
	err = ix.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketText).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			name, text, _ := bytes.Cut(v, []byte{0})
			if matchesAll(text, terms) {
				// k and v are valid for the transaction only; they are
				// read before it ends.
				matches = append(matches, match{name, k})
			}
		}
		slices.SortFunc(matches, func(a, b match) int {
			if c := bytes.Compare(a.name, b.name); c != 0 {
				return c
			}
			return bytes.Compare(a.key, b.key) // owner, then id
		})
		if len(matches) > limit {
			matches, res.More = matches[:limit], true
		}
		locs := tx.Bucket(bucketLoc)
		for _, m := range matches {
			var e Entry
			if err := json.Unmarshal(locs.Get(m.key), &e); err != nil {
				return fmt.Errorf("locations: entry %q: %w", m.key, err)
			}
			res.Locations = append(res.Locations, e)
		}
		return nil
	})
	if err != nil {
		return nil, closedErr(err)
	}
	return res, nil
}

// queryTerms folds and splits a search text.
func queryTerms(s string) ([][]byte, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return nil, fmt.Errorf("%w: text: is required", ErrInvalid)
	case !utf8.ValidString(s):
		return nil, fmt.Errorf("%w: text: must be valid UTF-8", ErrInvalid)
	case utf8.RuneCountInString(s) > MaxQuery:
		return nil, fmt.Errorf("%w: text: must be at most %d characters", ErrInvalid, MaxQuery)
	}
	words := strings.Fields(fold(s))
	if len(words) == 0 {
		return nil, fmt.Errorf("%w: text: must contain a letter or digit", ErrInvalid)
	}
	if len(words) > MaxTerms {
		return nil, fmt.Errorf("%w: text: must have at most %d words", ErrInvalid, MaxTerms)
	}
	terms := make([][]byte, len(words))
	for i, w := range words {
		terms[i] = []byte(w)
	}
	return terms, nil
}

// --- the services ---

// callerRole checks that the caller has role want, if the index has a
// Client to look it up with.
func (ix *Index) callerRole(ctx context.Context, from string, want pki.Role) error {
	if ix.cfg.Client == nil {
		return nil
	}
	d, err := ix.cfg.Client.DirectoryOf(ctx, from)
	if err != nil {
		return fmt.Errorf("look up %s in the directory: %w: %w", from, sdk.ErrRetry, err)
	}
	m, ok := d.Member(from)
	if !ok || m.Role != want {
		return fmt.Errorf("%w: %w: %s is not a %s", sdk.ErrNotAllowed, ErrRole, from, want)
	}
	return nil
}

// locationsParams are the params of ServiceLocations.
type locationsParams struct {
	Op       string          `json:"op"`
	Location json.RawMessage `json:"location,omitempty"`
	ID       string          `json:"id,omitempty"`
	After    string          `json:"after,omitempty"`
	Limit    int             `json:"limit,omitempty"`
	// Provider is accepted and ignored: the owner is the verified caller.
	Provider json.RawMessage `json:"provider,omitempty"`
}

// PutResult is the answer to a put.
type PutResult struct {
	Provider string `json:"provider"`
	ID       string `json:"id"`
	Created  bool   `json:"created"`
}

// DeleteResult is the answer to a delete.
type DeleteResult struct {
	Provider string `json:"provider"`
	ID       string `json:"id"`
	Deleted  bool   `json:"deleted"`
}

// HandleLocations is the handler of ServiceLocations. Its params are
//
//	{"op": "put", "location": Location}
//	{"op": "delete", "id": "<location id>"}
//	{"op": "list", "after": "<location id>", "limit": n}
//
// always about the caller's own locations (m.From).
func (ix *Index) HandleLocations(ctx context.Context, m *sdk.Message) (any, error) {
	if m.Kind != sdk.KindRequest {
		return nil, nil // notifications get no answer; nothing to do
	}
	if err := ix.callerRole(ctx, m.From, pki.RoleProvider); err != nil {
		return nil, err
	}
	var p locationsParams
	if err := decodeStrict(m.Params, &p); err != nil {
		return nil, err
	}
	if len(p.Provider) > 0 && string(p.Provider) != `"`+m.From+`"` {
		ix.log.Warn("locations: a provider field naming another member was ignored; the owner is the caller", "peer", m.From)
	}
	switch p.Op {
	case "put":
		if len(p.Location) == 0 {
			return nil, fieldError("location", "is required")
		}
		var loc contactdata.Location
		if err := contactdata.Decode(p.Location, &loc); err != nil {
			return nil, validationError("location", err)
		}
		created, err := ix.Put(m.From, &loc)
		if err != nil {
			return nil, ix.answerErr(err)
		}
		ix.log.Info("location published", "peer", m.From, "location", loc.ID, "created", created)
		return PutResult{Provider: m.From, ID: loc.ID, Created: created}, nil
	case "delete":
		if p.ID == "" {
			return nil, fieldError("id", "is required")
		}
		if err := ix.Delete(m.From, p.ID); err != nil {
			return nil, ix.answerErr(err)
		}
		ix.log.Info("location deleted", "peer", m.From, "location", p.ID)
		return DeleteResult{Provider: m.From, ID: p.ID, Deleted: true}, nil
	case "list":
		res, err := ix.List(m.From, p.After, p.Limit)
		if err != nil {
			return nil, ix.answerErr(err)
		}
		return res, nil
	case "":
		return nil, fieldError("op", "is required")
	}
	return nil, fieldError("op", "must be one of put, delete, list")
}

// HandleSearch is the handler of ServiceSearch. Its params are a Query,
// {"text": "...", "limit": n}; its answer a Result.
func (ix *Index) HandleSearch(ctx context.Context, m *sdk.Message) (any, error) {
	if m.Kind != sdk.KindRequest {
		return nil, nil
	}
	if err := ix.callerRole(ctx, m.From, pki.RoleHealthOffice); err != nil {
		return nil, err
	}
	var q Query
	if err := decodeStrict(m.Params, &q); err != nil {
		return nil, err
	}
	res, err := ix.Search(q)
	if err != nil {
		return nil, ix.answerErr(err)
	}
	return res, nil
}

// answerErr maps an error of the Go API to the answer a caller sees.
func (ix *Index) answerErr(err error) error {
	if ve, ok := errors.AsType[contactdata.ValidationErrors](err); ok {
		return validationError("location", ve)
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalid):
		return fmt.Errorf("%w: %w", sdk.ErrInvalidParams, err)
	case errors.Is(err, ErrFull):
		return fmt.Errorf("%w: %w", sdk.ErrTooLarge, err)
	}
	ix.log.Error("location index failed", "err", err)
	return err // Internal error; the detail is only logged
}

// FieldError is one refused field, as the data of an Invalid params
// answer carries it.
type FieldError struct {
	Field string `json:"field"`
	Rule  string `json:"rule"`
}

// validationError turns contactdata's errors about a document at prefix
// into Invalid params naming each field.
func validationError(prefix string, err error) error {
	ve, ok := errors.AsType[contactdata.ValidationErrors](err)
	if !ok {
		return fmt.Errorf("%w: %s: %v", sdk.ErrInvalidParams, prefix, err)
	}
	fields := make([]FieldError, 0, len(ve))
	msgs := make([]string, 0, len(ve))
	for _, e := range ve {
		f := prefix
		if e.Field != "" {
			f = prefix + "." + e.Field
		}
		fields = append(fields, FieldError{Field: f, Rule: e.Rule})
		msgs = append(msgs, f+": "+e.Rule)
	}
	return sdk.NewError(jsonrpc.CodeInvalidParams, strings.Join(msgs, "; "), fields)
}

func fieldError(field, rule string) error {
	return sdk.NewError(jsonrpc.CodeInvalidParams, field+": "+rule, []FieldError{{field, rule}})
}

// decodeStrict decodes params into v, refusing unknown members and
// anything over MaxParams.
func decodeStrict(params json.RawMessage, v any) error {
	if len(params) > MaxParams {
		return sdk.NewError(jsonrpc.CodeTooLarge, fmt.Sprintf("params must be at most %d bytes", MaxParams), nil)
	}
	return sdk.DecodeStrict(params, v)
}
