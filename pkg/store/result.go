package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Column describes one result column.
type Column struct {
	// Name is the column name as ClickHouse reports it.
	Name string `json:"name"`
	// Type is the ClickHouse type, e.g. "DateTime64(6, 'UTC')".
	Type string `json:"type"`
}

// Result is the outcome of a query: columns and rows.
//
// Each cell holds one of these Go values, chosen from the column's
// ClickHouse type, identically on every backend:
//
//	NULL                                   nil
//	Bool                                   bool
//	Int8 … Int64                           int64
//	UInt8 … UInt64                         uint64
//	Float32, Float64                       float64 (nil for NaN/Inf)
//	Date, Date32 (UTC midnight)            time.Time
//	DateTime, DateTime64 (in UTC)          time.Time
//	Array(T), Tuple(…) without names       []any
//	Map(K, V), named Tuple(…)              map[string]any
//	anything else (String, UUID, Enum,     string
//	IPv4/6, Decimal, Int128/256, …)
//
// LowCardinality and Nullable wrappers take the type of what they wrap.
type Result struct {
	Columns []Column
	Rows    [][]any
}

// resultSettings are applied to every query so that the JSONCompact output
// decodes without guessing: times as Unix seconds, 64-bit integers as numbers.
var resultSettings = []Setting{
	{"date_time_output_format", "unix_timestamp"},
	{"output_format_json_quote_64bit_integers", 0},
	{"output_format_json_quote_denormals", 0},
	{"output_format_json_named_tuples_as_objects", 1},
}

// jsonCompact is ClickHouse's JSONCompact output.
type jsonCompact struct {
	Meta []Column          `json:"meta"`
	Data []json.RawMessage `json:"data"`
}

// DecodeJSONCompact decodes a backend's JSONCompact output into a Result.
// An empty input (a statement without a result) gives an empty Result.
func DecodeJSONCompact(b []byte) (*Result, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return &Result{}, nil
	}
	var raw jsonCompact
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	res := &Result{Columns: raw.Meta, Rows: make([][]any, 0, len(raw.Data))}
	for i, rowRaw := range raw.Data {
		dec := json.NewDecoder(bytes.NewReader(rowRaw))
		dec.UseNumber()
		var cells []any
		if err := dec.Decode(&cells); err != nil {
			return nil, fmt.Errorf("decode result row %d: %w", i, err)
		}
		if len(cells) != len(raw.Meta) {
			return nil, fmt.Errorf("decode result row %d: %d values for %d columns", i, len(cells), len(raw.Meta))
		}
		for j, c := range cells {
			v, err := convert(raw.Meta[j].Type, c)
			if err != nil {
				return nil, fmt.Errorf("decode result row %d column %s: %w", i, raw.Meta[j].Name, err)
			}
			cells[j] = v
		}
		res.Rows = append(res.Rows, cells)
	}
	return res, nil
}

// SplitType splits a ClickHouse type "Name(args)" into Name and its
// top-level arguments.
func SplitType(t string) (string, []string) {
	t = strings.TrimSpace(t)
	open := strings.IndexByte(t, '(')
	if open < 0 || !strings.HasSuffix(t, ")") {
		return t, nil
	}
	name, inner := t[:open], t[open+1:len(t)-1]
	var args []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '`' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			args = append(args, strings.TrimSpace(inner[start:i]))
			start = i + 1
		}
	}
	return name, append(args, strings.TrimSpace(inner[start:]))
}

// BaseType strips LowCardinality and Nullable wrappers from a ClickHouse type.
func BaseType(t string) string {
	for {
		name, args := SplitType(t)
		if (name == "LowCardinality" || name == "Nullable") && len(args) == 1 {
			t = args[0]
			continue
		}
		return t
	}
}

