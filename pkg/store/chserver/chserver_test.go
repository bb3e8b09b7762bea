package chserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr string
		wantTLS bool
	}{
		{"plain", Options{}, "", false},
		{"tls with system roots", Options{TLS: true, ServerName: "ch.example"}, "", true},
		{"CA file without TLS", Options{CAFile: notPEM}, "TLS is off", false},
		{"missing CA file", Options{TLS: true, CAFile: filepath.Join(dir, "absent.pem")}, "read CA file", false},
		{"CA file without a certificate", Options{TLS: true, CAFile: notPEM}, "no PEM certificate", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := tlsConfig(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (conf != nil) != tc.wantTLS {
				t.Fatalf("tls config = %v, want TLS %v", conf, tc.wantTLS)
			}
			if conf != nil && conf.ServerName != tc.opts.ServerName {
				t.Errorf("server name = %q", conf.ServerName)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	base := errors.New("auth failed for password hunter2-xyz at host")
	err := redact(fmt.Errorf("wrapped: %w", base), "hunter2-xyz")
	if strings.Contains(err.Error(), "hunter2-xyz") || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("redacted error = %q", err)
	}
	if !errors.Is(err, base) {
		t.Error("redaction broke the error chain")
	}
	if got := redact(base, ""); got != base {
		t.Error("empty password changed the error")
	}
}

// TestOpenErrorHasNoPassword opens against a port nobody listens on.
func TestOpenErrorHasNoPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	const password = "pa55-word-never-shown"
	_, err = Open(t.Context(), Options{Addr: addr, User: "cordon", Password: password, DialTimeout: 2 * time.Second, QueryTimeout: 5 * time.Second})
	if err == nil {
		t.Fatal("open against a closed port succeeded")
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error does not name the address: %v", err)
	}
}

func TestOpenRejectsBadDatabase(t *testing.T) {
	if _, err := Open(t.Context(), Options{Database: "no-dashes"}); err == nil || !strings.Contains(err.Error(), "invalid database name") {
		t.Errorf("err = %v", err)
	}
}

func TestAnalystOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"password without user", Options{AnalystPassword: "x"}, "analyst password is set without an analyst user"},
		{"same user as the writer", Options{User: "cordon", AnalystUser: "cordon"}, "separate, read-only user"},
		{"white space", Options{AnalystUser: "ro user"}, "white space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Database = "cordon"
			if err := tc.o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate(%+v) = %v, want %q", tc.o, err, tc.want)
			}
			if _, err := Open(t.Context(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%+v) = %v, want %q", tc.o, err, tc.want)
			}
		})
	}
	if err := (Options{Database: "cordon", User: "cordon", AnalystUser: "cordon_analyst", AnalystPassword: "p"}).validate(); err != nil {
		t.Errorf("a separate analyst user: %v", err)
	}
}

// TestOpenErrorHasNoAnalystPassword: neither password shows in an error.
func TestOpenErrorHasNoAnalystPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = Open(t.Context(), Options{Addr: addr, User: "cordon", Password: "writer-pass-1234", AnalystUser: "ro",
		AnalystPassword: "analyst-pass-5678", DialTimeout: 2 * time.Second, QueryTimeout: 5 * time.Second})
	if err == nil {
		t.Fatal("open against a closed port succeeded")
	}
	for _, p := range []string{"writer-pass-1234", "analyst-pass-5678"} {
		if strings.Contains(err.Error(), p) {
			t.Errorf("error shows a password: %v", err)
		}
	}
	red := redact(errors.New("a writer-pass-1234 b analyst-pass-5678"), "writer-pass-1234", "analyst-pass-5678", "")
	if strings.Contains(red.Error(), "pass") {
		t.Errorf("redact kept a password: %v", red)
	}
}
