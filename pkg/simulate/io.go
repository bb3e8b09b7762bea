package simulate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/cordonhq/cordon/pkg/events"
)

// WriteJSONL writes the events, one encoded envelope per line: the format
// `cordon replay` reads.
func (d *Dataset) WriteJSONL(w io.Writer) error {
	return WriteJSONL(w, d.Events)
}

// WriteJSONL writes envelopes one per line, validated by events.Encode.
func WriteJSONL(w io.Writer, envs []events.Envelope) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	for i := range envs {
		b, err := events.Encode(envs[i])
		if err != nil {
			return fmt.Errorf("event %d: %w", i+1, err)
		}
		bw.Write(b)
		if err := bw.WriteByte('\n'); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	return nil
}

// ReadJSONL reads envelopes written by WriteJSONL, strictly decoded; an
// error names the line.
func ReadJSONL(r io.Reader) ([]events.Envelope, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	var out []events.Envelope
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		env, err := events.Decode(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, env)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// Labels is the labels file: the scenario, its attacks and where its
// benign variants apply — what Score needs besides the anomalies.
type Labels struct {
	Scenario        Scenario       `json:"scenario"`
	Attacks         []Attack       `json:"attacks"`
	Exposures       []Exposure     `json:"exposures"`
	TokenDays       map[string]int `json:"token_days"`
	BenignTokenDays int            `json:"benign_token_days"`
	AttackVariants  []string       `json:"attack_variants"`
	BenignVariants  []string       `json:"benign_variants"`
}

// WriteLabels writes the labels as indented JSON.
func (d *Dataset) WriteLabels(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d.Labels()); err != nil {
		return fmt.Errorf("write labels: %w", err)
	}
	return nil
}

// ReadLabels reads a labels file written by WriteLabels.
func ReadLabels(r io.Reader) (Labels, error) {
	var l Labels
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Labels{}, fmt.Errorf("read labels: %w", err)
	}
	return l, nil
}
