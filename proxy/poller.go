package proxy

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits for the readiness of the kernel sockets the evented relays
// serve (see evrelay.go): one epoll instance holding every such socket,
// edge-triggered, whose own readiness the Go runtime's poller waits for.
// So however many connections sit idle, one goroutine is parked, in the
// runtime's poller, and none per connection. An event calls the
// subscriber's relay to be scheduled, and one that says there is
// something to read marks the socket readable (sockEnd.readable).
//
// A socket leaves the epoll set when it is closed (the kernel removes a
// closed file from every epoll set), so unsubscribing is only forgetting
// the subscriber: no epoll_ctl per connection besides the one ADD.
type poller struct {
	f  *os.File // the epoll descriptor, in the runtime's poller
	rc syscall.RawConn

	mu   sync.Mutex
	subs map[int32]*sockEnd // by descriptor
	done chan struct{}      // closed when run returns
}

// pollEvents is what a subscribed socket is watched for, edge-triggered:
// data or a FIN or an error to read.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// pollEventsOut adds writability, asked for once a write has found the
// socket full (watchOut): a socket whose writes always fit never wakes
// its relay for room it does not need.
const pollEventsOut = pollEvents | unix.EPOLLOUT

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	pl := &poller{f: f, rc: rc, subs: make(map[int32]*sockEnd), done: make(chan struct{})}
	go pl.run()
	return pl, nil
}

// subscribe watches s's descriptor and schedules s.r on each of its
// events. The epoll set reports the socket's present readiness at once
// (edge-triggered sets do on ADD: ep_insert polls the file), so s.r may
// be scheduled before subscribe returns, and a socket that had data
// before it is reported readable.
func (pl *poller) subscribe(s *sockEnd) error {
	pl.mu.Lock()
	pl.subs[int32(s.fd)] = s
	pl.mu.Unlock()
	if err := pl.ctl(unix.EPOLL_CTL_ADD, s.fd, pollEvents); err != nil {
		pl.forget(s)
		return err
	}
	return nil
}

// ctl is epoll_ctl on the poller's set.
func (pl *poller) ctl(op, fd int, events uint32) error {
	var err error
	cerr := pl.rc.Control(func(epfd uintptr) {
		ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
		err = unix.EpollCtl(int(epfd), op, fd, &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// watchOut adds writability to fd's events. epoll_ctl re-polls fd, so a
// socket that became writable since the write that found it full is
// reported at once.
func (pl *poller) watchOut(fd int) error {
	return pl.ctl(unix.EPOLL_CTL_MOD, fd, pollEventsOut)
}

// forget drops s's subscription if it is still there: once its
// descriptor is closed, the number may already belong to another
// relay's socket.
func (pl *poller) forget(s *sockEnd) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.subs[int32(s.fd)] == s {
		delete(pl.subs, int32(s.fd))
	}
}

// pollReadable are the events after which a read finds something: data,
// the FIN, an error or a hang-up.
const pollReadable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP

// run dispatches events until close. It drains the epoll set without
// waiting and then parks in the runtime's poller until the set is ready
// again; the runtime's readiness flag is sticky, so an event arriving in
// between wakes it at once.
func (pl *poller) run() {
	defer close(pl.done)
	events := make([]unix.EpollEvent, 256)
	var ready []*evRelay
	var werr error
	drain := func(epfd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(epfd), events, 0)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = os.NewSyscallError("epoll_wait", err)
				return true
			case n == 0:
				return false
			}
			ready = ready[:0]
			pl.mu.Lock()
			for _, ev := range events[:n] {
				if s := pl.subs[ev.Fd]; s != nil {
					if ev.Events&pollReadable != 0 {
						s.readable.Store(true)
					}
					ready = append(ready, s.r)
				}
			}
			pl.mu.Unlock()
			for _, r := range ready {
				r.notify()
			}
			clear(ready)
			if n < len(events) {
				return false // drained: wait for the next events
			}
		}
	}
	for {
		// An error is the close (or werr, which cannot happen with a
		// valid epoll descriptor): the relays still end through their
		// stack side and their timeouts.
		if err := pl.rc.Read(drain); err != nil || werr != nil {
			return
		}
	}
}

// close stops run and closes the epoll descriptor.
func (pl *poller) close() {
	pl.f.Close()
	<-pl.done
}
