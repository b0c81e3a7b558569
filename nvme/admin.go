package nvme

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/nvmepoll/nvmepoll/queue"
)

// Admin commands run one at a time under adminMu and are polled: post the
// SQE, ring the doorbell, spin on the CQ phase bit until the completion
// arrives, the deadline passes, or the controller reports itself gone or
// fatal. Admin commands are rare (bring-up, queue creation, Identify, logs),
// so a mutex costs nothing that matters.

// AdminCommand runs one admin command and returns its completion. The
// command's CID is filled in with the id the controller sees. It waits until ctx is done or
// Options.AdminTimeout passes, whichever is first. A completion with an
// error status returns the completion and a *StatusError.
//
// cmd must not describe data outside memory the controller can reach; the
// typed methods (IdentifyController, GetLogPage...) handle that.
func (c *Controller) AdminCommand(ctx context.Context, cmd *queue.Command) (queue.Completion, error) {
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	return c.adminLocked(ctx, cmd)
}

func (c *Controller) adminLocked(ctx context.Context, cmd *queue.Command) (queue.Completion, error) {
	op := AdminOpcode(cmd.Opcode)
	if c.closed {
		return queue.Completion{}, &notSentError{fmt.Errorf("nvme: %v: controller %w", op, ErrClosed)}
	}
	cid, err := c.admin.Acquire()
	if err != nil {
		// Only commands lost to timeouts fill the admin queue; one that
		// was answered late gives its slot back once reaped.
		c.reapLateAdmin()
		cid, err = c.admin.Acquire()
	}
	if err != nil {
		return queue.Completion{}, &notSentError{fmt.Errorf("nvme: %v: all %d admin slots are held by commands that timed out: %w",
			op, c.admin.Slots(), ErrQueueFull)}
	}
	cmd.CID = cid
	c.admin.Post(cmd)
	c.admin.UpdateTail()
	// The caller, errors and the completion name the command id the
	// controller saw: the slot with its generation.
	wire := c.admin.CommandID(cid)
	cmd.CID = wire

	timeout := c.opts.AdminTimeout
	start := time.Now()
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var lastBad error
	for i := 0; ; i++ {
		cqe, ok, err := c.admin.Next()
		if err != nil {
			lastBad = err // counted by the queue; keep waiting for ours
			c.countBadCQE(err)
			continue
		}
		if ok {
			c.admin.Release(cqe.CID)
			if cqe.CID != cid {
				// A late completion of a command that timed out earlier:
				// its slot is free again.
				c.adminLost[cqe.CID] = false
				continue
			}
			c.admin.UpdateHead()
			cqe.CID = wire
			if err := StatusFromCompletion(cqe.Status, wire, cmd.Opcode, true); err != nil {
				if se, ok := err.(*StatusError); ok {
					se.NSID = cmd.NSID
				}
				return cqe, err
			}
			return cqe, nil
		}
		if i%256 != 255 {
			if i < 4096 {
				runtime.Gosched()
			} else {
				time.Sleep(20 * time.Microsecond)
			}
			continue
		}
		c.admin.UpdateHead()
		var giveUp error
		if err := CSTS(c.dev.Read32(RegCSTS)).Check(); err != nil {
			giveUp = err
		} else if err := ctx.Err(); err != nil {
			giveUp = err
		} else if time.Now().After(deadline) {
			giveUp = fmt.Errorf("no completion after %v: %w", time.Since(start).Round(time.Millisecond), ErrTimeout)
		}
		if giveUp != nil {
			// The controller may still complete the command; keep its slot
			// until it does.
			c.adminLost[cid] = true
			if cmd.PRP1 != 0 && cmd.PRP1 == c.adminBuf.IOVA {
				// Its data may still arrive: not into the next command's page.
				if err := c.replaceAdminBuf(); err != nil {
					giveUp = errors.Join(giveUp, err)
				}
			}
			if lastBad != nil {
				giveUp = fmt.Errorf("%w (last bad completion: %v)", giveUp, lastBad)
			}
			return queue.Completion{}, fmt.Errorf("nvme: admin %v (cid %d): %w", op, wire, giveUp)
		}
	}
}

// reapLateAdmin takes the completions of admin commands that timed out and
// were answered since, freeing their slots. adminMu is held.
func (c *Controller) reapLateAdmin() {
	for {
		cqe, ok, err := c.admin.Next()
		if err != nil {
			c.countBadCQE(err)
			continue
		}
		if !ok {
			break
		}
		c.admin.Release(cqe.CID)
		c.adminLost[cqe.CID] = false
	}
	c.admin.UpdateHead()
}

