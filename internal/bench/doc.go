// Package bench measures the gateway against kernel TCP: it is the logic
// behind `gateway bench` (`gateway demo` is internal/demo).
//
// It builds a throwaway topology with internal/netlab (a client namespace
// whose traffic is routed into the gateway's TUN, a server namespace behind
// a veth pair, every address in 198.18.0.0/15), start the gateway under test
// as a separate process inside the client namespace (internal/gwproc), and drive it with
// clients and servers written in Go. The kernel baseline is the same lab
// with the TUN routes removed: the client talks straight over the veth.
//
// Everything a run starts (gateway processes, listeners, connections,
// namespaces) is released before Run returns, also when the
// context is cancelled or a workload fails.
package bench
