package dns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// bucket holds one record per domain: the IPv4 and IPv6 addresses
// (16 bytes each) and the last-use stamp (8 bytes, big-endian).
var bucket = []byte("fakeip")

const recordLen = 16 + 16 + 8

// boltStore is a Store in a bbolt file.
type boltStore struct{ db *bolt.DB }

// OpenStore opens (creating it and its directory when missing) the bbolt
// file at path that keeps a Pool's mappings across restarts. Only one
// process may have it open; a second waits at most a second, then fails.
func OpenStore(path string) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("dns: cache file: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("dns: cache file %s is in use by another process", path)
		}
		return nil, fmt.Errorf("dns: open cache file %s: %w", path, err)
	}
	// A new domain's first answer waits for its write: keep the batch
	// window short.
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("dns: cache file %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

func (s *boltStore) Load() ([]Mapping, error) {
	var out []Mapping
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			if len(v) != recordLen {
				return nil // damaged: skipped, and overwritten when reassigned
			}
			out = append(out, Mapping{
				Domain: string(k),
				V4:     netip.AddrFrom16([16]byte(v[:16])).Unmap(),
				V6:     netip.AddrFrom16([16]byte(v[16:32])),
				Used:   binary.BigEndian.Uint64(v[32:]),
			})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dns: load cache file: %w", err)
	}
	return out, nil
}

// Put and Delete go through Batch: concurrent callers share one
// transaction and one fsync.
func (s *boltStore) Put(ms []Mapping) error {
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, m := range ms {
			var v [recordLen]byte
			a4, a6 := m.V4.As16(), m.V6.As16()
			copy(v[:16], a4[:])
			copy(v[16:32], a6[:])
			binary.BigEndian.PutUint64(v[32:], m.Used)
			if err := b.Put([]byte(m.Domain), v[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dns: write cache file: %w", err)
	}
	return nil
}

func (s *boltStore) Delete(domains []string) error {
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, d := range domains {
			if err := b.Delete([]byte(d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dns: write cache file: %w", err)
	}
	return nil
}

func (s *boltStore) Close() error { return s.db.Close() }
