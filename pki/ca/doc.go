// Package ca is the Kurier network CA. It wraps smallstep's embedded
// certificate authority (github.com/smallstep/certificates) and adds what
// Kurier needs on top of it: a member store, one-time enrolment tokens bound
// to member identities, the signed member directory, and the CA's own HTTP
// endpoints (trust bundle, directory, HPKE seal keys).
//
// Only kurierctl links this package; the runtime binary talks to the CA over
// its HTTP API with package pki.
//
// A CA lives in one directory (see Init for its layout). Everything that is
// secret in it is encrypted with the CA passphrase unless the operator asked
// for bare keys. The package reads the files of the directory it is handed and
// nothing else: no flags, no environment, no prompts. The passphrase is
// passed in by the caller.
//
// Several processes may use one CA directory at once (the server and
// kurierctl member commands): the member store is a bbolt file that each
// operation opens with a bounded lock timeout and closes again.
package ca
