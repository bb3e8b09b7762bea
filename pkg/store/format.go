package store

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Output formats of Result.Write.
const (
	FormatTable = "table"
	FormatCSV   = "csv"
	FormatJSON  = "json"
)

// Write writes the result in format: FormatTable, FormatCSV or FormatJSON.
func (r *Result) Write(w io.Writer, format string) error {
	switch format {
	case FormatTable, "":
		return r.WriteTable(w)
	case FormatCSV:
		return r.WriteCSV(w)
	case FormatJSON:
		return r.WriteJSON(w)
	}
	return fmt.Errorf("unknown output format %q: use table, csv or json", format)
}

// WriteTable writes the result as an aligned text table with a header line,
// then a "(N rows)" line. NULL cells read NULL.
func (r *Result) WriteTable(w io.Writer) error {
	cells := make([][]string, len(r.Rows)+1)
	widths := make([]int, len(r.Columns))
	cells[0] = make([]string, len(r.Columns))
	for i, c := range r.Columns {
		cells[0][i] = c.Name
		widths[i] = utf8.RuneCountInString(c.Name)
	}
	for i, row := range r.Rows {
		cells[i+1] = make([]string, len(r.Columns))
		for j := range r.Columns {
			s := "NULL"
			if j < len(row) && row[j] != nil {
				s = strings.NewReplacer("\n", `\n`, "\t", `\t`).Replace(FormatValue(r.Columns[j].Type, row[j]))
			}
			cells[i+1][j] = s
			widths[j] = max(widths[j], utf8.RuneCountInString(s))
		}
	}
	var b strings.Builder
	for i, line := range cells {
		for j, s := range line {
			if j > 0 {
				b.WriteString("  ")
			}
			b.WriteString(s)
			if j < len(line)-1 {
				b.WriteString(strings.Repeat(" ", widths[j]-utf8.RuneCountInString(s)))
			}
		}
		b.WriteByte('\n')
		if i == 0 {
			for j, wd := range widths {
				if j > 0 {
					b.WriteString("  ")
				}
				b.WriteString(strings.Repeat("-", wd))
			}
			b.WriteByte('\n')
		}
	}
	if len(r.Rows) == 1 {
		b.WriteString("(1 row)\n")
	} else {
		fmt.Fprintf(&b, "(%d rows)\n", len(r.Rows))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteCSV writes the result as RFC 4180 CSV with a header line. NULL cells
// are empty.
func (r *Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := make([]string, len(r.Columns))
	for i, c := range r.Columns {
		header[i] = c.Name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	rec := make([]string, len(r.Columns))
	for _, row := range r.Rows {
		for j := range r.Columns {
			rec[j] = ""
			if j < len(row) && row[j] != nil {
				rec[j] = FormatValue(r.Columns[j].Type, row[j])
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the result as one JSON object:
//
//	{"columns":[{"name":…,"type":…},…],"rows":[[…],…]}
//
// Numbers are JSON numbers, times RFC 3339 strings in UTC, NULL null.
func (r *Result) WriteJSON(w io.Writer) error {
	rows := r.Rows
	if rows == nil {
		rows = [][]any{}
	}
	cols := r.Columns
	if cols == nil {
		cols = []Column{}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		Columns []Column `json:"columns"`
		Rows    [][]any  `json:"rows"`
	}{cols, rows})
}

// FormatValue renders one cell as text for a column of ClickHouse type typ,
// the way ClickHouse prints it: dates as 2006-01-02, times in UTC with the
// column's precision, containers as JSON.
func FormatValue(typ string, v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool:
		return strconv.FormatBool(t)
	case int64:
		return strconv.FormatInt(t, 10)
	case uint64:
		return strconv.FormatUint(t, 10)
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64)
	case time.Time:
		return formatTimeValue(typ, t)
	case []any, map[string]any:
		return formatContainer(v)
	}
	return fmt.Sprint(v)
}

func formatTimeValue(typ string, t time.Time) string {
	t = t.UTC()
	name, args := SplitType(BaseType(typ))
	switch name {
	case "Date", "Date32":
		return t.Format("2006-01-02")
	case "DateTime":
		return t.Format("2006-01-02 15:04:05")
	case "DateTime64":
		p := 3
		if len(args) > 0 {
			if n, err := strconv.Atoi(args[0]); err == nil && n >= 0 && n <= 9 {
				p = n
			}
		}
		if p == 0 {
			return t.Format("2006-01-02 15:04:05")
		}
		return t.Format("2006-01-02 15:04:05." + strings.Repeat("0", p))
	}
	return t.Format(time.RFC3339Nano)
}

// formatContainer renders arrays, tuples and maps as JSON with sorted keys.
func formatContainer(v any) string {
	var b strings.Builder
	writeContainer(&b, v)
	return b.String()
}

func writeContainer(b *strings.Builder, v any) {
	switch t := v.(type) {
	case []any:
		b.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				b.WriteByte(',')
			}
			writeContainer(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(jsonString(k))
			b.WriteByte(':')
			writeContainer(b, t[k])
		}
		b.WriteByte('}')
	case nil:
		b.WriteString("null")
	case string:
		b.WriteString(jsonString(t))
	case time.Time:
		b.WriteString(jsonString(t.UTC().Format(time.RFC3339Nano)))
	default:
		b.WriteString(FormatValue("", t))
	}
}
