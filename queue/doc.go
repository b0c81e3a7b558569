// Package queue drives one NVMe submission/completion queue pair in DMA
// memory. It knows the 64-byte SQE and 16-byte CQE layouts, command ids,
// tail/head pointers, phase tags and doorbells; it knows nothing about what
// commands mean (that is package nvme).
//
// # Slots
//
// A pair of depth D has D-1 command slots. Callers name a command by its
// slot index, and each slot owns one pre-mapped PRP-list page
// (Pair.PRPList). The command id (CID) written in the SQE is the slot index
// in the low bits and the slot's generation, advanced on every Release, in
// the bits above: a stale duplicate completion for a slot's previous
// command cannot complete the command that reused it. Free slots sit on a LIFO stack so the most recently used,
// cache-hot slots are reused first. Acquire fails fast with ErrFull when all
// slots are out; that is back pressure for the submitter, never a completion.
//
// # Batching
//
// Following libvfn and SPDK, each step is separate so callers can batch:
//
//	Post        copy an SQE into the ring, advance the local tail
//	UpdateTail  write the SQ tail doorbell once, if the tail moved
//	Next        take one CQE if its phase tag is current, advance the head
//	UpdateHead  write the CQ head doorbell once, if the head moved
//
// Doorbells go through the Doorbell interface (MMIODoorbell for BAR0) and
// are the only interface calls on the I/O path. Nothing on the I/O path
// allocates.
//
// # Untrusted completions
//
// Every CQE is validated before use: its SQ id must be this queue's, its cid
// a slot with a posted command of the same generation, its SQ head inside
// the ring. A CQE that fails
// is consumed (the head moves past it, so the queue keeps going), leaves all
// slots untouched, is counted in Stats.BadCQEs and is returned as a
// *CQEError. Device data never causes a panic or an out-of-range index.
//
// # Ownership and concurrency
//
// The Config's memory belongs to the caller, who must keep it mapped while
// the Pair is used. A Pair is not safe for concurrent use; the caller
// serialises calls. Misuse by the driver itself (posting a cid that was not
// acquired, releasing a free slot or one whose command is still posted)
// panics, as unlocking an unlocked sync.Mutex does. Because a posted slot
// cannot be released, at most Depth-1 SQEs are ever unconsumed and the SQ
// cannot overflow without tracking the controller's SQ head.
//
// The layouts assume a little-endian host, as NVMe is little endian; nvmepoll
// runs on amd64 and arm64.
package queue
