package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Namespace is a block device served by the controller: BlockSize-byte
// logical blocks numbered 0..Blocks()-1.
//
// The synchronous methods (ReadAt, WriteAt, ReadBlocks, WriteBlocks,
// Flush, ...) are safe for concurrent use: each call borrows one of the
// controller's synchronous queue pairs and a pre-mapped bounce buffer,
// splits the transfer at the controller's maximum transfer size, and copies
// through the bounce buffer. For the hot path use a QueuePair of your own
// with Requests and Pool buffers, which copies nothing.
type Namespace struct {
	c         *Controller
	id        uint32
	info      *IdentifyNamespace
	blockSize int
	shift     uint // log2(blockSize)
	blocks    uint64
}

var (
	_ io.ReaderAt = (*Namespace)(nil)
	_ io.WriterAt = (*Namespace)(nil)
)

// Namespace returns active namespace nsid (1..NN). An nsid of 0, above
// Identify Controller NN, or not active is an error naming it.
func (c *Controller) Namespace(nsid uint32) (*Namespace, error) {
	return c.NamespaceContext(context.Background(), nsid)
}

// NamespaceContext is Namespace with a context for the Identify command.
func (c *Controller) NamespaceContext(ctx context.Context, nsid uint32) (*Namespace, error) {
	nn := c.id.NN
	if nsid == 0 || nsid > nn {
		return nil, fmt.Errorf("nvme: %w: nsid %d is not a namespace of this controller (NN %d: nsids 1..%d)", ErrInvalidArgument, nsid, nn, nn)
	}
	c.nsMu.Lock()
	ns := c.namespaces[nsid]
	c.nsMu.Unlock()
	if ns != nil {
		return ns, nil
	}
	info, err := c.IdentifyNamespace(ctx, nsid)
	if errors.Is(err, ErrNamespaceInactive) {
		return nil, fmt.Errorf("nvme: namespace %d is not active (NN %d): %w", nsid, nn, err)
	}
	if err != nil {
		return nil, err
	}
	ns, err = newNamespace(c, nsid, info)
	if err != nil {
		return nil, err
	}
	c.nsMu.Lock()
	if old := c.namespaces[nsid]; old != nil {
		ns = old
	} else {
		c.namespaces[nsid] = ns
	}
	c.nsMu.Unlock()
	return ns, nil
}

// newNamespace checks the Identify Namespace data before anything is sized
// from it: it is device input.
func newNamespace(c *Controller, nsid uint32, info *IdentifyNamespace) (*Namespace, error) {
	if ms := info.MetadataSize(); ms != 0 {
		return nil, fmt.Errorf("nvme: namespace %d: format %d has %d bytes of metadata per block, which nvmepoll does not handle: %w",
			nsid, info.FormatIndex(), ms, ErrNotSupported)
	}
	bs := info.BlockSize()
	if bs < 512 || bs > 1<<16 || bs&(bs-1) != 0 {
		c.countIdentify(BadLBADS)
		return nil, fmt.Errorf("nvme: namespace %d: block size %d is not a power of two from 512 to 65536: %w", nsid, bs, ErrOutOfSpec)
	}
	if bs > c.maxTransfer {
		return nil, fmt.Errorf("nvme: namespace %d: block size %d is above the maximum transfer %d: %w", nsid, bs, c.maxTransfer, ErrNotSupported)
	}
	if info.NSZE > 1<<63>>uint(bits.TrailingZeros(uint(bs))) {
		c.countIdentify(BadNSZE)
		return nil, fmt.Errorf("nvme: namespace %d: size %d blocks of %d bytes is above 2^63 bytes (Size is an int64): %w", nsid, info.NSZE, bs, ErrOutOfSpec)
	}
	return &Namespace{
		c: c, id: nsid, info: info,
		blockSize: bs, shift: uint(bits.TrailingZeros(uint(bs))), blocks: info.NSZE,
	}, nil
}

// ID is the namespace identifier.
func (ns *Namespace) ID() uint32 { return ns.id }

// BlockSize is the logical block size in bytes.
func (ns *Namespace) BlockSize() int { return ns.blockSize }

