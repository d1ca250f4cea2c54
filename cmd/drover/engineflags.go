package main

import (
	"errors"
	flag "github.com/spf13/pflag"
	"os"
	"path/filepath"

	"github.com/drover/drover/client"
)

// engineFlagSet holds how a component reaches the engine: a credentials
// file, explicit flags, or DROVER_* environment variables, in that order.
type engineFlagSet struct {
	credentials, server, accessKey, secretKey *string
}

func engineFlags(fs *flag.FlagSet) engineFlagSet {
	return engineFlagSet{
		credentials: fs.String("credentials", "", "engine credentials.json ({\"url\",\"accessKey\",\"secretKey\"}); without it: ./.drover/credentials.json, $DROVER_CREDENTIALS, ~/.drover/credentials.json, /var/lib/drover/server/credentials.json (drover up's), the first that exists"),
		server:      fs.String("server", os.Getenv("DROVER_URL"), "engine URL; env DROVER_URL"),
		accessKey:   fs.String("access-key", os.Getenv("DROVER_ACCESS_KEY"), "engine access key; env DROVER_ACCESS_KEY"),
		secretKey:   fs.String("secret-key", os.Getenv("DROVER_SECRET_KEY"), "engine secret key; env DROVER_SECRET_KEY"),
	}
}

func (e engineFlagSet) client() (*client.Client, error) {
	if *e.credentials != "" {
		return client.FromCredentialsFile(*e.credentials)
	}
	if *e.server != "" || *e.accessKey != "" || *e.secretKey != "" {
		if *e.server == "" || *e.accessKey == "" || *e.secretKey == "" {
			return nil, errors.New("--server, --access-key and --secret-key (or DROVER_URL, DROVER_ACCESS_KEY, DROVER_SECRET_KEY) go together: one is missing")
		}
		return client.New(*e.server, *e.accessKey, *e.secretKey), nil
	}
	if f := findCredentials(); f != "" {
		return client.FromCredentialsFile(f)
	}
	return nil, errors.New("no engine credentials: none of ./.drover/credentials.json, $DROVER_CREDENTIALS, ~/.drover/credentials.json, /var/lib/drover/server/credentials.json exists; give --credentials FILE (make engine and drover up write one)")
}

// findCredentials is where a CLI finds the engine without being told: what
// make engine wrote here, then $DROVER_CREDENTIALS, the user's own, and
// what drover up wrote on this host.
func findCredentials() string {
	cands := []string{".drover/credentials.json", os.Getenv("DROVER_CREDENTIALS")}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".drover", "credentials.json"))
	}
	cands = append(cands, "/var/lib/drover/server/credentials.json")
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}
