package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tungate/tungate/internal/netlab"
)

// selfSigned is a throwaway TLS certificate for the QUIC server.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"quic.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestQUIC_EchoThroughTheGateway: a quic-go client in C and server in S,
// one connection whose stream carries 1 MiB each way through the
// gateway's UDP sessions, on both stacks.
func TestQUIC_EchoThroughTheGateway(t *testing.T) {
	cert := selfSigned(t)
	forEachStack(t, func(t *testing.T, e *env) {
		pc, err := e.lab.Server().ListenPacket("udp", netlab.ServerAddr4+":4433")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ln, err := quic.Listen(pc, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"tungate-test"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			_, _ = io.Copy(s, s)
			s.Close()
		}()

		cc, err := e.lab.Client().ListenPacket("udp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		conn, err := quic.Dial(ctx, cc, &net.UDPAddr{IP: net.ParseIP(netlab.ServerAddr4), Port: 4433},
			&tls.Config{InsecureSkipVerify: true, ServerName: "quic.test", NextProtos: []string{"tungate-test"}}, nil)
		if err != nil {
			t.Fatalf("quic dial through the gateway: %v\n%s", err, tail(e.logs(), 30))
		}
		defer conn.CloseWithError(0, "done")
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 1<<20)
		_, _ = rand.Read(want)
		go func() {
			_, _ = s.Write(want)
			s.Close()
		}()
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("echo of 1 MiB: %d bytes, equal %v, err %v", len(got), bytes.Equal(got, want), err)
		}
	})
}
