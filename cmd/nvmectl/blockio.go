package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme"
)

// blockRange holds the ways a command names blocks: --lba/--count in blocks or --offset/--size
// in bytes (with suffixes). Which are required depends on the command.
type blockRange struct {
	lba, count     uint64
	offset, size   int64
	lbaSet, cntSet bool
	offSet, sizSet bool
}

func rangeFlags(fs *flag.FlagSet, withCount bool) *blockRange {
	r := &blockRange{}
	fs.Func("lba", "`LBA` of the first block", func(s string) error {
		v, err := parseUint(s, 64)
		r.lba, r.lbaSet = v, true
		return numErr("lba", s, err)
	})
	fs.Func("offset", "first `BYTE` (a multiple of the block size; suffixes K, M, G, KiB...)", func(s string) error {
		v, err := parseSize(s)
		r.offset, r.offSet = v, true
		return err
	})
	if withCount {
		fs.Func("count", "number of `BLOCKS`", func(s string) error {
			v, err := parseUint(s, 64)
			r.count, r.cntSet = v, true
			return numErr("count", s, err)
		})
		fs.Func("size", "number of `BYTES` (a multiple of the block size; suffixes K, M, G, KiB...)", func(s string) error {
			v, err := parseSize(s)
			r.size, r.sizSet = v, true
			return err
		})
	}
	return r
}

// parseUint takes all of s as a decimal or 0x-prefixed hex number that fits in bits bits.
// fmt.Sscan would stop at the first character it cannot use ("1e6" is 1, "100k" is 100) and
// read a leading 0 as octal ("0800" is 0): each a block the operator never named.
func parseUint(s string, bits int) (uint64, error) {
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		return strconv.ParseUint(h, 16, bits)
	}
	return strconv.ParseUint(s, 10, bits)
}

func numErr(name, s string, err error) error {
	if err != nil {
		return fmt.Errorf("--%s %q is not a non-negative integer", name, s)
	}
	return nil
}

// start resolves the first block against namespace ns.
func (r *blockRange) start(ns *nvme.Namespace) (uint64, error) {
	bs := int64(ns.BlockSize())
	switch {
	case r.lbaSet && r.offSet:
		return 0, usagef("give --lba or --offset, not both")
	case r.offSet:
		if r.offset%bs != 0 {
			return 0, usagef("--offset %d is not a multiple of the %d-byte block size of namespace %d", r.offset, bs, ns.ID())
		}
		return uint64(r.offset / bs), nil
	case r.lbaSet:
		return r.lba, nil
	}
	return 0, usagef("give the first block with --lba N or --offset BYTES")
}

// blocks resolves the block count.
func (r *blockRange) blocks(ns *nvme.Namespace) (uint64, error) {
	bs := int64(ns.BlockSize())
	switch {
	case r.cntSet && r.sizSet:
		return 0, usagef("give --count or --size, not both")
	case r.sizSet:
		if r.size%bs != 0 {
			return 0, usagef("--size %d is not a multiple of the %d-byte block size of namespace %d", r.size, bs, ns.ID())
		}
		r.count = uint64(r.size / bs)
	case !r.cntSet:
		return 0, usagef("give the length with --count BLOCKS or --size BYTES")
	}
	if r.count == 0 {
		return 0, usagef("the length is 0 blocks: nothing to do")
	}
	return r.count, nil
}

// checkRange refuses blocks past the end of the namespace, naming both.
func checkRange(ns *nvme.Namespace, lba, n uint64) error {
	if lba >= ns.Blocks() || n > ns.Blocks()-lba {
		return usagef("lba %d+%d is past the end of namespace %d (%d blocks of %d bytes)", lba, n, ns.ID(), ns.Blocks(), ns.BlockSize())
	}
	return nil
}

// ioSetup is the shared start of every block command: flags, device, namespace.
type ioSetup struct {
	fs   *flag.FlagSet
	nsid *uint32
	rng  *blockRange
}

func newIOSetup(name string, withRange, withCount bool) *ioSetup {
	s := &ioSetup{fs: newFlags(name)}
	s.nsid = nsidFlag(s.fs)
	if withRange {
		s.rng = rangeFlags(s.fs, withCount)
	}
	return s
}