// MaxTransfer is the largest number of bytes one command moves on this
// namespace: the controller's MaxTransfer, capped at the 65536 blocks a
// command's 16-bit block count can name. ReadBlocks and WriteBlocks split
// larger transfers at this size; Submit refuses a larger Request.
func (ns *Namespace) MaxTransfer() int { return min(ns.c.maxTransfer, maxCommandBlocks<<ns.shift) }

// maxCommandBlocks is the most blocks one Read, Write, Compare or Write
// Zeroes names (NLB is 16 bits, 0-based).
const maxCommandBlocks = 65536

// Blocks is the namespace size in logical blocks (NSZE).
func (ns *Namespace) Blocks() uint64 { return ns.blocks }

// Size is the namespace size in bytes.
func (ns *Namespace) Size() int64 { return int64(ns.blocks << ns.shift) }

// Identify is the Identify Namespace data read when the Namespace was made.
func (ns *Namespace) Identify() *IdentifyNamespace { return ns.info }

// checkRange reports an error unless [lba, lba+n) is a non-empty range
// inside the namespace.
func (ns *Namespace) checkRange(lba, n uint64) error {
	if n == 0 {
		return fmt.Errorf("nvme: %w: zero-length transfer at lba %d of namespace %d", ErrInvalidArgument, lba, ns.id)
	}
	if lba >= ns.blocks || n > ns.blocks-lba {
		return fmt.Errorf("nvme: %w: lba %d+%d is past the end of namespace %d (%d blocks)", ErrInvalidArgument, lba, n, ns.id, ns.blocks)
	}
	return nil
}

// checkRanges checks Dataset Management ranges (16 bytes each: attributes,
// length, starting LBA) as the caller wrote them into DMA memory.
func (ns *Namespace) checkRanges(b []byte) error {
	for i := 0; i+16 <= len(b); i += 16 {
		nlb := binary.LittleEndian.Uint32(b[i+4:])
		slba := binary.LittleEndian.Uint64(b[i+8:])
		if err := ns.checkRange(slba, uint64(nlb)); err != nil {
			return fmt.Errorf("Dataset Management range %d: %w", i/16, err)
		}
	}
	return nil
}

// byteRange turns a byte offset and length into blocks.
func (ns *Namespace) byteRange(off int64, n int) (lba uint64, err error) {
	mask := int64(ns.blockSize - 1)
	if off < 0 || off&mask != 0 || int64(n)&mask != 0 {
		return 0, fmt.Errorf("nvme: %w: offset %d and length %d must be multiples of the block size %d of namespace %d",
			ErrInvalidArgument, off, n, ns.blockSize, ns.id)
	}
	lba = uint64(off) >> ns.shift
	return lba, ns.checkRange(lba, uint64(n)>>ns.shift)
}

// ReadAt reads len(p) bytes at byte offset off. Both must be multiples of
// the block size. It implements io.ReaderAt, with Options.IOTimeout per
// command: a read that reaches past the end returns what the namespace
// holds and io.EOF.
func (ns *Namespace) ReadAt(p []byte, off int64) (int, error) {
	var eof error
	if size := ns.Size(); off >= 0 && off+int64(len(p)) > size {
		if off >= size {
			p = p[:0]
		} else {
			p = p[:size-off]
		}
		eof = io.EOF
	}
	if len(p) == 0 && eof != nil && off%int64(ns.blockSize) == 0 {
		return 0, eof
	}
	lba, err := ns.byteRange(off, len(p))
	if err != nil {
		return 0, err
	}
	n, err := ns.transfer(context.Background(), NVMRead, lba, p, false)
	if err == nil {
		err = eof
	}
	return n, err
}

// WriteAt writes len(p) bytes at byte offset off. Both must be multiples of
// the block size. It implements io.WriterAt.
func (ns *Namespace) WriteAt(p []byte, off int64) (int, error) {
	lba, err := ns.byteRange(off, len(p))
	if err != nil {
		return 0, err
	}
	return ns.transfer(context.Background(), NVMWrite, lba, p, false)
}

