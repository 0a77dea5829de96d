// Package cliflag gives the binaries' command-line flags their environment
// variables, so that every flag can be set by either.
package cliflag

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// SetEnvVars walks cmds and their subcommands and gives each flag the
// environment variable name(path, flag) returns, where path is the
// command's names from the top ("ca serve"); an empty name leaves the
// flag without one. It panics on a flag type it does not know, which the
// binaries' tests catch before a release does.
func SetEnvVars(cmds []*cli.Command, name func(path, flag string) string) {
	walk(cmds, "", name)
}

func walk(cmds []*cli.Command, parent string, name func(path, flag string) string) {
	for _, cmd := range cmds {
		path := strings.TrimSpace(parent + " " + cmd.Name)
		for _, f := range cmd.Flags {
			v := name(path, f.Names()[0])
			if v == "" {
				continue
			}
			vars := []string{v}
			switch f := f.(type) {
			case *cli.StringFlag:
				f.EnvVars = vars
			case *cli.BoolFlag:
				f.EnvVars = vars
			case *cli.DurationFlag:
				f.EnvVars = vars
			case *cli.IntFlag:
				f.EnvVars = vars
			case *cli.StringSliceFlag:
				f.EnvVars = vars
			default:
				panic(fmt.Sprintf("%s --%s: no environment variable for flag type %T", path, f.Names()[0], f))
			}
		}
		walk(cmd.Subcommands, path, name)
	}
}
