package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/tcp"
)

// Status is the outcome of one script.
type Status string

// Outcomes.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is the outcome of one script. Line and Text locate the failing
// event; Message says what was expected and what the engine did, or why
// the script was skipped.
type Result struct {
	Path    string `json:"path"`
	Status  Status `json:"status"`
	Line    int    `json:"line,omitempty"`
	Text    string `json:"text,omitempty"`
	Message string `json:"message,omitempty"`
}

// Options configure a run.
type Options struct {
	// Lenient relaxes the checks to what a script written for another
	// TCP implementation can expect (see the package doc).
	Lenient bool
	// Defines selects #ifdef branches.
	Defines map[string]bool
}

// defaultTolerance is packetdrill's default --tolerance_usecs.
const defaultTolerance = 4 * time.Millisecond

// Addresses of the fake peer and the engine's side, inside 198.18.0.0/15
// (and 2001:2::/48): nothing leaves the process.
var (
	localV4  = netip.MustParseAddr("198.19.0.2")
	remoteV4 = netip.MustParseAddr("198.18.0.1")
	localV6  = netip.MustParseAddr("2001:2::2")
	remoteV6 = netip.MustParseAddr("2001:2::1")
)

const (
	localPort  = 8080
	remotePort = 40000
)

// runner executes one parsed script.
type runner struct {
	s        *Script
	opts     Options
	h        *harness
	b        bases
	tol      time.Duration
	local    netip.AddrPort
	remote   netip.AddrPort
	listenFD int64
	fds      map[int64]*fdState
	last     time.Duration // script time of the previous event
	blocked  *blockedCall  // the START...END call in progress, if any
	poked    bool          // an event ran since blocked was last checked
	// lingerAbort is SO_LINGER {onoff=1, linger=0} on the listening
	// socket: every connection accepted after it closes with a RST.
	lingerAbort bool
}

type fdState struct {
	c        stack.Conn
	closed   bool
	wrClosed bool
	rdClosed bool
	// lingerAbort: SO_LINGER {onoff=1, linger=0}, close aborts (RST).
	lingerAbort bool
}

// failure is a script failure at one event.
type failure struct {
	ev  *Event
	msg string
}

func (f *failure) Error() string { return f.msg }

// RunScript runs a parsed script and returns its result.
func RunScript(s *Script, opts Options) Result {
	res := Result{Path: s.Path}
	for i := range s.Events {
		if ev := &s.Events[i]; ev.Kind == Syscall {
			if why := vectorCall(&ev.Call); why != "" {
				res.Status, res.Message = Skip, fmt.Sprintf("line %d: %s", ev.Line, why)
				return res
			}
		}
	}
	if reason := unsupported(s, opts); reason != "" {
		res.Status, res.Message = Skip, reason
		return res
	}
	r := &runner{s: s, opts: opts, tol: defaultTolerance, fds: map[int64]*fdState{}, listenFD: -1}
	mod, err := r.configure()
	if err != nil {
		res.Status, res.Message = Fail, err.Error()
		return res
	}
	h, err := newHarness(mod)
	if err != nil {
		res.Status, res.Message = Fail, fmt.Sprintf("engine: %v", err)
		return res
	}
	r.h = h
	defer h.close()
	defer r.stopBlocked() // before close: the call's goroutine uses the engine
	if err := r.run(); err != nil {
		res.Status, res.Message = Fail, err.Error()
		var f *failure
		if errors.As(err, &f) && f.ev != nil {
			res.Line, res.Text = f.ev.Line, f.ev.Text
		}
		return res
	}
	res.Status = Pass
	return res
}

