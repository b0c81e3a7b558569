package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// object is a JSON object that keeps its keys in insertion order, as nvme-cli prints them.
type object []field

type field struct {
	key string
	val any
}

func (o *object) add(key string, val any) { *o = append(*o, field{key, val}) }

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.val)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", f.key, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeJSON prints v indented, with a final newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// le is little-endian access to a page from the device. Reads past the end give 0, so a short
// page cannot make a decoder index out of range.
type le []byte

func (p le) u8(off int) uint8 {
	if off >= len(p) {
		return 0
	}
	return p[off]
}
func (p le) u16(off int) uint16 { return uint16(p.u8(off)) | uint16(p.u8(off+1))<<8 }
func (p le) u32(off int) uint32 { return uint32(p.u16(off)) | uint32(p.u16(off+2))<<16 }
func (p le) u64(off int) uint64 { return uint64(p.u32(off)) | uint64(p.u32(off+4))<<32 }

// u128 is a 128-bit value in decimal, as a JSON string: nvme-cli 2.3 (Debian bookworm's, the
// reference hwtest/crosscheck_test.go compares with in the guest) prints tnvmcap, nvmcap and the
// SMART counters as strings ("tnvmcap":"0"), which also keeps them exact in every JSON reader.
func (p le) u128(off int) string { return p.u128String(off) }

func (p le) u128String(off int) string {
	v := new(big.Int).SetUint64(p.u64(off + 8))
	v.Lsh(v, 64)
	v.Or(v, new(big.Int).SetUint64(p.u64(off)))
	return v.String()
}

func (p le) hex(off, n int) string {
	var b strings.Builder
	for i := off; i < off+n; i++ {
		fmt.Fprintf(&b, "%02x", p.u8(i))
	}
	return b.String()
}
