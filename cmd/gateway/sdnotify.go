package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// sdNotify sends state to the service manager (sd_notify(3)) when it
// started us with NOTIFY_SOCKET, and does nothing otherwise: "READY=1"
// once the gateway serves, "RELOADING=1" around a reload, "STOPPING=1"
// at shutdown. An abstract socket is spelled with a leading "@".
func (a *app) sdNotify(state string) error {
	path := a.getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// getenv reads the environment the app was given.
func (a *app) getenv(key string) string {
	env := a.environ
	if env == nil {
		return os.Getenv(key)
	}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
