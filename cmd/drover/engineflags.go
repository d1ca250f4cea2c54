package main

import (
	"errors"
	"flag"
	"os"

	"github.com/drover/drover/client"
)

// engineFlagSet holds how a component reaches the engine: a credentials
// file, explicit flags, or DROVER_* environment variables, in that order.
type engineFlagSet struct {
	credentials, server, accessKey, secretKey *string
}

func engineFlags(fs *flag.FlagSet) engineFlagSet {
	return engineFlagSet{
		credentials: fs.String("credentials", os.Getenv("DROVER_CREDENTIALS"), "engine credentials.json ({\"url\",\"accessKey\",\"secretKey\"}); env DROVER_CREDENTIALS"),
		server:      fs.String("server", os.Getenv("DROVER_URL"), "engine URL; env DROVER_URL"),
		accessKey:   fs.String("access-key", os.Getenv("DROVER_ACCESS_KEY"), "engine access key; env DROVER_ACCESS_KEY"),
		secretKey:   fs.String("secret-key", os.Getenv("DROVER_SECRET_KEY"), "engine secret key; env DROVER_SECRET_KEY"),
	}
}

func (e engineFlagSet) client() (*client.Client, error) {
	if *e.credentials != "" {
		return client.FromCredentialsFile(*e.credentials)
	}
	if *e.server == "" || *e.accessKey == "" || *e.secretKey == "" {
		return nil, errors.New("say how to reach the engine: --credentials FILE, or --server, --access-key and --secret-key (or DROVER_* env)")
	}
	return client.New(*e.server, *e.accessKey, *e.secretKey), nil
}
