package main

import (
	"context"
	"fmt"
	"net"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/octavia-go/amphora-agent/agent"
	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/certs"
)

func runServe(ctx context.Context, g *globals, args []string) error {
	if _, err := subFlags(g, "serve", args, nil); err != nil {
		return err
	}
	cfg, log, err := loadConfig(g)
	if err != nil {
		return err
	}
	store, err := certs.Open(cfg.AgentServerCert, cfg.AgentServerCA, log)
	if err != nil {
		return fmt.Errorf("%w (check [amphora_agent] agent_server_cert and agent_server_ca)", err)
	}
	cfgStore := config.NewStore(cfg)
	srv := agent.New(agent.Deps{
		Config:  cfgStore,
		Certs:   store,
		Log:     log,
		Version: version,
	})
	ln, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("[haproxy_amphora] bind_host/bind_port: %w", err)
	}
	leaf := store.Leaf()
	log.Info("amphora agent listening", "addr", ln.Addr().String(), "version", version,
		"amphora_id", cfg.AmphoraID, "server_cert_cn", leaf.Subject.CommonName, "server_cert_not_after", leaf.NotAfter,
		"config_files", fmt.Sprint(cfg.Files))
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd readiness notification failed", "err", err)
	} else if sent {
		log.Debug("systemd notified: ready")
	}
	err = srv.Serve(ctx, ln)
	log.Info("amphora agent stopped")
	return err
}