// identify runs Identify with the given CNS and NSID and returns a copy of
// the 4 KiB data structure.
func (c *Controller) identify(ctx context.Context, cns CNS, nsid uint32) ([]byte, error) {
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("nvme: %v: controller %w", cns, ErrClosed)
	}
	clear(c.adminBuf.Bytes[:PageSize])
	cmd := queue.Command{
		Opcode: uint8(AdminIdentify), NSID: nsid,
		PRP1: c.adminBuf.IOVA, CDW10: uint32(cns),
	}
	if _, err := c.adminLocked(ctx, &cmd); err != nil {
		return nil, fmt.Errorf("%v: %w", cns, err)
	}
	return append([]byte(nil), c.adminBuf.Bytes[:PageSize]...), nil
}

// IdentifyController reads and decodes the Identify Controller data.
func (c *Controller) IdentifyController(ctx context.Context) (*IdentifyController, error) {
	b, err := c.identify(ctx, CNSController, 0)
	if err != nil {
		return nil, err
	}
	id, err := parseIdentifyController(b, c.countIdentify)
	if err != nil {
		return nil, fmt.Errorf("nvme: Identify Controller: %w", err)
	}
	return id, nil
}

// IdentifyNamespace reads and decodes the Identify Namespace data of nsid.
func (c *Controller) IdentifyNamespace(ctx context.Context, nsid uint32) (*IdentifyNamespace, error) {
	if nsid == 0 || nsid == 0xffffffff {
		return nil, fmt.Errorf("nvme: Identify Namespace: %w: nsid %#x is not a namespace", ErrInvalidArgument, nsid)
	}
	b, err := c.identify(ctx, CNSNamespace, nsid)
	if err != nil {
		return nil, err
	}
	ns, err := parseIdentifyNamespace(b, c.countIdentify)
	if err != nil {
		return nil, fmt.Errorf("nvme: Identify Namespace %d: %w", nsid, err)
	}
	return ns, nil
}

// ActiveNamespaces lists the active namespace IDs in increasing order
// (Identify CNS 02h, 1024 IDs per page, followed until a short page).
func (c *Controller) ActiveNamespaces(ctx context.Context) ([]uint32, error) {
	var all []uint32
	var after uint32
	for {
		b, err := c.identify(ctx, CNSActiveNamespaces, after)
		if err != nil {
			return nil, err
		}
		ids, err := parseActiveNamespaces(b, c.countIdentify)
		if err != nil {
			return nil, fmt.Errorf("nvme: active namespace list after nsid %d: %w", after, err)
		}
		if len(ids) > 0 && ids[0] <= after {
			c.countIdentify(BadNSList)
			return nil, fmt.Errorf("nvme: active namespace list after nsid %d starts at nsid %d: %w", after, ids[0], ErrOutOfSpec)
		}
		all = append(all, ids...)
		if len(ids) < MaxActiveNamespaces {
			return all, nil
		}
		after = ids[len(ids)-1]
	}
}

// GetFeatures reads feature fid (select sel: 0 current, 1 default, 2
// saved, 3 supported capabilities) and returns completion DW0.
func (c *Controller) GetFeatures(ctx context.Context, fid FeatureID, sel uint8, cdw11 uint32) (uint32, error) {
	cmd := queue.Command{Opcode: uint8(AdminGetFeatures), CDW10: uint32(sel&7)<<8 | uint32(fid), CDW11: cdw11}
	cqe, err := c.AdminCommand(ctx, &cmd)
	if err != nil {
		return 0, fmt.Errorf("feature %v: %w", fid, err)
	}
	return cqe.DW0, nil
}

// SetFeatures sets feature fid to cdw11 (and cdw12 for the features that
// use it), optionally saving it, and returns completion DW0.
func (c *Controller) SetFeatures(ctx context.Context, fid FeatureID, save bool, cdw11, cdw12 uint32) (uint32, error) {
	cmd := queue.Command{Opcode: uint8(AdminSetFeatures), CDW10: uint32(fid), CDW11: cdw11, CDW12: cdw12}
	if save {
		cmd.CDW10 |= 1 << 31
	}
	cqe, err := c.AdminCommand(ctx, &cmd)
	if err != nil {
		return 0, fmt.Errorf("feature %v: %w", fid, err)
	}
	return cqe.DW0, nil
}

