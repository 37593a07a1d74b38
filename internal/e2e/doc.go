// Package e2e holds the end-to-end tests of the gateway: the real binary on
// a real TUN inside network namespaces made by internal/netlab, driven by
// kernel TCP/UDP/ICMP clients. The tests need root and skip without it.
package e2e
