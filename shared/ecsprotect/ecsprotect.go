// Package ecsprotect keeps ECS from stopping this task while it has work in
// flight, through the ECS agent's task scale-in protection endpoint
// ($ECS_AGENT_URI/task-protection/v1/state). Outside ECS it does nothing.
package ecsprotect

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
)

// Protector turns the task's scale-in protection on and off.
type Protector struct {
	url     string
	client  *http.Client
	expires time.Duration
	log     *slog.Logger
	// Clock times Watch (nil: the system's clock).
	Clock clock.Clock
}

// FromEnv returns a protector when running on ECS (ECS_AGENT_URI is set),
// or nil. expires bounds each protection, so that a frozen worker does not
// keep its task for ever; Watch renews it while work continues.
func FromEnv(getenv func(string) string, expires time.Duration, log *slog.Logger) *Protector {
	agent := getenv("ECS_AGENT_URI")
	if agent == "" {
		return nil
	}
	return &Protector{url: agent + "/task-protection/v1/state", client: &http.Client{Timeout: 10 * time.Second}, expires: expires, log: log}
}

// Set turns protection on (for the expiry) or off.
func (p *Protector) Set(ctx context.Context, on bool) error {
	body := map[string]any{"ProtectionEnabled": on}
	if on {
		body["ExpiresInMinutes"] = max(1, int(p.expires/time.Minute))
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("task protection: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("task protection: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("task protection: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	var out struct {
		Failure *struct {
			Reason string `json:"Reason"`
		} `json:"failure"`
	}
	if json.Unmarshal(data, &out) == nil && out.Failure != nil {
		return fmt.Errorf("task protection: %s", out.Failure.Reason)
	}
	return nil
}

// Watch checks busy() every interval until ctx ends: the task is protected
// while busy (renewed before the expiry), and unprotected once idle. At the
// end protection is turned off, so that a stopping task does not linger.
func (p *Protector) Watch(ctx context.Context, interval time.Duration, busy func() bool) {
	t := clock.OrReal(p.Clock).NewTicker(interval)
	defer t.Stop()
	protected := false
	// now is the time of the tick; since, of the tick that asked for the
	// protection in force: no later than the agent counts its expiry from.
	var now, since time.Time
	set := func(on bool) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := p.Set(cctx, on); err != nil {
			p.log.Warn("could not change the task's scale-in protection", "protect", on, "err", err)
			return
		}
		protected, since = on, now
		p.log.Debug("task scale-in protection changed", "protect", on)
	}
	for {
		select {
		case <-ctx.Done():
			if protected {
				set(false)
			}
			return
		case now = <-t.C():
		}
		switch b := busy(); {
		case b && (!protected || now.Sub(since) > p.expires/2):
			set(true)
		case !b && protected:
			set(false)
		}
	}
}