// SetNumberOfQueues asks for sq I/O submission and cq I/O completion
// queues and returns how many the controller granted (it may grant more
// or fewer; the host must use at most what it asked for).
func (c *Controller) SetNumberOfQueues(ctx context.Context, sq, cq int) (gotSQ, gotCQ int, err error) {
	cdw11, err := NumberOfQueues(sq, cq)
	if err != nil {
		return 0, 0, fmt.Errorf("nvme: %w", err)
	}
	dw0, err := c.SetFeatures(ctx, FeatureNumberOfQueues, false, cdw11, 0)
	if err != nil {
		return 0, 0, err
	}
	gotSQ, gotCQ = ParseNumberOfQueues(dw0)
	return min(gotSQ, sq), min(gotCQ, cq), nil
}

// SetVolatileWriteCache turns the volatile write cache on or off.
func (c *Controller) SetVolatileWriteCache(ctx context.Context, on bool) error {
	_, err := c.SetFeatures(ctx, FeatureVolatileWriteCache, false, uint32(b2i(on)), 0)
	return err
}

// createIOCQ creates I/O completion queue qid over physically contiguous
// memory at iova, interrupts off (PC=1, IEN=0).
func (c *Controller) createIOCQ(ctx context.Context, qid uint16, depth int, iova uint64) error {
	cmd := queue.Command{
		Opcode: uint8(AdminCreateIOCQ), PRP1: iova,
		CDW10: uint32(depth-1)<<16 | uint32(qid),
		CDW11: 1, // PC: physically contiguous; IEN clear: we poll
	}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("I/O CQ %d of %d entries: %w", qid, depth, err)
	}
	return nil
}

// createIOSQ creates I/O submission queue qid, bound to CQ cqid, at iova.
func (c *Controller) createIOSQ(ctx context.Context, qid uint16, depth int, iova uint64, cqid uint16) error {
	cmd := queue.Command{
		Opcode: uint8(AdminCreateIOSQ), PRP1: iova,
		CDW10: uint32(depth-1)<<16 | uint32(qid),
		CDW11: uint32(cqid)<<16 | 1, // PC; QPRIO 0 (ignored under round robin)
	}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("I/O SQ %d of %d entries on CQ %d: %w", qid, depth, cqid, err)
	}
	return nil
}

func (c *Controller) deleteIOSQ(ctx context.Context, qid uint16) error {
	cmd := queue.Command{Opcode: uint8(AdminDeleteIOSQ), CDW10: uint32(qid)}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("I/O SQ %d: %w", qid, err)
	}
	return nil
}

func (c *Controller) deleteIOCQ(ctx context.Context, qid uint16) error {
	cmd := queue.Command{Opcode: uint8(AdminDeleteIOCQ), CDW10: uint32(qid)}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("I/O CQ %d: %w", qid, err)
	}
	return nil
}

// GetLogPage reads len(buf) bytes (a multiple of 4) of log page lid for
// nsid (0xffffffff: all namespaces; 0 when the page is not per namespace),
// starting at byte offset off of the page. Reads larger than a page are
// split into page-sized commands. A read past the first page needs offsets,
// which a controller without Identify LPA bit 2 (extended data) does not
// take: it would answer every command with the page's start.
func (c *Controller) GetLogPage(ctx context.Context, lid LogPageID, nsid uint32, off uint64, buf []byte) error {
	if len(buf) == 0 || len(buf)%4 != 0 || off%4 != 0 {
		return fmt.Errorf("nvme: Get Log Page %v: %w: %d bytes at offset %d (both must be non-zero multiples of 4)",
			lid, ErrInvalidArgument, len(buf), off)
	}
	if (off != 0 || len(buf) > PageSize) && !c.logOffsets() {
		return fmt.Errorf("nvme: Get Log Page %v, %d bytes at offset %d: %w: LPA 0x%02x has no extended data (bit 2), so reads start at 0 and end within %d bytes",
			lid, len(buf), off, ErrNotSupported, c.id.LPA, PageSize)
	}
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	for done := 0; done < len(buf); {
		n := min(len(buf)-done, PageSize)
		numd := uint32(n/4 - 1) // 0-based dwords
		at := off + uint64(done)
		cmd := queue.Command{
			Opcode: uint8(AdminGetLogPage), NSID: nsid, PRP1: c.adminBuf.IOVA,
			CDW10: numd&0xffff<<16 | uint32(lid), // NUMDL
			CDW11: numd >> 16,                    // NUMDU
			CDW12: uint32(at), CDW13: uint32(at >> 32),
		}
		if _, err := c.adminLocked(ctx, &cmd); err != nil {
			return fmt.Errorf("log page %v, %d bytes at offset %d: %w", lid, n, at, err)
		}
		copy(buf[done:], c.adminBuf.Bytes[:n])
		done += n
	}
	return nil
}