// convert turns one decoded JSON value into the Go value documented on
// Result, guided by the ClickHouse type.
func convert(typ string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	typ = BaseType(typ)
	name, args := SplitType(typ)
	switch name {
	case "Bool":
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case "Int8", "Int16", "Int32", "Int64":
		return strconv.ParseInt(numberText(v), 10, 64)
	case "UInt8", "UInt16", "UInt32", "UInt64":
		return strconv.ParseUint(numberText(v), 10, 64)
	case "Float32", "Float64", "BFloat16":
		s := numberText(v)
		switch strings.ToLower(s) {
		case "nan", "-nan", "inf", "+inf", "-inf":
			return nil, nil
		}
		return strconv.ParseFloat(s, 64)
	case "Decimal", "Decimal32", "Decimal64", "Decimal128", "Decimal256":
		return numberText(v), nil
	case "Date", "Date32":
		t, err := time.Parse("2006-01-02", numberText(v))
		if err != nil {
			return nil, fmt.Errorf("%s value %v: %w", typ, v, err)
		}
		return t, nil
	case "DateTime", "DateTime64":
		return parseUnixTime(numberText(v))
	case "Array":
		a, ok := v.([]any)
		if !ok || len(args) != 1 {
			break
		}
		out := make([]any, len(a))
		for i, e := range a {
			c, err := convert(args[0], e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case "Map":
		m, ok := v.(map[string]any)
		if !ok || len(args) != 2 {
			break
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			c, err := convert(args[1], e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case "Tuple":
		return convertTuple(args, v)
	}
	return generic(v), nil
}

// convertTuple converts an unnamed tuple (a JSON array) or a named one (a
// JSON object).
func convertTuple(args []string, v any) (any, error) {
	switch t := v.(type) {
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			elemType := ""
			if i < len(args) {
				elemType = args[i]
			}
			c, err := convert(elemType, e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		types := make(map[string]string, len(args))
		for _, a := range args {
			if n, t, ok := strings.Cut(a, " "); ok {
				types[strings.Trim(n, "`\"")] = t
			}
		}
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := convert(types[k], e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	}
	return generic(v), nil
}

// generic converts a value of an unknown or textual type: strings stay
// strings, numbers become int64, uint64 or float64, containers recurse.
func generic(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(t.String(), 10, 64); err == nil {
			return u
		}
		if f, err := t.Float64(); err == nil {
			return f
		}
		return t.String()
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = generic(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = generic(e)
		}
		return out
	}
	return v
}

// numberText returns a JSON number or string as text.
func numberText(v any) string {
	switch t := v.(type) {
	case json.Number:
		return t.String()
	case string:
		return t
	}
	return fmt.Sprint(v)
}

// parseUnixTime parses "seconds[.fraction]" exactly.
func parseUnixTime(s string) (time.Time, error) {
	neg := strings.HasPrefix(s, "-")
	secText, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	sec, err := strconv.ParseInt(secText, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", s, err)
	}
	var nsec int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		frac += strings.Repeat("0", 9-len(frac))
		if nsec, err = strconv.ParseInt(frac, 10, 64); err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
	}
	if neg {
		sec, nsec = -sec, -nsec
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// Helpers for reading the documented cell types.

func asString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	}
	return fmt.Sprint(v)
}

func asUint(v any) uint64 {
	switch t := v.(type) {
	case uint64:
		return t
	case int64:
		if t > 0 {
			return uint64(t)
		}
	case float64:
		if t > 0 {
			return uint64(t)
		}
	case string:
		if n, ok := new(big.Int).SetString(t, 10); ok && n.IsUint64() {
			return n.Uint64()
		}
	}
	return 0
}

func asInt(v any) int64 {
	switch t := v.(type) {
	case int64:
		return t
	case uint64:
		return int64(t)
	case float64:
		return int64(t)
	}
	return 0
}

func asFloat(v any) float64 {
	switch t := v.(type) {
	case float64:
		return t
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	}
	return 0
}

func asTime(v any) time.Time {
	if t, ok := v.(time.Time); ok {
		return t
	}
	return time.Time{}
}

func asStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, e := range a {
		out = append(out, asString(e))
	}
	return out
}

func asStringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		out[k] = asString(e)
	}
	return out
}
