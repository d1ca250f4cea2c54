// Command app is the test image's only program (built FROM scratch, no
// registry): an HTTP server whose behaviour tests choose with environment
// variables. PORT (8080), VERSION (shown at /), EXIT_AFTER (a duration,
// then exit with EXIT_CODE), UNHEALTHY (any value: /healthz answers 500).
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if d, err := time.ParseDuration(os.Getenv("EXIT_AFTER")); err == nil {
		code, _ := strconv.Atoi(os.Getenv("EXIT_CODE"))
		go func() { time.Sleep(d); os.Exit(code) }()
	}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "version=%s host=%s\n", os.Getenv("VERSION"), os.Getenv("HOSTNAME"))
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if os.Getenv("UNHEALTHY") != "" {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