// unsupported returns why the runner cannot run s, or "".
func unsupported(s *Script, opts Options) string {
	if s.Skip != "" {
		return s.Skip
	}
	if s.PythonLine != 0 && !opts.Lenient {
		return fmt.Sprintf("line %d: inline Python (%%{ ... }%%) checks the kernel's TCP_INFO, which the runner does not run (--lenient runs the script without it)", s.PythonLine)
	}
	if _, why := planSockopts(s, opts.Lenient); why != "" {
		return why
	}
	if line := boundNotListening(s); line != 0 {
		return fmt.Sprintf("line %d: the socket is bound but never listens, a CLOSED port (RFC 9293 §3.10.7.1); the engine answers every SYN as a listener would", line)
	}
	for _, ev := range s.Events {
		if ev.Kind != Syscall {
			continue
		}
		c := ev.Call
		switch c.Name {
		case "connect":
			return fmt.Sprintf("line %d: active open (connect) is not supported: the engine only opens passively", ev.Line)
		case "socket":
			if strings.Contains(strings.Join(c.Args, ","), "SOCK_DGRAM") {
				return fmt.Sprintf("line %d: not a TCP socket", ev.Line)
			}
		case "read", "recv", "recvfrom":
		case "write", "send", "sendto", "bind", "listen", "accept", "close", "shutdown", "fcntl":
		case "setsockopt", "getsockopt": // planSockopts decided
		default:
			return fmt.Sprintf("line %d: system call %s is not supported", ev.Line, c.Name)
		}
	}
	for k := range s.Flags {
		switch k {
		case "ip_version", "tolerance_usecs", "remote_isn", "mtu", "delayed_ack_ms", "msl2_ms", "fin_wait2_timeout_ms",
			"syn_ack_retries", "no_timestamps", "no_sack", "no_wscale", "recv_buf",
			"syncookies", "keepalive_idle_ms", "keepalive_intvl_ms", "keepalive_probes":
		default:
			if !opts.Lenient {
				return fmt.Sprintf("header flag --%s is not supported", k)
			}
		}
	}
	return ""
}

// configure reads the header flags into addresses, tolerance and engine
// options.
func (r *runner) configure() (func(*tcp.Options), error) {
	r.local, r.remote = netip.AddrPortFrom(localV4, localPort), netip.AddrPortFrom(remoteV4, remotePort)
	ints := map[string]int64{}
	for k, v := range r.s.Flags {
		switch k {
		case "ip_version":
			switch v {
			case "ipv4", "ipv4-mapped-ipv6":
			case "ipv6":
				r.local, r.remote = netip.AddrPortFrom(localV6, localPort), netip.AddrPortFrom(remoteV6, remotePort)
			default:
				return nil, fmt.Errorf("--ip_version=%s: want ipv4 or ipv6", v)
			}
		case "no_timestamps", "no_sack", "no_wscale":
			ints[k] = 1
		default:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				if r.opts.Lenient {
					continue
				}
				return nil, fmt.Errorf("--%s=%s: want a number", k, v)
			}
			ints[k] = n
		}
	}
	if n, ok := ints["tolerance_usecs"]; ok {
		r.tol = time.Duration(n) * time.Microsecond
	}
	r.b.remote = uint32(ints["remote_isn"])
	ms := func(k string) time.Duration { return time.Duration(ints[k]) * time.Millisecond }
	plan, _ := planSockopts(r.s, r.opts.Lenient) // unsupported has rejected what cannot run
	return func(o *tcp.Options) {
		defer plan.apply(o) // the script's setsockopt calls, after the header flags
		if n := ints["mtu"]; n > 0 {
			o.MTU = int(n)
		}
		if _, ok := ints["delayed_ack_ms"]; ok {
			o.TCB.DelayedAck = ms("delayed_ack_ms")
			if o.TCB.DelayedAck == 0 {
				o.TCB.DelayedAck = -1
			}
		}
		if ints["msl2_ms"] > 0 {
			o.TCB.MSL2 = ms("msl2_ms")
		}
		if ints["fin_wait2_timeout_ms"] > 0 {
			o.TCB.FinWait2Timeout = ms("fin_wait2_timeout_ms")
		}
		if ints["syn_ack_retries"] > 0 {
			o.TCB.SynAckRetries = int(ints["syn_ack_retries"])
		}
		if ints["recv_buf"] > 0 {
			o.TCB.RecvBufSize = int(ints["recv_buf"])
		}
		// --syncookies=2 answers every SYN with a cookie, as Linux's
		// net.ipv4.tcp_syncookies=2 does.
		o.AlwaysSYNCookies = ints["syncookies"] == 2
		if ints["keepalive_idle_ms"] > 0 {
			o.TCB.KeepaliveIdle = ms("keepalive_idle_ms")
		}
		if ints["keepalive_intvl_ms"] > 0 {
			o.TCB.KeepaliveInterval = ms("keepalive_intvl_ms")
		}
		if ints["keepalive_probes"] > 0 {
			o.TCB.KeepaliveCount = int(ints["keepalive_probes"])
		}
		o.TCB.Timestamps = o.TCB.Timestamps && ints["no_timestamps"] == 0
		o.TCB.SACK = o.TCB.SACK && ints["no_sack"] == 0
		o.TCB.WindowScale = o.TCB.WindowScale && ints["no_wscale"] == 0
	}, nil
}

