package format

import (
	"context"
	"errors"

	"lifeline/internal/change"
)

// maxProblems bounds how many problems Verify reports for one object.
const maxProblems = 20

// Verify reads and decodes a whole object and checks everything the format
// promises: the footer, header and index checksums; every block's stored and
// plaintext checksums (and authentication, if encrypted); that the blocks
// tile the object exactly as the index says, with the index's counts and
// bounds exact; every record's validity and the sort order; and, for a
// segment, that the positions are exactly First..Last, each once, with the
// header's first and last times.
//
// It returns nil, or the problems found (up to 20, joined; one per damaged
// tenant), each wrapping ErrCorrupt, ErrVersion or ErrKey as Open does.
// Problems are collected per tenant so one bad block does not hide another.
func Verify(ctx context.Context, r RangeReader, size int64, key []byte) error {
	rd, err := Open(ctx, r, size, key)
	if err != nil {
		return err
	}
	h := &rd.h
	var seen []uint64 // segment: one bit per position First..Last
	if h.Kind == Segment {
		seen = make([]uint64, (h.Last-h.First)/64+1)
	}
	var problems []error
	for i := range rd.tenants {
		t := &rd.tenants[i]
		var bad error
		err := rd.scan(ctx, t, func(c *change.Change) bool {
			bad = checkObjectRecord(h, seen, c)
			return bad == nil
		})
		if err == errStop {
			err = bad
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			problems = append(problems, err)
			if len(problems) == maxProblems {
				break
			}
		}
	}
	if len(problems) == 0 && h.Kind == Segment {
		// The index's record total is Last-First+1, every block's count was
		// checked and no position repeated, so none is missing; check anyway.
		for p := h.First; p <= h.Last; p++ {
			if i := p - h.First; seen[i/64]&(1<<(i%64)) == 0 {
				problems = append(problems, corruptf("segment %d..%d: position %d is missing", h.First, h.Last, p))
				break
			}
		}
	}
	return errors.Join(problems...)
}

// checkObjectRecord checks what only the whole object can tell: positions
// unique across tenants, and the header's times.
func checkObjectRecord(h *Header, seen []uint64, c *change.Change) error {
	if h.Kind != Segment {
		return nil
	}
	i := c.Pos - h.First // the block parser checked First <= Pos <= Last
	if seen[i/64]&(1<<(i%64)) != 0 {
		return corruptf("segment %d..%d: position %d appears twice (again in tenant %q)", h.First, h.Last, c.Pos, c.Tenant)
	}
	seen[i/64] |= 1 << (i % 64)
	if c.Pos == h.First && !c.Time.Equal(h.FirstTime) || c.Pos == h.Last && !c.Time.Equal(h.LastTime) {
		return corruptf("segment %d..%d: position %d has time %v, the header says %v..%v", h.First, h.Last, c.Pos, c.Time, h.FirstTime, h.LastTime)
	}
	return nil
}