// run parses args, opens the device and namespace and calls f.
func (s *ioSetup) run(e *env, name string, args []string, f func(d *device, ns *nvme.Namespace) error) error {
	pos, err := parse(e, name, s.fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	return s.open(spec, f)
}

func (s *ioSetup) open(spec string, f func(d *device, ns *nvme.Namespace) error) error {
	if *s.nsid == 0 {
		return usagef("give the namespace with -n NSID (namespace ids start at 1)")
	}
	return withDevice(spec, nil, func(d *device) error {
		ns, err := d.namespace(*s.nsid)
		if err != nil {
			return err
		}
		return f(d, ns)
	})
}

// chunkBlocks is how many blocks one synchronous call moves: the namespace's transfer limit.
func chunkBlocks(ns *nvme.Namespace) uint64 {
	n := uint64(ns.MaxTransfer() / ns.BlockSize())
	if n == 0 {
		n = 1
	}
	return n
}

func cmdRead(e *env, args []string) error {
	s := newIOSetup("read", true, true)
	output := s.fs.String("output", "", "write the data to `FILE` (default stdout)")
	s.fs.StringVar(output, "o", "", "`FILE`, same as --output")
	pos, err := parse(e, "read", s.fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	out := e.stdout
	if *output != "" && *output != "-" {
		// Open the file first: an unwritable path fails before touching the device.
		f, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("cannot write the output file: %w", err)
		}
		out = f
	}
	err = s.open(spec, func(d *device, ns *nvme.Namespace) error {
		lba, err := s.rng.start(ns)
		if err != nil {
			return err
		}
		n, err := s.rng.blocks(ns)
		if err != nil {
			return err
		}
		if err := checkRange(ns, lba, n); err != nil {
			return err
		}
		step := chunkBlocks(ns)
		buf := make([]byte, int(min(step, n))*ns.BlockSize())
		for done := uint64(0); done < n; {
			k := min(step, n-done)
			p := buf[:int(k)*ns.BlockSize()]
			if err := ns.ReadBlocks(context.Background(), lba+done, p); err != nil {
				return fmt.Errorf("%s: reading lba %d+%d: %w", d.name, lba+done, k, err)
			}
			if _, err := out.Write(p); err != nil {
				return fmt.Errorf("writing the data out: %w", err)
			}
			done += k
		}
		return nil
	})
	if f, ok := out.(*os.File); ok && out != e.stdout {
		// Close reports a failed write-back (a full disk) that Write may not have.
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing %s: %w", *output, cerr)
		}
	}
	return err
}

// inputFlags adds --input/-i and --pad for write and compare.
func inputFlags(fs *flag.FlagSet) (input *string, pad *bool) {
	input = fs.String("input", "", "read the data from `FILE` (default stdin)")
	fs.StringVar(input, "i", "", "`FILE`, same as --input")
	pad = fs.Bool("pad", false, "zero-fill a short final block instead of failing")
	return input, pad
}

// openInput opens the input and, for a regular file, returns its size (-1 for a stream).
func openInput(e *env, name string) (io.Reader, int64, func(), error) {
	if name == "" || name == "-" {
		return e.stdin, -1, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("cannot read the input file: %w", err)
	}
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return f, size, func() { f.Close() }, nil
}

// streamBlocks feeds the input to fn in whole blocks, at most step blocks at a time, starting
// at lba. It checks the length against the namespace before sending anything when it knows the
// length (a regular file), and refuses a short final block unless pad.
func streamBlocks(ns *nvme.Namespace, in io.Reader, size int64, lba uint64, pad bool, what string,
	fn func(lba uint64, p []byte) error) (uint64, error) {
	bs := int64(ns.BlockSize())
	if size == 0 {
		return 0, usagef("the input is empty: nothing to %s", what)
	}
	if size > 0 {
		if size%bs != 0 && !pad {
			return 0, usagef("the input is %d bytes, not a multiple of the %d-byte block size; add --pad to zero-fill the last block", size, bs)
		}
		if err := checkRange(ns, lba, uint64((size+bs-1)/bs)); err != nil {
			return 0, err
		}
	} else if lba >= ns.Blocks() {
		return 0, checkRange(ns, lba, 1)
	}
	step := chunkBlocks(ns)
	buf := make([]byte, int(step)*int(bs))
	done := uint64(0)
	for {
		n, err := io.ReadFull(in, buf)
		if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return done, fmt.Errorf("reading the input: %w", err)
		}
		p := buf[:n]
		if rem := int64(n) % bs; rem != 0 {
			if !pad {
				return done, usagef("the input ends %d bytes into a block (total %d bytes, block size %d); add --pad to zero-fill it",
					rem, int64(done)*bs+int64(n), bs)
			}
			p = buf[:int64(n)+bs-rem]
			clear(p[n:])
		}
		k := uint64(int64(len(p)) / bs)
		if err := checkRange(ns, lba+done, k); err != nil {
			return done, err
		}
		if err := fn(lba+done, p); err != nil {
			return done, err
		}
		done += k
		if n < len(buf) {
			break
		}
	}
	if done == 0 {
		return 0, usagef("the input is empty: nothing to %s", what)
	}
	return done, nil
}

