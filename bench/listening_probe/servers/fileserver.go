// A Go HTTP server on the socket start_server passes at fd 3 (os.NewFile + net.FileListener,
// standard library only).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	f := os.NewFile(3, "listener")
	l, err := net.FileListener(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fileserver: fd 3 is not a listening socket:", err)
		os.Exit(1)
	}
	f.Close()
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	}))
}
