package main

import (
	"flag"
	"io"
	"log/slog"

	"github.com/drover/drover/internal/lifecycle"
)

// logFlags are every daemon's --log-format and --log-level.
type logFlags struct{ format, level *string }

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format: text or json"),
		level:  fs.String("log-level", "info", "log level: debug, info, warn, error"),
	}
}

func (l logFlags) logger(w io.Writer) (*slog.Logger, error) {
	log, err := lifecycle.NewLogger(w, *l.format, *l.level)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return log, nil
}

// parseFlags parses args; it reports done when help was asked for (and
// shown) or the flags were wrong, so the command returns err at once.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return true, nil
		}
		return true, usageError{err.Error()}
	}
	return false, nil
}
