// Command arqonbus runs the ArqonBus WebSocket message bus.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/bus"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

const defaultBootstrap = bus.DefaultBootstrap

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, errHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arqonbus:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "arqonbus:", err)
		os.Exit(1)
	}
}

func newLogger(cfg *config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func run(cfg *config) error {
	log := newLogger(cfg)
	if cfg.NodeID == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		cfg.NodeID = hostname() + "-" + hex.EncodeToString(b)
	}
	bootstrap, err := bus.ParseKeys(cfg.BootstrapChannels)
	if err != nil {
		return fmt.Errorf("invalid ARQONBUS_BOOTSTRAP_CHANNELS: %w", err)
	}
	autoJoin, err := bus.ParseKeys(cfg.AutoJoin)
	if err != nil {
		return fmt.Errorf("invalid ARQONBUS_AUTO_JOIN: %w", err)
	}

	hub := fanout.NewHub(fanout.Options{Bootstrap: bootstrap, AutoCreate: cfg.AutoCreate})
	b := bus.New(bus.Config{
		NodeID:             cfg.NodeID,
		MaxViolations:      cfg.MaxViolations,
		ReplaceDuplicate:   cfg.ReplaceDuplicate,
		AutoJoin:           autoJoin,
		StorageMode:        cfg.Storage,
		JWTSecret:          cfg.JWTSecret,
		AdminToken:         cfg.AdminToken,
		AllowedOrigins:     splitList(cfg.AllowedOrigins),
		RateLimit:          cfg.RateLimit,
		RateBurst:          cfg.RateBurst,
		CommandRate:        cfg.CommandRate,
		CommandBurst:       cfg.CommandBurst,
		MaxSubscriptions:   cfg.MaxSubscriptions,
		MaxPendingCommands: cfg.MaxPending,
		CommandTimeout:     cfg.CommandTimeout,
		Logger:             log,
	}, hub)
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	srv := engine.New(engine.Config{
		Addr:             addr,
		Loops:            cfg.Loops,
		MaxConnections:   cfg.MaxConnections,
		MaxMessageSize:   cfg.MaxMessageSize,
		MaxOutboundBytes: cfg.MaxOutboundBytes,
		HandshakeTimeout: cfg.HandshakeTimeout,
		PingInterval:     cfg.PingInterval,
		IdleTimeout:      cfg.IdleTimeout,
		Logger:           log,
	}, b)
	b.AttachEngine(srv)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)

	engineDone := make(chan error, 1)
	go func() { engineDone <- srv.Run() }()
	select {
	case <-srv.Ready():
		log.Info("arqonbus listening", "addr", "ws://"+addr, "node_id", cfg.NodeID, "version", bus.Version,
			"max_connections", cfg.MaxConnections, "storage", cfg.Storage)
	case err := <-engineDone:
		return err
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-engineDone:
		return err
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	srv.CloseAll(b.ShutdownNotice(), engine.CloseGoingAway, "server shutting down")
	// Give the close frames a moment to leave before the loops stop.
	time.Sleep(100 * time.Millisecond)
	if err := srv.Stop(sctx); err != nil {
		log.Warn("engine stop", "err", err)
	}
	select {
	case err := <-engineDone:
		if err != nil {
			return err
		}
	case <-sctx.Done():
		return errors.New("shutdown deadline passed")
	}
	log.Info("stopped")
	return nil
}
