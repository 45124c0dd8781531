package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// loopbackRequest sends one HTTP/1.1 request with no body to the running stub's admin endpoint
// at hostport and returns the status and at most limit bytes of the body. It is net/http's
// client without the Transport: the subcommands and the postStart hook only ever ask one
// loopback address once, and the Transport (connection pools, HTTP/2, proxies) added 0.7 MB to
// a binary whose image has a 10 MiB goal. ctx bounds the whole exchange.
func loopbackRequest(ctx context.Context, method, hostport, path, userAgent string, limit int64) (status string, code int, body []byte, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return "", 0, nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		method, path, hostport, userAgent); err != nil {
		return "", 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp.Status, resp.StatusCode, body, err
}
