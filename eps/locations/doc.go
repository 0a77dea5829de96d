// Package locations is the location index: a network service that one
// member (role service, pki.RoleService) runs in its software so that
// providers can publish the locations where they record guests and health
// offices can find them (docs/contact-data.md, "Guest-list requests").
//
// The index is not part of the endpoint server. Its software registers
// two services on an sdk.Mux that its endpoint server feeds (by callback
// or sdk.Poller):
//
//   - ServiceLocations ("locations"), for providers: put (publish or
//     replace), delete and list their own locations;
//   - ServiceSearch ("location-search"), for health offices: search by
//     text over name, official name, address, postcode and city.
//
// Who may call which is the directory's business (permissions signed by
// the operator); with a Config.Client the index also checks the caller's
// role itself. The owner of a location is always the caller the endpoint
// server names (sdk.Message.From, the verified TLS peer). Nothing in a
// payload can name another owner: locations are stored under (caller, id),
// so a provider can neither change nor delete another's location, and
// two providers may use the same id.
//
// Locations are validated with eps/contactdata and stored in a bbolt file.
// A search scans the index (a folded text per location, kept apart from
// the documents), sorts the matches by name, provider and id, and returns
// at most MaxLimit of them: the order is deterministic and the answer
// bounded.
package locations