func (r *runner) fail(ev *Event, format string, args ...any) error {
	return &failure{ev: ev, msg: fmt.Sprintf(format, args...)}
}

func (r *runner) run() error {
	for i := range r.s.Events {
		ev := &r.s.Events[i]
		var err error
		if ev.Kind == Outbound {
			err = r.expect(ev)
		} else {
			err = r.act(ev)
		}
		if err != nil {
			return err
		}
	}
	if err := r.finishBlocked(); err != nil {
		return err
	}
	if !r.h.settle() {
		return r.fail(nil, "the handler did not answer a SYN in time")
	}
	if s, ok := r.h.pop(); ok {
		return r.fail(nil, "after the last event the engine sent %s at %s", r.b.describe(s), fmtTime(s.at))
	}
	r.h.mu.Lock()
	bad := r.h.badPacket
	r.h.mu.Unlock()
	if bad != nil {
		return r.fail(nil, "the engine emitted a malformed packet: %v", bad)
	}
	return nil
}

// eventTime returns the script time of ev and the end of its range.
func (r *runner) eventTime(ev *Event) (start, end time.Duration) {
	if ev.AnyTime {
		now := r.h.elapsed()
		return now, now + 10*time.Minute
	}
	start, end = ev.Start, ev.Start
	if ev.HasEnd {
		end = ev.End
	}
	if ev.Relative {
		start, end = r.last+start, r.last+end
	}
	return start, end
}

func fmtTime(d time.Duration) string { return fmt.Sprintf("%.6f", d.Seconds()) }

// expect checks the next segment the engine sends against ev.
func (r *runner) expect(ev *Event) error {
	start, end := r.eventTime(ev)
	lo, hi := start-r.tol, end+r.tol
	if ev.AnyTime {
		lo = 0
	}
	if err := r.collectBlocked(false); err != nil {
		return err
	}
	if r.h.pending() == 0 {
		r.h.advanceTo(hi, func() bool { return r.h.pending() > 0 })
	}
	s, ok := r.h.pop()
	if !ok {
		return r.fail(ev, "expected %s at %s; the engine sent nothing by %s", ev.Text, fmtTime(start), fmtTime(hi))
	}
	if r.opts.Lenient {
		s = r.mergeSuperSegment(ev.Seg, s)
	}
	diffs := r.b.checkSegment(ev.Seg, s, r.opts.Lenient, r.tol) // learns the bases describe uses
	if s.at < lo || s.at > hi {
		return r.fail(ev, "expected at %s (±%s); the engine sent %s at %s", fmtTime(start), r.tol, r.b.describe(s), fmtTime(s.at))
	}
	if s.src != r.local || s.dst != r.remote {
		return r.fail(ev, "segment from %s to %s; want %s to %s", s.src, s.dst, r.local, r.remote)
	}
	if len(diffs) > 0 {
		return r.fail(ev, "engine sent %s: %s", r.b.describe(s), strings.Join(diffs, "; "))
	}
	r.last = start
	if ev.AnyTime || ev.HasEnd {
		r.last = s.at
	}
	return nil
}

