package enforce

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/pkg/yamlnode"
)

// Routes is a service's routes file: who the service is and which scope
// each of its routes requires.
//
//	service: invoices
//	environment: prod
//	routes:
//	  - method: GET
//	    path: /invoices/{id}
//	    scope: invoices:read
//
// Paths are Go http.ServeMux patterns ("/invoices/{id}", "/files/{path...}",
// "/{$}"); method "*" matches every method. A request that matches no
// route is denied with ReasonNoRoute.
type Routes struct {
	// Service is the enforcer's audience name; Environment its environment.
	Service     string
	Environment string
	Routes      []Route
	// File names where the routes were read from, for messages.
	File string
}

// Route requires Scope for Method and Path.
type Route struct {
	Method string
	Path   string
	Scope  string
	// Line is the route's line in its file (0 when built in code).
	Line int
}

// Pattern is the ServeMux pattern of the route.
func (r Route) Pattern() string {
	if r.Method == "*" {
		return r.Path
	}
	return r.Method + " " + r.Path
}

// LoadRoutes reads and validates a routes file.
func LoadRoutes(path string) (*Routes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load routes: %w", err)
	}
	return ParseRoutes(path, b)
}

// ParseRoutes decodes and validates a routes file; name is used in error
// messages, which name the file, the line and the field.
func ParseRoutes(name string, data []byte) (*Routes, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: empty routes file", ErrConfig, name)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: want a single YAML document", ErrConfig, name)
	}
	rs := &Routes{File: name}
	p := parser{yamlnode.Decoder{File: name, Err: ErrConfig}}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "", "want a mapping with service, environment and routes")
	}
	var sawRoutes bool
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "service":
			if err := p.scalar(v, "service", &rs.Service); err != nil {
				return nil, err
			}
			if err := events.ValidateName(rs.Service); err != nil {
				return nil, p.errf(v, "service", "%v", err)
			}
		case "environment":
			if err := p.scalar(v, "environment", &rs.Environment); err != nil {
				return nil, err
			}
		case "routes":
			sawRoutes = true
			if v.Kind != yaml.SequenceNode {
				return nil, p.errf(v, "routes", "want a list of {method, path, scope}")
			}
			for _, rn := range v.Content {
				r, err := p.route(rn)
				if err != nil {
					return nil, err
				}
				rs.Routes = append(rs.Routes, r)
			}
		default:
			return nil, p.errf(k, k.Value, "unknown field (want service, environment, routes)")
		}
	}
	switch {
	case rs.Service == "":
		return nil, p.errf(root, "service", "is required")
	case !sawRoutes || len(rs.Routes) == 0:
		return nil, p.errf(root, "routes", "at least one route is required")
	}
	if _, err := compileRoutes(rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// parser decodes the nodes of a routes file.
type parser struct{ yamlnode.Decoder }

// errf returns an error wrapping ErrConfig that names the file, the line of
// n and field: "invalid enforcer configuration: file:line: field: msg".
func (p parser) errf(n *yaml.Node, field, format string, args ...any) error {
	return fmt.Errorf("%v: %w", ErrConfig, p.Errorf(n, field, format, args...))
}

func (p parser) scalar(n *yaml.Node, field string, dst *string) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return p.errf(n, field, "want a string")
	}
	*dst = strings.TrimSpace(n.Value)
	return nil
}

// methods are the HTTP methods a route may name ("*" is any).
var methods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true, "*": true,
}

func (p parser) route(n *yaml.Node) (Route, error) {
	r := Route{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return r, p.errf(n, "routes", "want {method, path, scope}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "method":
			if err = p.scalar(v, "method", &r.Method); err == nil {
				r.Method = strings.ToUpper(r.Method)
				if !methods[r.Method] {
					err = p.errf(v, "method", "%q is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, *", v.Value)
				}
			}
		case "path":
			if err = p.scalar(v, "path", &r.Path); err == nil {
				if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \t") {
					err = p.errf(v, "path", "%q must start with / and contain no spaces", v.Value)
				}
			}
		case "scope":
			if err = p.scalar(v, "scope", &r.Scope); err == nil {
				if e := token.ValidateScope(r.Scope); e != nil {
					err = p.errf(v, "scope", "%q: %v", v.Value, e)
				}
			}
		default:
			err = p.errf(k, k.Value, "unknown field (want method, path, scope)")
		}
		if err != nil {
			return r, err
		}
	}
	for _, f := range []struct{ name, v string }{{"method", r.Method}, {"path", r.Path}, {"scope", r.Scope}} {
		if f.v == "" {
			return r, p.errf(n, f.name, "is required")
		}
	}
	return r, nil
}

