package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// proxyCommand listens on a Unix socket. A client writes "host:port\n";
// the proxy dials it over TCP from its own network namespace, answers
// "ok\n" (or "error: ...\n" and closes), then copies bytes both ways until
// either side closes. Unix sockets are named in the file system, which all
// network namespaces share, so a process outside the namespaces reaches
// their addresses without any route into them.
func proxyCommand(fs *flag.FlagSet) func(context.Context, logrus.FieldLogger) error {
	path := fs.String("unix", "", "Unix socket to listen on")
	return func(ctx context.Context, log logrus.FieldLogger) error {
		if *path == "" {
			return errors.New("--unix is required")
		}
		_ = os.Remove(*path)
		ln, err := net.Listen("unix", *path)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			<-ctx.Done()
			ln.Close()
		})
		log.WithField("unix", *path).Info("faultkit: proxy listening")
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("accepting: %w", err)
			}
			conns.Go(func() { splice(ctx, c) })
		}
	}
}

// splice serves one proxied connection.
func splice(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(c, 256)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	addr := strings.TrimSpace(line)
	d := net.Dialer{Timeout: 3 * time.Second}
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fmt.Fprintf(c, "error: %v\n", err)
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "ok\n"); err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(up, br)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(c, up)
		if uc, ok := c.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}
