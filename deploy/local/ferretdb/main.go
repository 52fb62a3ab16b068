// Command ferretdb-local runs an embedded FerretDB (SQLite backend) that speaks
// the MongoDB wire protocol, for local development and tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served on -debug-addr only
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "./ferretdb-data", "directory for the SQLite databases")
	logFile := flag.String("log-file", "", "log file (default: stderr)")
	pidFile := flag.String("pid-file", "", "write the process id to this file")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	debugAddr := flag.String("debug-addr", "", "serve Go's /debug/pprof on this address (off when empty)")
	synchronous := flag.String("synchronous", "NORMAL",
		"SQLite's synchronous setting: FULL syncs the log to disk at every commit; NORMAL "+
			"(like MongoDB's default write concern) leaves that to the OS, so an acknowledged "+
			"write survives a crash of any process but may be lost on a power cut")
	pragmas := flag.String("sqlite-pragmas", "",
		"more SQLite pragmas for every connection, comma-separated, e.g. temp_store(memory)")
	flag.Parse()

	switch *synchronous {
	case "FULL", "NORMAL":
	default:
		fmt.Fprintf(os.Stderr, "ferretdb-local: -synchronous must be FULL or NORMAL, not %q\n", *synchronous)
		os.Exit(2)
	}

	if *debugAddr != "" {
		go func() {
			err := http.ListenAndServe(*debugAddr, nil)
			fmt.Fprintln(os.Stderr, "ferretdb-local: debug listener:", err)
		}()
	}

	url := "?_pragma=synchronous(" + *synchronous + ")"
	for _, p := range strings.Split(*pragmas, ",") {
		if p = strings.TrimSpace(p); p != "" {
			url += "&_pragma=" + p
		}
	}

	if err := run(*listen, *dataDir, *logFile, *pidFile, *logLevel, url); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-local:", err)
		os.Exit(1)
	}
}

func run(listen, dataDir, logFile, pidFile, logLevel, query string) error {
	var out io.Writer = os.Stderr
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("bad -log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/" + query,
	})
	if err != nil {
		return err
	}

	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
		defer os.Remove(pidFile)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("ferretdb-local starting", "listen", listen, "data_dir", dir)
	if err := f.Run(ctx); err != nil {
		return err
	}
	logger.Info("ferretdb-local stopped")
	return nil
}
