//go:build !nochdb

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestAuditorStatusEveryInstance: `cordon auditor status` shows every
// running auditor instance by USAGE partition — here two with static
// lists that leave partition 7 unread, which is flagged and makes the
// command fail, then a third that takes it, after which it succeeds.
func TestAuditorStatusEveryInstance(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nenv := natstest.Run(t)
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nenv.PublishKey(t, signer)
	now := time.Now()
	claims := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"},
		Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	admin, _ := signer.Mint(claims)
	recordIssued(t, nenv.JS, signer.KeyID, claims)
	tf := writeFile(t, "admin.token", admin)
	url := nenv.Server.ClientURL()

	type running struct {
		done chan error
		logs fmt.Stringer
	}
	start := func(name, parts string) running {
		aenv, _, logs := testEnv()
		r := running{done: make(chan error, 1), logs: logs}
		go func() {
			r.done <- runAuditor(ctx, aenv, []string{"--nats", url, "--chdb-path", chdbPath, "--clickhouse-database", fmt.Sprintf("cli_status_%d", dbSeq.Add(1)),
				"--state", t.TempDir(), "--batch-wait", "20ms", "--trust-anchor", nenv.Anchor.Public().String(), "--instance", name, "--partitions", parts})
		}()
		return r
	}
	instances := []running{start("aud-a", "0-3"), start("aud-b", "4-6")}
	// Usage of one holder: its partition's owner counts it.
	holderPart := events.UsagePartition("acme", "billing", events.DefaultUsagePartitions)
	for i := range 5 {
		e, _ := events.New("enforcer/edge-1", now.Add(time.Duration(i)*time.Second), &events.UsageDecided{TokenID: "tok-1", Tenant: "acme",
			Holder: "billing", Enforcer: "edge-1", Service: "invoices", SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices", Scope: "invoices:list",
			Decision: events.DecisionAllow, Reason: "ok"})
		b, _ := events.Encode(e)
		if _, err := nenv.JS.Publish(ctx, events.Subject(e), b); err != nil {
			t.Fatal(err)
		}
	}
	status := func(extra ...string) (auditor.Fleet, string, error) {
		env, out, _ := testEnv()
		err := runAuditorStatus(ctx, env, append([]string{"--nats", url, "--token-file", tf, "--wait", "1s"}, extra...))
		var f auditor.Fleet
		if err == nil || errors.Is(err, auditor.ErrFleet) {
			if jerr := json.Unmarshal(out.Bytes(), &f); len(extra) > 0 && jerr != nil {
				return f, out.String(), fmt.Errorf("output: %v\n%s", jerr, out.String())
			}
		}
		return f, out.String(), err
	}
	alive := func() {
		for _, r := range instances {
			select {
			case err := <-r.done:
				t.Fatalf("an auditor stopped: %v\n%s", err, r.logs)
			default:
			}
		}
	}
	// Every instance answers, every owned partition has checkpointed
	// (each does within its checkpoint interval) and the events are
	// counted where their holder's partition runs.
	natstest.WaitFor(t, 60*time.Second, func() error {
		alive()
		f, _, err := status("-o", "json")
		if err != nil && !errors.Is(err, auditor.ErrFleet) {
			return err
		}
		if len(f.Instances) != 2 {
			return fmt.Errorf("%d instances answered", len(f.Instances))
		}
		for _, p := range f.Partitions[:7] {
			if p.Checkpoint.IsZero() {
				return fmt.Errorf("partition %d has not checkpointed yet", p.Partition)
			}
		}
		if f.Partitions[holderPart].Events != 5 {
			return fmt.Errorf("partition %d: %d events", holderPart, f.Partitions[holderPart].Events)
		}
		return nil
	})
	f, _, err := status("-o", "json")
	if !errors.Is(err, auditor.ErrFleet) || !strings.Contains(err.Error(), "partitions without an owner: 7 ") {
		t.Fatalf("partition 7 unread: %v", err)
	}
	if f.PartitionCount != 8 {
		t.Fatalf("%d partitions", f.PartitionCount)
	}
	for _, p := range f.Partitions {
		want := "aud-a"
		switch {
		case p.Partition == 7:
			want = ""
		case p.Partition >= 4:
			want = "aud-b"
		}
		if strings.Join(p.Owners, ",") != want || (want == "") != (p.Problem != "") {
			t.Errorf("partition %d: owners %v (%q), want %q", p.Partition, p.Owners, p.Problem, want)
		}
	}
	_, text, err := status()
	if !errors.Is(err, auditor.ErrFleet) {
		t.Fatalf("text: %v", err)
	}
	for _, want := range []string{"USAGE partitions: 8; auditor instances answering: 2", "PARTITION  OWNER", "<- no owner: nothing reads this partition"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if line := lineOf(text, fmt.Sprintf("%d ", holderPart)); !strings.Contains(line, " 5 ") {
		t.Errorf("partition %d's line does not show its 5 events: %q", holderPart, line)
	}

	// A third instance takes partition 7: the fleet is whole.
	instances = append(instances, start("aud-c", "7"))
	natstest.WaitFor(t, 60*time.Second, func() error {
		alive()
		_, _, err := status("-o", "json")
		return err
	})
	_, text, err = status()
	if err != nil || strings.Contains(text, "<-") || !strings.Contains(lineOf(text, "7 "), "aud-c") {
		t.Fatalf("whole fleet: %v\n%s", err, text)
	}
	t.Logf("cordon auditor status:\n%s", text)

	// Mistakes are usage errors.
	for _, args := range [][]string{{"--wait", "0s"}, {"--wait", "2m"}, {"--wait", "5s", "--timeout", "5s"}, {"-o", "yaml"}, {"now"}} {
		env, _, _ := testEnv()
		if err := runAuditorStatus(ctx, env, append([]string{"--nats", url, "--token-file", tf}, args...)); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	cancel()
	for _, r := range instances {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("auditor: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("an auditor did not stop")
		}
	}
}

// TestAuditorStatusLeaseFleet: with --lease, more instances than
// partitions — here a stream of 2 partitions and 3 instances — leave one
// idle, which the status lists; every partition has one owner.
func TestAuditorStatusLeaseFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nenv := natstest.Run(t)
	// A deployment made with --usage-partitions 2 (the test server's
	// bootstrap made the default 8; nothing is stored yet).
	if err := nenv.JS.DeleteStream(ctx, events.StreamUsage); err != nil {
		t.Fatal(err)
	}
	if _, err := nenv.JS.CreateStream(ctx, events.Streams(events.StreamOptions{UsagePartitions: 2})[1]); err != nil {
		t.Fatal(err)
	}
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nenv.PublishKey(t, signer)
	now := time.Now()
	claims := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"},
		Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	admin, _ := signer.Mint(claims)
	recordIssued(t, nenv.JS, signer.KeyID, claims)
	tf := writeFile(t, "admin.token", admin)
	url := nenv.Server.ClientURL()

	var dones []chan error
	for _, name := range []string{"lease-a", "lease-b", "lease-c"} {
		aenv, _, _ := testEnv()
		done := make(chan error, 1)
		dones = append(dones, done)
		go func() {
			done <- runAuditor(ctx, aenv, []string{"--nats", url, "--chdb-path", chdbPath, "--clickhouse-database", fmt.Sprintf("cli_status_%d", dbSeq.Add(1)),
				"--state", t.TempDir(), "--batch-wait", "20ms", "--trust-anchor", nenv.Anchor.Public().String(), "--instance", name,
				"--lease", "--lease-ttl", "2s", "--usage-partitions", "2"})
		}()
	}
	var f auditor.Fleet
	natstest.WaitFor(t, 60*time.Second, func() error {
		for _, d := range dones {
			select {
			case err := <-d:
				t.Fatalf("an auditor stopped: %v", err)
			default:
			}
		}
		env, out, _ := testEnv()
		if err := runAuditorStatus(ctx, env, []string{"--nats", url, "--token-file", tf, "--wait", "1s", "-o", "json"}); err != nil {
			return err
		}
		f = auditor.Fleet{}
		if err := json.Unmarshal(out.Bytes(), &f); err != nil {
			return err
		}
		if len(f.Instances) != 3 || len(f.Idle) != 1 {
			return fmt.Errorf("%d instances, %d idle", len(f.Instances), len(f.Idle))
		}
		return nil
	})
	if f.PartitionCount != 2 || !f.Idle[0].Lease {
		t.Fatalf("fleet %+v", f)
	}
	owners := map[string]bool{f.Idle[0].Name: true}
	for _, p := range f.Partitions {
		if len(p.Owners) != 1 || owners[p.Owners[0]] {
			t.Fatalf("partition %d: owners %v (the idle one, or another partition's: %v)", p.Partition, p.Owners, owners)
		}
		owners[p.Owners[0]] = true
	}
	cancel()
	for _, d := range dones {
		select {
		case err := <-d:
			if err != nil {
				t.Errorf("auditor: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("an auditor did not stop")
		}
	}
}

// lineOf is the first line of text that starts with prefix.
func lineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
