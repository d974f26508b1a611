package analyze

// RetryLinks completes the retry end of 417-retry links.
//
// An Analyzer sets both ends of a link (the 417's RetriedBy, the retry's
// RetryOf). When the connections of a capture are split over several
// Analyzers (pipeline workers), a retry seen by another one than its 417
// is linked only once the 417 is released, after the retry was emitted:
// the 417 names its retry, the retry's RetryOf is nil in what was emitted.
// A retry comes after its 417 in report order (its headers end after the
// 417), so Complete called on records in that order restores it, keeping
// only the links not yet completed.
type RetryLinks struct {
	byRetry map[string]string // retry id -> id of the 417 it repeats
}

// Complete notes r's RetriedBy and sets r's RetryOf when an earlier
// record named r as its retry.
func (l *RetryLinks) Complete(r *Record) {
	if r.RetriedBy != nil {
		if l.byRetry == nil {
			l.byRetry = map[string]string{}
		}
		l.byRetry[*r.RetriedBy] = r.ID
	}
	if len(l.byRetry) == 0 {
		return
	}
	if orig, ok := l.byRetry[r.ID]; ok {
		delete(l.byRetry, r.ID)
		if r.RetryOf == nil {
			r.RetryOf = &orig
		}
	}
}

// LinkRetries is Complete over records in any order.
func LinkRetries(recs []*Record) {
	byRetry := map[string]string{}
	for _, r := range recs {
		if r.RetriedBy != nil {
			byRetry[*r.RetriedBy] = r.ID
		}
	}
	for _, r := range recs {
		if orig, ok := byRetry[r.ID]; ok && r.RetryOf == nil {
			r.RetryOf = &orig
		}
	}
}