// streamInput feeds the input file (stdin for "" or "-") to fn block-aligned
// chunks at a time, from the range's start LBA on: the shared half of write
// and compare. It returns the start LBA and how many blocks fn took.
func (s *ioSetup) streamInput(e *env, ns *nvme.Namespace, input string, pad bool, what string,
	fn func(at uint64, p []byte) error) (lba, n uint64, err error) {
	lba, err = s.rng.start(ns)
	if err != nil {
		return 0, 0, err
	}
	in, size, done, err := openInput(e, input)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	n, err = streamBlocks(ns, in, size, lba, pad, what, fn)
	return lba, n, err
}

// partly says what a streaming command did before err stopped it. Once blocks have gone to
// the device, the error is no longer a usage mistake (exit 2, "nothing happened") even when
// its cause was the input: the operator must know the device changed.
func partly(err error, done uint64, format string, a ...any) error {
	if done == 0 {
		return err
	}
	return fmt.Errorf("%s, then stopped: %s", fmt.Sprintf(format, a...), err)
}

func cmdWrite(e *env, args []string) error {
	s := newIOSetup("write", true, false)
	input, pad := inputFlags(s.fs)
	return s.run(e, "write", args, func(d *device, ns *nvme.Namespace) error {
		lba, n, err := s.streamInput(e, ns, *input, *pad, "write", func(at uint64, p []byte) error {
			if err := ns.WriteBlocks(context.Background(), at, p); err != nil {
				return fmt.Errorf("%s: writing lba %d+%d: %w", d.name, at, len(p)/ns.BlockSize(), err)
			}
			return nil
		})
		if err != nil {
			return partly(err, n, "wrote %d blocks at lba %d of %s namespace %d", n, lba, d.name, ns.ID())
		}
		fmt.Fprintf(e.stderr, "wrote %d blocks (%d bytes) at lba %d of %s namespace %d\n", n, n*uint64(ns.BlockSize()), lba, d.name, ns.ID())
		return nil
	})
}

