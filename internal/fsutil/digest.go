package fsutil

import (
	"crypto/md5"
	"encoding/hex"
	"hash"
	"io"
)

// DigestReader passes a reader through, counting its bytes and computing
// their MD5, for content that streams to disk instead of being held.
type DigestReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

// NewDigestReader wraps r.
func NewDigestReader(r io.Reader) *DigestReader { return &DigestReader{r: r, h: md5.New()} }

func (d *DigestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

// N is the number of bytes read so far.
func (d *DigestReader) N() int64 { return d.n }

// MD5Hex is the lowercase hex MD5 of the bytes read so far.
func (d *DigestReader) MD5Hex() string { return hex.EncodeToString(d.h.Sum(nil)) }
