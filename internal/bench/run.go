package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tungate/tungate/internal/netlab"
)

// labPrefix names the bench's namespaces ("tgbench-xxxxxx-c", "-s").
const labPrefix = "tgbench"

// Run builds a topology, runs every test on every stack for the rounds
// asked and returns the report. A test that fails is recorded in
// Report.Failures and the run goes on; the returned error is for what
// stops the run: invalid options, a topology that cannot be built, or
// ctx being cancelled (then the report holds the rounds done so far and
// Report.Interrupted is set). Everything it started is gone when it
// returns, also after a panic.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	started := time.Now()
	p := newProgress(o.Progress, started, o.Rounds*len(o.Stacks)*len(o.Tests))
	lab, err := netlab.New(netlab.Options{Name: labPrefix, MTU: o.MTU, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p.note("topology up: namespaces %s and %s, veth MTU %d", lab.Client().Name, lab.Server().Name, o.MTU)
	defer func() {
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("bench: removing the topology: %w", cerr)
		}
		p.note("cleaned up: gateways stopped, namespaces removed")
	}()

	rec := newRecorder(o, started)
	for round := 1; round <= o.Rounds && ctx.Err() == nil; round++ {
		for _, stack := range o.Stacks {
			if ctx.Err() != nil {
				break
			}
			runStackRound(ctx, lab, o, stack, round, rec, p)
		}
	}
	rep = rec.report(time.Now(), hostInfo())
	if ctx.Err() != nil {
		rep.Interrupted = true
		return rep, fmt.Errorf("bench: interrupted: %w", context.Cause(ctx))
	}
	return rep, nil
}

// runStackRound brings stack up, runs the tests on it and takes it down,
// recording figures and failures. Once the gateway has died, the round's
// remaining tests on it are skipped.
func runStackRound(ctx context.Context, lab *netlab.Lab, o Options, stack string, round int, rec *recorder, p *progress) {
	t, err := bringUp(ctx, lab, o, stack, round)
	if err != nil {
		if ctx.Err() == nil {
			rec.fail(stack, "setup", round, err)
			p.note("round %d/%d  %s: setup FAILED: %v", round, o.Rounds, stack, err)
			p.steps += len(o.Tests)
		}
		return
	}
	defer func() {
		if err := t.Close(); err != nil {
			rec.fail(stack, "teardown", round, err)
			p.note("round %d/%d  %s: teardown FAILED: %v", round, o.Rounds, stack, err)
		}
	}()
	for i, test := range o.Tests {
		if ctx.Err() != nil {
			return
		}
		p.begin(round, o.Rounds, stack, test)
		f, err := t.runTest(ctx, test, o)
		if ctx.Err() != nil {
			p.interrupted()
			return
		}
		dead := t.alive()
		err = errors.Join(err, dead)
		if f != nil {
			rec.add(stack, test, f)
		}
		if err != nil {
			rec.fail(stack, test, round, err)
		}
		p.end(test, f, err)
		if (test == TestConnect || test == TestConnectReuse) && len(t.intervals) > 1 {
			p.intervals(t.intervals, o.ConnectInterval)
		}
		if dead != nil {
			p.steps += len(o.Tests) - i - 1
			return
		}
	}
}
