package main

import (
	"context"
	"encoding/json"
	flag "github.com/spf13/pflag"
	"io"
	"os"

	"github.com/drover/drover/api"
	"github.com/drover/drover/internal/lifecycle"
	"github.com/drover/drover/metadata"
)

func runMetadata(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover metadata", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o metadata.Options
	var tokenKey string
	ef := engineFlags(fs)
	fs.StringVar(&o.Listen, "listen", "169.254.169.250:80", "address to serve metadata on")
	fs.BoolVar(&o.XFF, "xff", false, "identify callers by X-Forwarded-For (only behind a trusted proxy)")
	fs.StringVar(&o.StateDir, "state-dir", metadata.DefaultStateDir, "where to keep snapshots of the engine's objects, so a restart answers at once while the engine is away (empty: none)")
	fs.StringVar(&tokenKey, "token-key", os.Getenv("DROVER_METADATA_TOKEN_KEY"), "key signing service tokens, shared by every metadata server (default: the engine secret key); env DROVER_METADATA_TOKEN_KEY")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	eng, err := ef.client()
	if err != nil {
		return usageError{err.Error()}
	}
	if tokenKey == "" {
		// The secret of the key metadata runs with: stable across hosts
		// that share one service key.
		tokenKey = *ef.secretKey
		if *ef.credentials != "" {
			b, err := os.ReadFile(*ef.credentials)
			var cr api.Credentials
			if err != nil || json.Unmarshal(b, &cr) != nil {
				return usageError{"--credentials: cannot read " + *ef.credentials}
			}
			tokenKey = cr.SecretKey
		}
	}
	o.Engine, o.Logger, o.TokenKey = eng, log, []byte(tokenKey)
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return metadata.Run(ctx, o)
}
