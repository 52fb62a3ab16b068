// Command ferretdb-local runs an embedded FerretDB (SQLite backend) that speaks
// the MongoDB wire protocol, for local development and tests.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "./ferretdb-data", "directory for the SQLite databases")
	logFile := flag.String("log-file", "", "log file (default: stderr)")
	pidFile := flag.String("pid-file", "", "write the process id to this file")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()

	if err := run(*listen, *dataDir, *logFile, *pidFile, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-local:", err)
		os.Exit(1)
	}
}

func run(listen, dataDir, logFile, pidFile, logLevel string) error {
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
		SQLiteURL: "file:" + dir + "/",
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