// ReadBlocks reads len(p)/BlockSize blocks starting at lba into p, whose
// length must be a multiple of the block size.
func (ns *Namespace) ReadBlocks(ctx context.Context, lba uint64, p []byte) error {
	_, err := ns.blockOp(ctx, NVMRead, lba, p, false)
	return err
}

// WriteBlocks writes p (a multiple of the block size) starting at lba.
func (ns *Namespace) WriteBlocks(ctx context.Context, lba uint64, p []byte) error {
	_, err := ns.blockOp(ctx, NVMWrite, lba, p, false)
	return err
}

// WriteBlocksFUA is WriteBlocks with Force Unit Access: each command
// completes only once its data is on non-volatile media.
func (ns *Namespace) WriteBlocksFUA(ctx context.Context, lba uint64, p []byte) error {
	_, err := ns.blockOp(ctx, NVMWrite, lba, p, true)
	return err
}

// Compare asks the controller to compare p with the blocks at lba. A
// mismatch is a *StatusError matching ErrCompareFailure.
func (ns *Namespace) Compare(ctx context.Context, lba uint64, p []byte) error {
	_, err := ns.blockOp(ctx, NVMCompare, lba, p, false)
	return err
}

func (ns *Namespace) blockOp(ctx context.Context, op NVMOpcode, lba uint64, p []byte, fua bool) (int, error) {
	if len(p)%ns.blockSize != 0 {
		return 0, fmt.Errorf("nvme: %w: buffer of %d bytes is not a multiple of the block size %d of namespace %d",
			ErrInvalidArgument, len(p), ns.blockSize, ns.id)
	}
	if err := ns.checkRange(lba, uint64(len(p))>>ns.shift); err != nil {
		return 0, err
	}
	return ns.transfer(ctx, op, lba, p, fua)
}

// transfer moves p (already checked) in commands of at most MaxTransfer
// bytes through one bounce buffer on one synchronous queue pair.
func (ns *Namespace) transfer(ctx context.Context, op NVMOpcode, lba uint64, p []byte, fua bool) (int, error) {
	c := ns.c
	qp, err := c.takeSyncPair(ctx)
	if err != nil {
		return 0, err
	}
	defer c.putSyncPair(qp)
	buf, err := c.syncPool.GetContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("nvme: %v nsid %d lba %d: %w", op, ns.id, lba, err)
	}
	r := qp.syncRequest(op, ns)
	r.FUA, r.bounce = fua, c.syncPool
	done := 0
	for done < len(p) {
		n := min(len(p)-done, ns.MaxTransfer())
		r.LBA = lba + uint64(done>>ns.shift)
		r.Blocks = n >> ns.shift
		r.Buf = buf.Slice(0, n)
		if op != NVMRead {
			copy(r.Buf.Bytes, p[done:done+n])
		}
		if err := qp.exec(ctx, r); err != nil {
			if !r.abandoned {
				c.syncPool.Put(buf)
			}
			return done, err
		}
		if op == NVMRead {
			copy(p[done:done+n], r.Buf.Bytes)
		}
		done += n
	}
	c.syncPool.Put(buf)
	return done, nil
}

// simple runs one command without data on a synchronous queue pair.
func (ns *Namespace) simple(ctx context.Context, op NVMOpcode, lba uint64, blocks int) error {
	qp, err := ns.c.takeSyncPair(ctx)
	if err != nil {
		return err
	}
	defer ns.c.putSyncPair(qp)
	r := qp.syncRequest(op, ns)
	r.LBA, r.Blocks = lba, blocks
	return qp.exec(ctx, r)
}

// Flush commits data in the controller's volatile write cache to media.
func (ns *Namespace) Flush(ctx context.Context) error {
	return ns.simple(ctx, NVMFlush, 0, 0)
}

// WriteZeroes sets n blocks starting at lba to zero, in commands of at
// most 65536 blocks.
func (ns *Namespace) WriteZeroes(ctx context.Context, lba, n uint64) error {
	if err := ns.checkRange(lba, n); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, maxCommandBlocks)
		if err := ns.simple(ctx, NVMWriteZeroes, lba, int(k)); err != nil {
			return err
		}
		lba, n = lba+k, n-k
	}
	return nil
}

// BlockRange is a run of blocks for Deallocate.
type BlockRange struct {
	LBA    uint64
	Blocks uint32
}