// mergeSuperSegment emulates TSO/GSO for scripts written on Linux, where
// packetdrill sees one segment of several MSS that the NIC would split:
// while s carries less data than want, it absorbs the next pending
// segments sent at the same time that continue it in sequence space
// and are otherwise identical (flags apart from PSH, ack, window,
// options), without growing past want's length. The merged segment
// has PSH if any part had it.
func (r *runner) mergeSuperSegment(want SegSpec, s sent) sent {
	for s.dataLen > 0 && uint32(s.dataLen) < want.Len {
		next, ok := r.h.popIf(func(n sent) bool {
			return n.dataLen > 0 && s.dataLen+n.dataLen <= int(want.Len) &&
				n.at == s.at && n.seq == s.seq+uint32(s.dataLen) && n.ack == s.ack &&
				n.flags&^packet.PSH == s.flags&^packet.PSH && n.wnd == s.wnd &&
				bytes.Equal(n.rawOpts, s.rawOpts) && n.src == s.src && n.dst == s.dst
		})
		if !ok {
			break
		}
		s.dataLen += next.dataLen
		s.flags |= next.flags & packet.PSH
	}
	return s
}

// act runs an inbound segment or a socket call at its time.
func (r *runner) act(ev *Event) error {
	start, end := r.eventTime(ev)
	if s, ok := r.h.pop(); ok {
		return r.fail(ev, "before this event the engine sent an unexpected %s at %s", r.b.describe(s), fmtTime(s.at))
	}
	if err := r.collectBlocked(ev.Kind == Syscall); err != nil {
		return err
	}
	if ev.Kind == Syscall && r.blocked != nil {
		return r.fail(ev, "%s while line %d's %s is still blocked", ev.Call.Name, r.blocked.ev.Line, r.blocked.ev.Call.Name)
	}
	r.h.advanceTo(start, func() bool { return r.h.pending() > 0 })
	if s, ok := r.h.pop(); ok {
		return r.fail(ev, "before this event the engine sent an unexpected %s at %s", r.b.describe(s), fmtTime(s.at))
	}
	r.last = start
	r.poked = r.blocked != nil
	switch {
	case ev.Kind == Inbound:
		return r.inject(ev)
	case ev.Blocking:
		r.startBlocking(ev, end)
		return nil
	}
	return r.call(ev)
}

func (r *runner) inject(ev *Event) error {
	sp := ev.Seg
	h := packet.TCPHeader{Src: r.remote, Dst: r.local, Seq: sp.Seq + r.b.remote, Flags: parseFlags(sp.Flags), Window: 65535}
	if sp.HasAck || strings.Contains(sp.Flags, ".") {
		// An ACK without "ack N" acknowledges relative 0, as in
		// packetdrill.
		h.Ack = sp.Ack + r.b.local
	}
	if sp.HasWin {
		h.Window = uint16(sp.Win)
	}
	if sp.HasOpts {
		opts := make([]Option, len(sp.Opts))
		copy(opts, sp.Opts)
		for i := range opts {
			if opts[i].Kind == "TS" && opts[i].Ecr != 0 {
				opts[i].Ecr += r.b.tsLocal
			}
			if opts[i].Kind == "sack" {
				opts[i].Sacks = append([][2]uint32(nil), opts[i].Sacks...)
				for j := range opts[i].Sacks {
					opts[i].Sacks[j][0] += r.b.local
					opts[i].Sacks[j][1] += r.b.local
				}
			}
		}
		h.RawOptions = encodeOptions(opts)
		if len(h.RawOptions) > packet.TCPMaxOptionsLen {
			return r.fail(ev, "options longer than %d bytes", packet.TCPMaxOptionsLen)
		}
	}
	payload := make([]byte, sp.Len)
	buf := make([]byte, 60+60+len(payload))
	n, err := packet.BuildTCP(buf, h, payload)
	if err != nil {
		return r.fail(ev, "building the segment: %v", err)
	}
	if err := r.h.e.DeliverInbound([][]byte{buf[:n]}); err != nil {
		return r.fail(ev, "DeliverInbound: %v", err)
	}
	if !r.h.settle() {
		return r.fail(ev, "the handler did not answer the SYN in time")
	}
	return nil
}

