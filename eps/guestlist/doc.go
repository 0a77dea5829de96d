// Package guestlist is the guest-list request flow between a health office
// and a provider (the vendor of a check-in app), on top of the Go SDK
// (eps/sdk); docs/contact-data.md, "Guest-list requests", describes the
// messages, permissions and status machine.
//
// The office side (Office) makes a contactdata.DataRequest with a seal key
// pair of its own (ML-KEM-768+X25519, pki.NewSealKey), keeps both in its
// bbolt file, and sends the request and the public key asynchronously to
// the provider's service guest-lists. The provider side (Vendor) checks
// the request (from a health office, for this provider, for one of its
// locations), asks the provider's software for the guests
// (VendorConfig.Guests), validates the GuestList, seals it to the
// request's key and answers. The answer travels through both endpoint
// servers as an opaque envelope inside their own sealed messages; only the
// office software that holds the request's private key opens it. The
// office checks the list against its request and moves the request to
// DATA_RECEIVED; Close and Abort move it on and notify the provider.
//
// Both sides keep the other side's signed receipts: the office the
// provider's endpoint server's receipt for the request (and the notice),
// the provider the office's endpoint server's receipt for its answer.
//
// Everything either side keeps is in its own bbolt file, written before
// anything is sent, so a restart of the software between a request and
// its answer loses nothing: the answer waits in the endpoint server until
// the software takes it, and the key to open it is in the file.
package guestlist