// Deallocate tells the controller the blocks in ranges hold no data it
// must keep (trim / discard), with Dataset Management, 256 ranges per
// command.
func (ns *Namespace) Deallocate(ctx context.Context, ranges ...BlockRange) error {
	if len(ranges) == 0 {
		return fmt.Errorf("nvme: %w: Deallocate with no ranges", ErrInvalidArgument)
	}
	for _, rg := range ranges {
		if err := ns.checkRange(rg.LBA, uint64(rg.Blocks)); err != nil {
			return err
		}
	}
	c := ns.c
	qp, err := c.takeSyncPair(ctx)
	if err != nil {
		return err
	}
	defer c.putSyncPair(qp)
	buf, err := c.syncPool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("nvme: Deallocate nsid %d: %w", ns.id, err)
	}
	r := qp.syncRequest(NVMDatasetManagement, ns)
	r.bounce = c.syncPool
	for len(ranges) > 0 {
		k := min(len(ranges), 256)
		b := buf.Bytes[:k*16]
		for i, rg := range ranges[:k] {
			e := b[i*16:]
			binary.LittleEndian.PutUint32(e[0:], 0) // context attributes
			binary.LittleEndian.PutUint32(e[4:], rg.Blocks)
			binary.LittleEndian.PutUint64(e[8:], rg.LBA)
		}
		r.Blocks, r.Buf, r.LBA = k, buf.Slice(0, k*16), ranges[0].LBA
		if err := qp.exec(ctx, r); err != nil {
			if !r.abandoned {
				c.syncPool.Put(buf)
			}
			return err
		}
		ranges = ranges[k:]
	}
	c.syncPool.Put(buf)
	return nil
}

// takeSyncPair borrows a queue pair of the synchronous API: an idle one,
// else a new one while fewer than Options.SyncQueues exist, else it waits
// until one is given back or retired (which frees a slot to make one in),
// or ctx is done.
func (c *Controller) takeSyncPair(ctx context.Context) (*QueuePair, error) {
	select {
	case qp := <-c.syncPairs:
		return qp, nil
	default:
	}
	for {
		c.syncMu.Lock()
		if c.qidFreed.Swap(false) {
			c.syncMax = c.syncLimit // ids came back since they ran out
		}
		if c.syncMade < c.syncMax {
			qp, err := c.NewQueuePair(c.opts.SyncDepth)
			if err == nil {
				c.syncMade++
				c.syncMu.Unlock()
				return qp, nil
			}
			if c.syncMade == 0 || errors.Is(err, ErrClosed) {
				c.syncMu.Unlock()
				return nil, fmt.Errorf("nvme: creating a queue pair for synchronous I/O: %w", err)
			}
			// Queue ids ran out (the caller holds the rest): share ours.
			// Not when the controller failed: a Reset brings them back.
			if c.failedErr() == nil {
				c.syncMax = c.syncMade
			}
		}
		if c.syncRetired == nil {
			c.syncRetired = make(chan struct{})
		}
		retired := c.syncRetired
		c.syncMu.Unlock()
		select {
		case qp := <-c.syncPairs:
			return qp, nil
		case <-retired:
			// A slot is free: go round and make a pair in it.
		case <-ctx.Done():
			return nil, fmt.Errorf("nvme: waiting for a synchronous queue pair: %w", ctx.Err())
		}
	}
}

// putSyncPair gives a synchronous queue pair back. A pair holding a
// command its caller gave up on is retired instead: the controller may
// never answer it (a dropped completion, or an entry the queue cannot see
// past), so the pair is deleted, which frees the slot and the bounce
// buffer, and the next caller (or one already waiting) makes a fresh one.
func (c *Controller) putSyncPair(qp *QueuePair) {
	if qp.abandoned == 0 {
		c.syncPairs <- qp
		return
	}
	qp.Close() // its error is the controller's state, which the caller already saw
	c.syncMu.Lock()
	c.syncMade--
	if c.syncRetired != nil {
		close(c.syncRetired) // wake every waiter: one makes the new pair, the rest wait again
		c.syncRetired = nil
	}
	c.syncMu.Unlock()
}