// errnoName maps an error from the engine's Conn to the errno a socket
// would report.
func errnoName(op string, err error) string {
	var en syscall.Errno
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "EAGAIN"
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, net.ErrClosed) && op == "write":
		return "EPIPE"
	case errors.Is(err, net.ErrClosed):
		return "EBADF"
	case errors.As(err, &en):
		for name, v := range errnos {
			if v == en {
				return name
			}
		}
		return en.Error()
	}
	return err.Error()
}

var errnos = map[string]syscall.Errno{
	"ECONNRESET": syscall.ECONNRESET, "ECONNREFUSED": syscall.ECONNREFUSED, "ETIMEDOUT": syscall.ETIMEDOUT,
	"ECONNABORTED": syscall.ECONNABORTED, "EPIPE": syscall.EPIPE, "EAGAIN": syscall.EAGAIN, "EBADF": syscall.EBADF,
	"ENOTCONN": syscall.ENOTCONN,
}

// realWait bounds how long (in real time) a socket call may wait for the
// engine; a call that would block in virtual time returns EAGAIN.
const realWait = 50 * time.Millisecond

// giveUpAfterRealWait makes a non-blocking call give up after realWait of
// real time: it clears the deadline that set (SetReadDeadline or
// SetWriteDeadline) sets and sets one in the past once realWait has
// passed. A deadline of realWait from now would not do: the Conn's
// deadlines run on the engine's manual clock, which stands still while
// the call waits. The returned function must be called when the call
// has returned; it waits for a timeout already firing, so that it cannot
// overtake the deadline the next call sets.
func giveUpAfterRealWait(set func(time.Time) error) (done func()) {
	set(time.Time{})
	fired := make(chan struct{})
	t := time.AfterFunc(realWait, func() {
		set(time.Now())
		close(fired)
	})
	return func() {
		if !t.Stop() {
			<-fired
		}
	}
}

func (r *runner) call(ev *Event) error {
	c := ev.Call
	ret, errno := int64(0), ""
	fd := func() (*fdState, error) {
		if len(c.Args) == 0 {
			return nil, r.fail(ev, "%s without a descriptor", c.Name)
		}
		n, err := strconv.ParseInt(c.Args[0], 0, 64)
		if err != nil {
			return nil, r.fail(ev, "bad descriptor %q", c.Args[0])
		}
		st := r.fds[n]
		if st == nil {
			return nil, nil
		}
		return st, nil
	}
	switch c.Name {
	case "socket":
		r.listenFD, ret = c.Ret, c.Ret
	case "setsockopt":
		ret = c.Ret // engine-wide options were applied at the start (planSockopts)
		if argAt(c, 2) != "SO_LINGER" {
			break
		}
		abort, _ := lingerAbort(argAt(c, 3))
		if fd, _ := strconv.ParseInt(argAt(c, 0), 10, 64); fd == r.listenFD {
			r.lingerAbort = abort
		} else if st := r.fds[fd]; st != nil {
			st.lingerAbort = abort
		}
	case "bind", "listen", "getsockopt", "fcntl":
		ret = c.Ret // no listening socket to configure: the engine accepts every SYN
	case "accept":
		conn := r.h.takeConn()
		if conn == nil {
			ret, errno = -1, "EAGAIN"
			break
		}
		r.fds[c.Ret] = &fdState{c: conn, lingerAbort: r.lingerAbort}
		ret = c.Ret
	case "read", "recv", "recvfrom", "write", "send", "sendto", "shutdown", "close":
		st, err := fd()
		if err != nil {
			return err
		}
		if st == nil || st.closed {
			if c.Name == "close" && len(c.Args) > 0 && c.Args[0] == strconv.FormatInt(r.listenFD, 10) {
				ret = 0 // closing the listening socket
				break
			}
			ret, errno = -1, "EBADF"
			break
		}
		ret, errno, err = r.connCall(ev, st, false)
		if err != nil {
			return err
		}
	}
	// Calls that emit (write, close, shutdown) do so synchronously; the
	// next event checks what they sent.
	return r.checkReturn(ev, ret, errno)
}