// compiledRoutes matches requests to routes with an http.ServeMux.
type compiledRoutes struct {
	mux *http.ServeMux
}

// routeHandler is the value the mux returns for a route; it is never
// served. segs describes the pattern's path for resource extraction.
type routeHandler struct {
	Route
	segs []paramSeg
	// params is how many segments name a parameter.
	params int
}

// paramSeg is one '/'-separated segment of a route's path pattern.
type paramSeg uint8

const (
	segLiteral paramSeg = iota // a literal segment, or "{$}"
	segParam                   // "{name}": one segment's value
	segRest                    // "{name...}": the rest of the path
)

// newRouteHandler splits the route's path pattern into segments. ServeMux
// accepts a wildcard only as a whole segment and "{name...}" only last.
func newRouteHandler(r Route) *routeHandler {
	h := &routeHandler{Route: r}
	for _, seg := range strings.Split(strings.TrimPrefix(r.Path, "/"), "/") {
		k := segLiteral
		if name, ok := strings.CutPrefix(seg, "{"); ok && strings.HasSuffix(name, "}") && name != "$}" {
			k = segParam
			if strings.HasSuffix(name, "...}") {
				k = segRest
			}
			h.params++
		}
		h.segs = append(h.segs, k)
	}
	return h
}

// resource returns the values of the route's path parameters in path,
// the canonical path the route matched (see canonicalizePath): in pattern
// order, each cut to events.MaxResourcePart bytes, joined by "/" and cut
// to events.MaxResourceLen bytes. A value holding a Cordon token prefix is
// replaced by redactedValue. A route with one parameter (the common case)
// costs no allocation: the value is a slice of path.
func (h *routeHandler) resource(path string) string {
	if h.params == 0 {
		return ""
	}
	rest := strings.TrimPrefix(path, "/")
	var b strings.Builder
	n := 0
	for _, k := range h.segs {
		var v string
		switch k {
		case segRest:
			v, rest = rest, ""
		default:
			v, rest, _ = strings.Cut(rest, "/")
		}
		if k == segLiteral {
			continue
		}
		v = resourcePart(v)
		if h.params == 1 {
			return v
		}
		if n++; n == 1 {
			b.Grow(min(len(path), events.MaxResourceLen+events.MaxResourcePart))
		} else {
			b.WriteByte('/')
		}
		b.WriteString(v)
		if b.Len() >= events.MaxResourceLen {
			break
		}
	}
	return clip(b.String(), events.MaxResourceLen)
}

// redactedValue stands for a path parameter value that may hold a token.
const redactedValue = "[token]"

// resourcePart bounds one parameter value for the usage event.
func resourcePart(v string) string {
	if strings.Contains(v, token.Prefix) {
		return redactedValue
	}
	return clip(v, events.MaxResourcePart)
}

// ServeHTTP is never called: the mux only finds the route.
func (*routeHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

func compileRoutes(rs *Routes) (*compiledRoutes, error) {
	c := &compiledRoutes{mux: http.NewServeMux()}
	seen := map[string]int{}
	for _, r := range rs.Routes {
		err := c.check(r)
		if err == nil {
			err = c.add(r)
		}
		if err != nil {
			where := rs.File
			if where == "" {
				where = "routes"
			}
			msg := err.Error()
			if line, ok := seen[r.Pattern()]; ok {
				msg = fmt.Sprintf("duplicate of the route on line %d", line)
			}
			return nil, fmt.Errorf("%w: %s:%d: route %q: %s", ErrConfig, where, r.Line, r.Pattern(), msg)
		}
		seen[r.Pattern()] = r.Line
	}
	return c, nil
}

// check validates a route built in code as ParseRoutes does.
func (c *compiledRoutes) check(r Route) error {
	if !methods[r.Method] {
		return fmt.Errorf("method %q is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, *", r.Method)
	}
	if !strings.HasPrefix(r.Path, "/") {
		return fmt.Errorf("path %q must start with /", r.Path)
	}
	if err := token.ValidateScope(r.Scope); err != nil {
		return fmt.Errorf("scope %q: %v", r.Scope, err)
	}
	return nil
}

// add registers one route; ServeMux panics on an invalid or conflicting
// pattern, which becomes an error.
func (c *compiledRoutes) add(r Route) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	c.mux.Handle(r.Pattern(), newRouteHandler(r))
	return nil
}

// match returns the route of a request, nil when none matches (including a
// path that would need cleaning or a method the route does not allow).
func (c *compiledRoutes) match(r *http.Request) *routeHandler {
	if c == nil {
		return nil
	}
	h, _ := c.mux.Handler(r)
	if rh, ok := h.(*routeHandler); ok {
		return rh
	}
	return nil
}
