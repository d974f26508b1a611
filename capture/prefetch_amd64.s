#include "textflag.h"

// func prefetch(p *byte)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ p+0(FP), AX
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	RET

// func prefetchWrite(p *byte)
TEXT ·prefetchWrite(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ p+0(FP), AX
	// PREFETCHW (the Go assembler does not know it; CPUs before it
	// decode 0F 0D as a no-op): (AX), 64(AX), then (AX) again after
	// adding 128.
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	BYTE $0x0F; BYTE $0x0D; BYTE $0x48; BYTE $0x40
	ADDQ $128, AX
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	RET

// func prefetchStride(p *byte, stride, n int)
TEXT ·prefetchStride(SB), NOSPLIT|NOFRAME, $0-24
	MOVQ p+0(FP), AX
	MOVQ stride+8(FP), BX
	MOVQ n+16(FP), CX
loop:
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	ADDQ BX, AX
	DECQ CX
	JNZ loop
	RET
