#include "textflag.h"

// func store32(p *uint32, v uint32)
// One MOVL: a plain store, not XCHG. x86 keeps stores in order, so the SQE
// stores that precede a doorbell store are visible to the device first.
TEXT ·store32(SB), NOSPLIT, $0-12
	MOVQ p+0(FP), AX
	MOVL v+8(FP), BX
	MOVL BX, (AX)
	RET
