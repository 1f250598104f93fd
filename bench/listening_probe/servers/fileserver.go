// A Go HTTP server on the socket start_server passes (os.NewFile + net.FileListener, standard
// library only): the fd of SERVER_STARTER_PORT's first entry (this project's start_server puts
// it at 3, Perl's at 4 or so), else 3.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	fd := 3
	if entries := os.Getenv("SERVER_STARTER_PORT"); entries != "" {
		first := strings.Split(entries, ";")[0]
		if n, err := strconv.Atoi(first[strings.LastIndex(first, "=")+1:]); err == nil {
			fd = n
		}
	}
	f := os.NewFile(uintptr(fd), "listener")
	l, err := net.FileListener(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fileserver: fd", fd, "is not a listening socket:", err)
		os.Exit(1)
	}
	f.Close()
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	}))
}
