package simulate

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// scalarParser is a type read from one YAML scalar ("2m-6m", "07:00-21:00").
type scalarParser interface {
	parseScalar(string) error
}

var (
	timeType     = reflect.TypeFor[time.Time]()
	durationType = reflect.TypeFor[time.Duration]()
	parserType   = reflect.TypeFor[scalarParser]()
)

// decoder reads a scenario file strictly into Go values by their yaml
// tags: unknown and repeated keys, values of the wrong kind and
// unparseable scalars are errors naming the file, line and field. A struct
// field named Line (tagged yaml:"-") receives the line of its mapping, so
// that Validate can name it.
type decoder struct {
	yamlnode.Decoder
}

func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) error {
	n = yamlnode.Resolve(n)
	if v.CanAddr() && v.Addr().Type().Implements(parserType) {
		s, err := d.scalar(n, path)
		if err != nil {
			return err
		}
		if err := v.Addr().Interface().(scalarParser).parseScalar(s); err != nil {
			return d.Errorf(n, path, "%v", err)
		}
		return nil
	}
	switch v.Type() {
	case timeType:
		s, err := d.Str(n, path)
		if err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return d.Errorf(n, path, "%q is not an RFC 3339 time (such as 2026-10-19T00:00:00Z)", s)
		}
		v.Set(reflect.ValueOf(t))
		return nil
	case durationType:
		s, err := d.scalar(n, path)
		if err != nil {
			return err
		}
		dur, err := parseDuration(s)
		if err != nil {
			return d.Errorf(n, path, "%v", err)
		}
		v.SetInt(int64(dur))
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.structure(n, path, v)
	case reflect.Slice:
		if yamlnode.IsNull(n) {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return d.Errorf(n, path, "want a list, got %s", yamlnode.Describe(n))
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, fmt.Sprintf("%s[%d]", path, i), out.Index(i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case reflect.String:
		s, err := d.Str(n, path)
		if err != nil {
			return err
		}
		v.SetString(s)
		return nil
	case reflect.Bool:
		b, err := d.Bool(n, path)
		if err != nil {
			return err
		}
		v.SetBool(b)
		return nil
	case reflect.Int, reflect.Int64:
		s, err := d.number(n, path)
		if err != nil {
			return err
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil || i < 0 || i > math.MaxInt32 {
			return d.Errorf(n, path, "want a whole number between 0 and %d, got %s", math.MaxInt32, yamlnode.Describe(n))
		}
		v.SetInt(i)
		return nil
	case reflect.Uint64:
		s, err := d.number(n, path)
		if err != nil {
			return err
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil {
			return d.Errorf(n, path, "want a whole number, got %s", yamlnode.Describe(n))
		}
		v.SetUint(u)
		return nil
	case reflect.Float64:
		s, err := d.number(n, path)
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return d.Errorf(n, path, "want a number, got %s", yamlnode.Describe(n))
		}
		v.SetFloat(f)
		return nil
	}
	return d.Errorf(n, path, "cannot decode into %s", v.Type())
}

// structure decodes a mapping into a struct by its fields' yaml tags.
func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) error {
	t := v.Type()
	var names []string
	index := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	fields, err := d.Mapping(n, path, names)
	if err != nil {
		return err
	}
	if f, ok := t.FieldByName("Line"); ok && f.Type.Kind() == reflect.Int && f.Tag.Get("yaml") == "-" {
		v.FieldByIndex(f.Index).SetInt(int64(n.Line))
	}
	for _, name := range names { // in declaration order: errors come in a stable order
		fv, ok := fields[name]
		if !ok {
			continue
		}
		sub := name
		if path != "" {
			sub = path + "." + name
		}
		if err := d.decode(fv.Val, sub, v.Field(index[name])); err != nil {
			return err
		}
	}
	return nil
}

// scalar returns the text of a scalar that may be written as a number or a
// string ("4", 4, "2m-6m").
func (d *decoder) scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || yamlnode.IsNull(n) || n.ShortTag() == "!!bool" {
		return "", d.Errorf(n, path, "want a value such as 4, 2m-6m or 07:00-21:00, got %s", yamlnode.Describe(n))
	}
	return n.Value, nil
}

// number returns the text of a YAML number.
func (d *decoder) number(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return "", d.Errorf(n, path, "want a number, got %s", yamlnode.Describe(n))
	}
	return n.Value, nil
}
