// Command nvmectl is the operator's tool for nvmepoll: it lists NVMe controllers, moves them
// between the kernel's nvme driver and vfio-pci, and drives a vfio-bound controller from user
// space (identify, logs, block I/O, a polled benchmark).
//
// Conventions are borrowed so an operator feels at home: nvme-cli's command names and output
// (human and -o json keys), SPDK's setup.sh for binding, fio / spdk_nvme_perf for perf.
//
// A device is a PCI address ("0000:00:03.0" or "00:03.0") of a controller bound to vfio-pci, or
// "sim" / "sim:SIZE": an in-process nvme/nvmetest controller with a memory-backed namespace, so
// every command can be tried without hardware.
//
// Exit status: 0 success, 1 device or command failure, 2 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the device or the command failed
	exitUsage   = 2 // the command line is wrong
)

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// env is what a command may touch: its streams. Tests give buffers.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name    string
	args    string // synopsis after the name
	summary string
	run     func(e *env, args []string) error
}

var commands []*command

func init() {
	commands = []*command{
		{"list", "[--json]", "list NVMe controllers, their drivers and (vfio-bound) identity", cmdList},
		{"bind", "ADDR... | --all", "hand controllers to vfio-pci (refuses mounted or held ones)", cmdBind},
		{"unbind", "ADDR...", "give controllers back to the kernel nvme driver", cmdUnbind},
		{"id-ctrl", "DEVICE [--json]", "Identify Controller", cmdIDCtrl},
		{"id-ns", "DEVICE -n NSID [--json]", "Identify Namespace", cmdIDNS},
		{"smart-log", "DEVICE [--json]", "SMART / Health Information log", cmdSMARTLog},
		{"error-log", "DEVICE [--json] [-e ENTRIES]", "Error Information log", cmdErrorLog},
		{"read", "DEVICE -n NSID (--lba S --count N | --offset B --size B) [--output FILE]", "read blocks to a file or stdout", cmdRead},
		{"write", "DEVICE -n NSID (--lba S | --offset B) [--input FILE] [--pad]", "write a file or stdin to blocks", cmdWrite},
		{"compare", "DEVICE -n NSID (--lba S | --offset B) [--input FILE] [--pad]", "compare blocks with a file (Compare command)", cmdCompare},
		{"trim", "DEVICE -n NSID (--lba S --count N | --offset B --size B)", "deallocate blocks (Dataset Management)", cmdTrim},
		{"write-zeroes", "DEVICE -n NSID (--lba S --count N | --offset B --size B)", "zero blocks (Write Zeroes)", cmdWriteZeroes},
		{"flush", "DEVICE -n NSID", "commit the volatile write cache", cmdFlush},
		{"format", "DEVICE -n NSID --lbaf N --force", "Format NVM (destroys the namespace's data)", cmdFormat},
		{"perf", "DEVICE [-n NSID] -q DEPTH -o SIZE -w WORKLOAD -t SECONDS [-j QUEUES] [--mix PCT] [--offset B --size B] [--json] [--histogram] [--force]", "polled I/O benchmark (spdk_nvme_perf style)", cmdPerf},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func topUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: nvmectl COMMAND [arguments]\n\n")
	fmt.Fprintf(w, "A DEVICE is a PCI address (0000:00:03.0 or 00:03.0) of a controller bound to vfio-pci,\n")
	fmt.Fprintf(w, "or sim / sim:SIZE (e.g. sim:1G): an in-process model controller with a memory namespace.\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'nvmectl COMMAND --help' for a command's options.\n")
	fmt.Fprintf(w, "Exit status: 0 success, 1 device or command failure, 2 usage error.\n")
}

// run is main without the process: tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		topUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && lookup(args[1]) != nil {
			return run([]string{args[1], "--help"}, stdin, stdout, stderr)
		}
		topUsage(stdout)
		return exitOK
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "nvmectl: unknown command %q\n\n", args[0])
		topUsage(stderr)
		return exitUsage
	}
	err := c.run(e, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "nvmectl %s: %v\nRun 'nvmectl %s --help' for usage.\n", c.name, err, c.name)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "nvmectl %s: %v\n", c.name, err)
		return exitFailure
	}
}

// newFlags makes the flag set of command name; parse prints its help.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors itself, with the exit status
	fs.Usage = func() {}
	return fs
}

func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	c := lookup(name)
	fmt.Fprintf(w, "Usage: nvmectl %s %s\n\n%s.\n", c.name, c.args, strings.ToUpper(c.summary[:1])+c.summary[1:])
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprintf(w, "\nOptions:\n")
	for _, n := range names {
		f := fs.Lookup(n)
		dash := "--"
		if len(n) == 1 {
			dash = "-"
		}
		typ, usage := flag.UnquoteUsage(f)
		arg := dash + n
		if typ != "" {
			arg += " " + strings.ToUpper(typ)
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  %-24s %s%s\n", arg, usage, def)
	}
}

// parse parses args with fs, allowing flags before and after positional arguments (nvmectl
// read ADDR -n 1 ...), and returns the positional ones. --help prints the command's usage to
// stdout and returns flag.ErrHelp; other mistakes are usage errors.
func parse(e *env, name string, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(e.stdout, name, fs)
				return nil, flag.ErrHelp
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// oneDevice checks that exactly one positional argument (the device) was given.
func oneDevice(pos []string) (string, error) {
	switch len(pos) {
	case 0:
		return "", usagef("no device given: name a PCI address (0000:00:03.0) or sim")
	case 1:
		return pos[0], nil
	default:
		return "", usagef("one device expected, got %d arguments: %s", len(pos), strings.Join(pos, " "))
	}
}