func cmdCompare(e *env, args []string) error {
	s := newIOSetup("compare", true, false)
	input, pad := inputFlags(s.fs)
	return s.run(e, "compare", args, func(d *device, ns *nvme.Namespace) error {
		lba, n, err := s.streamInput(e, ns, *input, *pad, "compare", func(at uint64, p []byte) error {
			err := ns.Compare(context.Background(), at, p)
			if errors.Is(err, nvme.ErrCompareFailure) {
				return fmt.Errorf("%s namespace %d: the data differs from the input in lba %d+%d", d.name, ns.ID(), at, len(p)/ns.BlockSize())
			}
			if errors.Is(err, nvme.ErrInvalidOpcode) {
				// Compare is optional (ONCS bit 0): fall back to reading and comparing here.
				got := make([]byte, len(p))
				if err := ns.ReadBlocks(context.Background(), at, got); err != nil {
					return fmt.Errorf("%s: reading lba %d: %w", d.name, at, err)
				}
				if !bytes.Equal(got, p) {
					return fmt.Errorf("%s namespace %d: the data differs from the input in lba %d+%d", d.name, ns.ID(), at, len(p)/ns.BlockSize())
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: comparing lba %d: %w", d.name, at, err)
			}
			return nil
		})
		if err != nil {
			return partly(err, n, "%d blocks at lba %d matched", n, lba)
		}
		fmt.Fprintf(e.stdout, "compare: %d blocks at lba %d match\n", n, lba)
		return nil
	})
}

func cmdTrim(e *env, args []string) error {
	s := newIOSetup("trim", true, true)
	return s.run(e, "trim", args, func(d *device, ns *nvme.Namespace) error {
		lba, n, err := s.resolve(ns)
		if err != nil {
			return err
		}
		var ranges []nvme.BlockRange
		for at, left := lba, n; left > 0; {
			k := min(left, 1<<31) // a range holds a 32-bit block count
			ranges = append(ranges, nvme.BlockRange{LBA: at, Blocks: uint32(k)})
			at, left = at+k, left-k
		}
		if err := ns.Deallocate(context.Background(), ranges...); err != nil {
			return fmt.Errorf("%s: deallocating lba %d+%d: %w", d.name, lba, n, err)
		}
		fmt.Fprintf(e.stdout, "trim: deallocated lba %d+%d of namespace %d\n", lba, n, ns.ID())
		return nil
	})
}

func cmdWriteZeroes(e *env, args []string) error {
	s := newIOSetup("write-zeroes", true, true)
	return s.run(e, "write-zeroes", args, func(d *device, ns *nvme.Namespace) error {
		lba, n, err := s.resolve(ns)
		if err != nil {
			return err
		}
		if err := ns.WriteZeroes(context.Background(), lba, n); err != nil {
			return fmt.Errorf("%s: write zeroes lba %d+%d: %w", d.name, lba, n, err)
		}
		fmt.Fprintf(e.stdout, "write-zeroes: zeroed lba %d+%d of namespace %d\n", lba, n, ns.ID())
		return nil
	})
}

func (s *ioSetup) resolve(ns *nvme.Namespace) (uint64, uint64, error) {
	lba, err := s.rng.start(ns)
	if err != nil {
		return 0, 0, err
	}
	n, err := s.rng.blocks(ns)
	if err != nil {
		return 0, 0, err
	}
	return lba, n, checkRange(ns, lba, n)
}

func cmdFlush(e *env, args []string) error {
	s := newIOSetup("flush", false, false)
	return s.run(e, "flush", args, func(d *device, ns *nvme.Namespace) error {
		if err := ns.Flush(context.Background()); err != nil {
			return fmt.Errorf("%s: flush namespace %d: %w", d.name, ns.ID(), err)
		}
		fmt.Fprintf(e.stdout, "flush: namespace %d of %s flushed\n", ns.ID(), d.name)
		return nil
	})
}

func cmdFormat(e *env, args []string) error {
	s := newIOSetup("format", false, false)
	lbaf := s.fs.Int("lbaf", -1, "LBA format `INDEX` (id-ns lists them)")
	s.fs.IntVar(lbaf, "l", -1, "`INDEX`, same as --lbaf")
	ses := s.fs.Int("ses", 0, "secure erase `SES`: 0 none, 1 user data, 2 cryptographic")
	force := s.fs.Bool("force", false, "really format: every block of the namespace is lost")
	pos, err := parse(e, "format", s.fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	if *lbaf < 0 || *lbaf >= nvme.MaxLBAFormats {
		return usagef("give the LBA format with --lbaf N (0-%d; id-ns lists them)", nvme.MaxLBAFormats-1)
	}
	if *ses < 0 || *ses > 2 {
		return usagef("--ses %d: want 0, 1 or 2", *ses)
	}
	return s.open(spec, func(d *device, ns *nvme.Namespace) error {
		id := ns.Identify()
		if *lbaf > int(id.NLBAF) {
			return usagef("--lbaf %d: namespace %d has formats 0-%d", *lbaf, ns.ID(), id.NLBAF)
		}
		if id.LBAF[*lbaf].BlockSize() == 0 {
			return usagef("--lbaf %d: the format is not available on namespace %d", *lbaf, ns.ID())
		}
		if !*force {
			return usagef("format erases all %s of namespace %d on %s; add --force to do it", humanBytes(float64(ns.Size())), ns.ID(), d.name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := d.ctrl.FormatNVM(ctx, ns.ID(), uint8(*lbaf), uint8(*ses)); err != nil {
			return fmt.Errorf("%s: format namespace %d: %w", d.name, ns.ID(), err)
		}
		fmt.Fprintf(e.stdout, "format: namespace %d of %s now uses LBA format %d (%d-byte blocks)\n", ns.ID(), d.name, *lbaf, id.LBAF[*lbaf].BlockSize())
		return nil
	})
}