// logOffsets reports whether Get Log Page takes an offset (LPA bit 2).
func (c *Controller) logOffsets() bool { return c.id.LPA&(1<<2) != 0 }

// ErrorLogEntries is how many Error Information entries one read can return:
// the controller's ELPE+1, or as many as fit in one page when it takes no
// log offsets (the newest entries come first, so those are the ones kept).
func (c *Controller) ErrorLogEntries() int {
	n := int(c.id.ELPE) + 1
	if !c.logOffsets() {
		n = min(n, PageSize/ErrorLogEntrySize)
	}
	return n
}

// SMARTLog reads the controller-wide SMART / Health Information log.
func (c *Controller) SMARTLog(ctx context.Context) (*SMARTLog, error) {
	buf := make([]byte, SMARTLogSize)
	if err := c.GetLogPage(ctx, LogSMART, 0xffffffff, 0, buf); err != nil {
		return nil, err
	}
	l, err := ParseSMARTLog(buf)
	if err != nil {
		return nil, fmt.Errorf("nvme: SMART log: %w", err)
	}
	return l, nil
}

// ErrorLog reads up to n entries of the Error Information log (newest
// first). n is capped at the controller's ELPE+1.
func (c *Controller) ErrorLog(ctx context.Context, n int) ([]ErrorLogEntry, error) {
	n = min(n, c.ErrorLogEntries())
	if n <= 0 {
		return nil, fmt.Errorf("nvme: error log: %w: %d entries", ErrInvalidArgument, n)
	}
	buf := make([]byte, n*ErrorLogEntrySize)
	if err := c.GetLogPage(ctx, LogErrorInformation, 0, 0, buf); err != nil {
		return nil, err
	}
	entries, err := ParseErrorLog(buf)
	if err != nil {
		return nil, fmt.Errorf("nvme: error log: %w", err)
	}
	return entries, nil
}

// Abort asks the controller to abort command cid on submission queue sqid.
// It reports whether the controller says it aborted the command (completion
// DW0 bit 0 clear); an aborted command still completes, with status
// Command Abort Requested.
func (c *Controller) Abort(ctx context.Context, sqid, cid uint16) (bool, error) {
	cmd := queue.Command{Opcode: uint8(AdminAbort), CDW10: uint32(cid)<<16 | uint32(sqid)}
	cqe, err := c.AdminCommand(ctx, &cmd)
	if err != nil {
		return false, fmt.Errorf("aborting cid %d on SQ %d: %w", cid, sqid, err)
	}
	return cqe.DW0&1 == 0, nil
}

// SecureErase values for FormatNVM.
const (
	SESNone   = 0 // no secure erase
	SESUser   = 1 // user data erase
	SESCrypto = 2 // cryptographic erase
)

// FormatNVM formats namespace nsid (0xffffffff: all) with LBA format lbaf
// (0-63) and secure erase setting ses. It may take long: give ctx a
// deadline that fits the device. Namespaces obtained earlier keep their
// old block size; get them again.
func (c *Controller) FormatNVM(ctx context.Context, nsid uint32, lbaf uint8, ses uint8) error {
	if lbaf > 63 || ses > 7 {
		return fmt.Errorf("nvme: Format NVM: %w: lbaf %d (0-63), ses %d (0-7)", ErrInvalidArgument, lbaf, ses)
	}
	cmd := queue.Command{
		Opcode: uint8(AdminFormatNVM), NSID: nsid,
		CDW10: uint32(lbaf&0xf) | uint32(ses)<<9 | uint32(lbaf>>4)<<12,
	}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("formatting nsid %d with lbaf %d: %w", nsid, lbaf, err)
	}
	c.nsMu.Lock()
	delete(c.namespaces, nsid)
	if nsid == 0xffffffff {
		clear(c.namespaces)
	}
	c.nsMu.Unlock()
	return nil
}
