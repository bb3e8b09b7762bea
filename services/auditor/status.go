package auditor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// DefaultStatusWait is how long Client.StatusAll gathers the instances'
// replies by default (`cordon auditor status --wait`).
const DefaultStatusWait = 2 * time.Second

// StatusAll asks every running auditor instance for its status (each
// answers SubjectCmdStatus, no queue group) and gathers the replies for
// wait, or until ctx ends; they come back sorted by instance name. It
// returns ErrNoAuditor when none answered, and the refusal of the first
// instance that refused the token when none accepted it. A reply that
// does not decode is an error: it names the instance's subject only.
func (c *Client) StatusAll(ctx context.Context, wait time.Duration) ([]StatusReply, error) {
	if wait <= 0 {
		wait = DefaultStatusWait
	}
	body, err := json.Marshal(StatusRequest{Auth: c.Token})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", SubjectCmdStatus, err)
	}
	// The inbox is under the connection's own prefix: a credential may
	// only receive on its private inbox (natsauth).
	inbox := c.NC.NewInbox()
	sub, err := c.NC.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("%s: subscribe to the replies: %w", SubjectCmdStatus, err)
	}
	defer sub.Unsubscribe()
	if err := c.NC.PublishRequest(SubjectCmdStatus, inbox, body); err != nil {
		return nil, fmt.Errorf("%s: %w", SubjectCmdStatus, err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		out     []StatusReply
		refused error
	)
	for {
		m, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", SubjectCmdStatus, ctx.Err())
			}
			break // the wait is over
		}
		if m.Header.Get("Status") == "503" {
			// No responders: nobody subscribes to the status subject.
			break
		}
		var rep StatusReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			return nil, fmt.Errorf("%s: malformed reply: %w", SubjectCmdStatus, err)
		}
		if !rep.OK {
			if refused == nil {
				refused = &ReplyError{Subject: SubjectCmdStatus, Code: rep.Code, Message: rep.Error}
			}
			continue
		}
		out = append(out, rep)
	}
	switch {
	case len(out) == 0 && refused != nil:
		return nil, refused
	case len(out) == 0:
		return nil, fmt.Errorf("%w on %s within %v: is `cordon up` (or `cordon auditor`) running and connected to this NATS server?", ErrNoAuditor, SubjectCmdStatus, wait)
	}
	slices.SortFunc(out, func(a, b StatusReply) int { return strings.Compare(a.Instance.Name, b.Instance.Name) })
	return out, nil
}

// Fleet is the status of a fleet of auditor instances by USAGE partition:
// what `cordon auditor status` prints.
type Fleet struct {
	// PartitionCount is the USAGE stream's partition count.
	PartitionCount int `json:"partition_count"`
	// Partitions has one entry per partition, in order.
	Partitions []FleetPartition `json:"partitions"`
	// Idle names the instances that answered and run no partition.
	Idle []InstanceInfo `json:"idle,omitempty"`
	// Instances are the replies, by instance name.
	Instances []StatusReply `json:"instances"`
}

// FleetPartition is one partition of a Fleet.
type FleetPartition struct {
	Partition int `json:"partition"`
	// Owners names the instances that run it: one normally; none (it is
	// not read: Problem says so) or more than one (a static list given
	// twice, or a hand-off caught midway) are flagged.
	Owners []string `json:"owners"`
	// Lag, Events and Checkpoint are its owner's (the first one's): its
	// messages not yet delivered, the events analysed since the owner took
	// it, and when it last saved its checkpoint (zero: not yet, in that
	// process).
	Lag        uint64    `json:"lag"`
	Events     uint64    `json:"events"`
	Checkpoint time.Time `json:"checkpoint,omitzero"`
	// Problem is empty for a partition with one owner.
	Problem string `json:"problem,omitempty"`
}

// ErrFleet marks a fleet whose partitions do not have one owner each.
var ErrFleet = errors.New("auditor partitions without exactly one owner")

