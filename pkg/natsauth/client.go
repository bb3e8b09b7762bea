package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ConnectOption authenticates a client connection with the credentials in
// file, which is either an NKey seed file written by Generate (DIR/<role>.nk)
// or a standard NATS .creds file (user JWT and seed, for operator/JWT
// deployments, used as nats.UserCredentials would).
//
// With a seed file the connection also gets the user's private inbox
// prefix (InboxPrefix), which its permissions require. The seed is read
// when the server asks for a signature and wiped right after; it is not
// kept in memory and never appears in an error.
func ConnectOption(file string) nats.Option {
	return func(o *nats.Options) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("nats credentials: %w", err)
		}
		isCreds := bytes.Contains(b, []byte("BEGIN NATS USER JWT"))
		wipe(b)
		if isCreds {
			return nats.UserCredentials(file)(o)
		}
		pub, err := PublicKeyOf(file)
		if err != nil {
			return fmt.Errorf("nats credentials: %w", err)
		}
		o.Nkey = pub
		o.SignatureCB = func(nonce []byte) ([]byte, error) { return sign(file, nonce) }
		o.InboxPrefix = InboxPrefix(pub)
		return nil
	}
}

// sign signs the server's nonce with the seed in file.
func sign(file string, nonce []byte) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return nil, fmt.Errorf("nats credentials %s: %w", file, err)
	}
	defer kp.Wipe()
	return kp.Sign(nonce)
}

// TLSOption configures TLS to the NATS servers: caFile (PEM) is the CA
// that signed the servers' certificates; certFile and keyFile, when both
// are set, are the client certificate for servers that verify clients
// (mutual TLS). Empty caFile with no client certificate returns nil.
func TLSOption(caFile, certFile, keyFile string) (nats.Option, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("nats tls: a client certificate needs both the certificate and the key file")
	}
	var opts []nats.Option
	if caFile != "" {
		if _, err := os.Stat(caFile); err != nil {
			return nil, fmt.Errorf("nats tls: CA: %w", err)
		}
		opts = append(opts, nats.RootCAs(caFile))
	}
	if certFile != "" {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("nats tls: client certificate: %w", err)
			}
		}
		opts = append(opts, nats.ClientCert(certFile, keyFile))
	}
	if len(opts) == 0 {
		return nil, nil
	}
	return func(o *nats.Options) error {
		for _, opt := range opts {
			if err := opt(o); err != nil {
				return fmt.Errorf("nats tls: %w", err)
			}
		}
		return nil
	}, nil
}

// ClientOptions is what a Cordon command needs to reach a secured NATS
// deployment: the credentials file (--nats-creds; ConnectOption) and TLS
// (--nats-ca, --nats-cert, --nats-key; TLSOption). Empty arguments add
// nothing, so the result can always be appended to the connect options.
func ClientOptions(credsFile, caFile, certFile, keyFile string) ([]nats.Option, error) {
	var opts []nats.Option
	if credsFile != "" {
		if _, err := os.Stat(credsFile); err != nil {
			return nil, fmt.Errorf("nats credentials: %w", err)
		}
		opts = append(opts, ConnectOption(credsFile))
	}
	t, err := TLSOption(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if t != nil {
		opts = append(opts, t)
	}
	return opts, nil
}
