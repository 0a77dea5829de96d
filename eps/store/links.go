package store

import (
	"fmt"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// MaxLinkRecord bounds one stored link record.
const MaxLinkRecord = 16 << 10

// PutLink stores the record of a one-time submission link under its
// label, replacing any record of that label. The record is opaque to the
// store (the endpoint server keeps the link with its secret: the file is
// 0600 and holds nothing a member's peer may read). PutLink returns once
// the record is on disk.
func (s *Store) PutLink(label string, rec []byte) error {
	if label == "" || len(label) > 63 || !utf8.ValidString(label) {
		return fmt.Errorf("put link: %w: label %q", ErrInvalid, label)
	}
	if len(rec) == 0 || len(rec) > MaxLinkRecord {
		return fmt.Errorf("put link %s: %w: record of %d bytes, limit %d", label, ErrTooLarge, len(rec), MaxLinkRecord)
	}
	rec = clone(rec)
	return s.write(len(rec), func(tx *bolt.Tx) error {
		return tx.Bucket(bLinks).Put([]byte(label), rec)
	})
}

// DeleteLink removes the record of label; removing a missing one is no
// error.
func (s *Store) DeleteLink(label string) error {
	return s.write(0, func(tx *bolt.Tx) error {
		b := tx.Bucket(bLinks)
		if b.Get([]byte(label)) == nil {
			return noop
		}
		return b.Delete([]byte(label))
	})
}

// Links returns every stored link record by label.
func (s *Store) Links() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bLinks).ForEach(func(k, v []byte) error {
			out[string(k)] = clone(v)
			return nil
		})
	})
	return out, err
}