// checkReturn compares a call's result with the script's.
func (r *runner) checkReturn(ev *Event, ret int64, errno string) error {
	c := ev.Call
	if ret != c.Ret || (c.Ret == -1 && sameErrno(errno) != sameErrno(c.Errno)) {
		got := strconv.FormatInt(ret, 10)
		if ret == -1 {
			got += " " + errno
		}
		want := strconv.FormatInt(c.Ret, 10)
		if c.Ret == -1 {
			want += " " + c.Errno
		}
		return r.fail(ev, "%s returned %s, want %s", c.Name, got, want)
	}
	return nil
}

// connCall runs a call on an accepted connection. Unless blocking, a read
// or write waits at most realWait; a blocking caller has cleared the
// deadlines itself, so that it can set them again to cancel the call.
func (r *runner) connCall(ev *Event, st *fdState, blocking bool) (int64, string, error) {
	c := ev.Call
	size := func() (int, error) {
		if len(c.Args) < 3 {
			return 0, r.fail(ev, "%s: want (fd, buf, len)", c.Name)
		}
		n, err := strconv.Atoi(c.Args[2])
		if err != nil {
			return 0, r.fail(ev, "%s: bad length %q", c.Name, c.Args[2])
		}
		return n, nil
	}
	switch c.Name {
	case "read", "recv", "recvfrom":
		n, err := size()
		if err != nil {
			return 0, "", err
		}
		if st.rdClosed {
			return 0, "", nil
		}
		if !blocking {
			defer giveUpAfterRealWait(st.c.SetReadDeadline)()
		}
		var got int
		var rerr error
		if strings.Contains(strings.Join(c.Args, ","), "MSG_PEEK") {
			// The application's view of the receive queue, left in place
			// for the next read (the own engine's Conn can peek).
			p, ok := st.c.(interface{ Peek([]byte) (int, error) })
			if !ok {
				return 0, "", r.fail(ev, "MSG_PEEK: the connection cannot peek")
			}
			got, rerr = p.Peek(make([]byte, n))
		} else {
			got, rerr = io.ReadAtLeast(st.c, make([]byte, n), 1)
		}
		if got > 0 || errors.Is(rerr, io.EOF) {
			return int64(got), "", nil
		}
		return -1, errnoName("read", rerr), nil
	case "write", "send", "sendto":
		n, err := size()
		if err != nil {
			return 0, "", err
		}
		if st.wrClosed {
			return -1, "EPIPE", nil
		}
		if !blocking {
			defer giveUpAfterRealWait(st.c.SetWriteDeadline)()
		}
		got, werr := st.c.Write(make([]byte, n))
		if got > 0 || werr == nil {
			return int64(got), "", nil
		}
		return -1, errnoName("write", werr), nil
	case "shutdown":
		if len(c.Args) < 2 {
			return 0, "", r.fail(ev, "shutdown: want (fd, how)")
		}
		how := c.Args[1]
		if how == "SHUT_WR" || how == "SHUT_RDWR" {
			st.wrClosed = true
			if err := st.c.CloseWrite(); err != nil {
				return -1, errnoName("shutdown", err), nil
			}
		}
		if how == "SHUT_RD" || how == "SHUT_RDWR" {
			st.rdClosed = true
			if err := st.c.CloseRead(); err != nil {
				return -1, errnoName("shutdown", err), nil
			}
		}
		return 0, "", nil
	case "close":
		st.closed = true
		if st.lingerAbort {
			st.c.Abort() // SO_LINGER {1, 0}: RFC 9293 §3.10.4 ABORT
			return 0, "", nil
		}
		st.c.Close() // a socket's close succeeds even after a reset
		return 0, "", nil
	}
	return 0, "", r.fail(ev, "unsupported call %s", c.Name)
}

// sameErrno maps errno names that are one value on Linux to one name.
func sameErrno(name string) string {
	if name == "EWOULDBLOCK" {
		return "EAGAIN"
	}
	return name
}
