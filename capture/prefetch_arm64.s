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
