package proxy

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// timeoutError reports a deadline that passed: a connect timeout, an idle or
// half-close timeout, or a proxy handshake cut short by its context. It
// satisfies errors.Is against both os.ErrDeadlineExceeded (what net.Conn
// deadlines return) and context.DeadlineExceeded (what a context with a
// deadline returns), so callers need not know which mechanism fired.
type timeoutError struct {
	msg   string
	after time.Duration // when set, Error appends " after <after>"
}

// timeoutAfter is the timeout error "<what> after <d>", formatted only
// when asked: one is made for every dial and handshake, and most never
// fire.
func timeoutAfter(what string, d time.Duration) *timeoutError {
	return &timeoutError{msg: what, after: d}
}

func (e *timeoutError) Error() string {
	if e.after != 0 {
		return e.msg + " after " + e.after.String()
	}
	return e.msg
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

func (e *timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded || target == context.DeadlineExceeded
}

// ctxError is the error a dial reports when ctx ended it: the cancellation
// cause when one was given, a timeoutError for an expired deadline.
func ctxError(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, os.ErrDeadlineExceeded) {
		return &timeoutError{msg: cause.Error()}
	}
	return cause
}

// failure classifies a failed upstream connect for the statistics.
type failure uint8

const (
	failOther   failure = iota
	failRefused         // the destination or the proxy refused: ECONNREFUSED
	failTimeout         // no answer in time
)

func classify(err error) failure {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case isTimeout(err):
		return failTimeout
	default:
		return failOther
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// isReset reports whether err says the peer reset the connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}
