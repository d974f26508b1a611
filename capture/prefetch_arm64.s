#include "textflag.h"

// func prefetch(p *byte)
TEXT ·prefetch(SB), NOSPLIT|NOFRAME, $0-8
	MOVD p+0(FP), R0
	PRFM (R0), PLDL1KEEP
	ADD  $64, R0
	PRFM (R0), PLDL1KEEP
	RET

// func prefetchWrite(p *byte)
TEXT ·prefetchWrite(SB), NOSPLIT|NOFRAME, $0-8
	MOVD p+0(FP), R0
	PRFM (R0), PSTL1KEEP
	ADD  $64, R0
	PRFM (R0), PSTL1KEEP
	ADD  $64, R0
	PRFM (R0), PSTL1KEEP
	RET

// func prefetchStride(p *byte, stride, n int)
TEXT ·prefetchStride(SB), NOSPLIT|NOFRAME, $0-24
	MOVD p+0(FP), R0
	MOVD stride+8(FP), R1
	MOVD n+16(FP), R2
loop:
	PRFM (R0), PLDL1KEEP
	ADD  $64, R0, R3
	PRFM (R3), PLDL1KEEP
	ADD  R1, R0
	SUBS $1, R2
	BNE  loop
	RET