// NewFleet arranges the replies of StatusAll by partition. parts is the
// USAGE stream's partition count when known (0: the largest the replies
// report, or one past the highest partition they run).
func NewFleet(replies []StatusReply, parts int) Fleet {
	for _, r := range replies {
		parts = max(parts, r.Stats.PartitionCount)
		for _, p := range r.Stats.Partitions {
			parts = max(parts, p.Partition+1)
		}
	}
	f := Fleet{PartitionCount: parts, Partitions: make([]FleetPartition, parts), Instances: replies}
	for i := range f.Partitions {
		f.Partitions[i] = FleetPartition{Partition: i, Owners: []string{}}
	}
	for _, r := range replies {
		if len(r.Stats.Partitions) == 0 {
			f.Idle = append(f.Idle, r.Instance)
			continue
		}
		for _, ps := range r.Stats.Partitions {
			fp := &f.Partitions[ps.Partition]
			if len(fp.Owners) == 0 {
				fp.Lag, fp.Events, fp.Checkpoint = ps.Lag, ps.Events, r.Checkpoints[ps.Partition]
			}
			fp.Owners = append(fp.Owners, instanceName(r.Instance))
		}
	}
	for i := range f.Partitions {
		switch fp := &f.Partitions[i]; {
		case len(fp.Owners) == 0:
			fp.Problem = "no owner: nothing reads this partition"
		case len(fp.Owners) > 1:
			fp.Problem = fmt.Sprintf("%d owners", len(fp.Owners))
		}
	}
	return f
}

// Err is nil when every partition has exactly one owner, else an error
// (ErrFleet) that lists the partitions that do not.
func (f Fleet) Err() error {
	var none, many []string
	for _, p := range f.Partitions {
		switch {
		case len(p.Owners) == 0:
			none = append(none, fmt.Sprint(p.Partition))
		case len(p.Owners) > 1:
			many = append(many, fmt.Sprint(p.Partition))
		}
	}
	var say []string
	if len(none) > 0 {
		say = append(say, fmt.Sprintf("partitions without an owner: %s (start an auditor for them, or wait for the leases to be taken over)", strings.Join(none, ", ")))
	}
	if len(many) > 0 {
		say = append(say, fmt.Sprintf("partitions run by more than one instance: %s (static --partitions lists must not overlap)", strings.Join(many, ", ")))
	}
	if len(say) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrFleet, strings.Join(say, "; "))
}

// instanceName is how status output names an instance: its name, else its
// source.
func instanceName(i InstanceInfo) string {
	if i.Name != "" {
		return i.Name
	}
	if i.Source != "" {
		return i.Source
	}
	return "(unnamed)"
}

// WriteText writes the fleet as a table: one line per partition with its
// owner, lag, events and last checkpoint (its age at now), a flag on the
// partitions without exactly one owner, then the instances that run none.
func (f Fleet) WriteText(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "USAGE partitions: %d; auditor instances answering: %d\n", f.PartitionCount, len(f.Instances))
	fmt.Fprintln(tw, "PARTITION\tOWNER\tLAG\tEVENTS\tLAST CHECKPOINT\t")
	for _, p := range f.Partitions {
		owner, lag, evs, ckpt := "-", "-", "-", "-"
		if len(p.Owners) > 0 {
			owner, lag, evs, ckpt = strings.Join(p.Owners, ","), fmt.Sprint(p.Lag), fmt.Sprint(p.Events), "not yet"
			if !p.Checkpoint.IsZero() {
				ckpt = fmt.Sprintf("%s (%s ago)", p.Checkpoint.UTC().Format(time.RFC3339), now.Sub(p.Checkpoint).Round(time.Second))
			}
		}
		flag := ""
		if p.Problem != "" {
			flag = "<- " + p.Problem
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", p.Partition, owner, lag, evs, ckpt, flag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Idle) > 0 {
		names := make([]string, len(f.Idle))
		for i, in := range f.Idle {
			names[i] = instanceName(in)
		}
		if _, err := fmt.Fprintf(w, "instances without a partition: %s\n", strings.Join(names, ", ")); err != nil {
			return err
		}
	}
	return nil
}
