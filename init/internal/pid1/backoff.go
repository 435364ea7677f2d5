package pid1

import "time"

const (
	minBackoff = time.Second
	maxBackoff = time.Minute
)

// backoff doubles from minBackoff up to maxBackoff.
type backoff struct{ cur time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = minBackoff
		return b.cur
	}
	b.cur = min(2*b.cur, maxBackoff)
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
