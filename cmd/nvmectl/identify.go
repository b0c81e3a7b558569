package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/queue"
)

// identifyRaw runs Identify with cns for nsid and returns the 4096-byte page as the device
// wrote it. nvmectl decodes the raw page itself because nvme-cli's JSON has fields
// nvme.IdentifyController does not keep; nvme's parsers still validate it (see callers).
func identifyRaw(ctx context.Context, c *nvme.Controller, cns nvme.CNS, nsid uint32) ([]byte, error) {
	pool, err := c.NewPool(1, nvme.IdentifySize)
	if err != nil {
		return nil, fmt.Errorf("allocating an Identify buffer: %w", err)
	}
	defer pool.Close()
	buf, err := pool.Get()
	if err != nil {
		return nil, err
	}
	defer pool.Put(buf)
	clear(buf.Bytes[:nvme.IdentifySize])
	cmd := queue.Command{Opcode: uint8(nvme.AdminIdentify), NSID: nsid, PRP1: buf.IOVA, CDW10: uint32(cns)}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		return nil, fmt.Errorf("Identify (CNS %#x) nsid %d: %w", uint8(cns), nsid, err)
	}
	return append([]byte(nil), buf.Bytes[:nvme.IdentifySize]...), nil
}

func cmdIDCtrl(e *env, args []string) error {
	fs := newFlags("id-ctrl")
	asJSON := jsonFlags(fs)
	pos, err := parse(e, "id-ctrl", fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	return withDevice(spec, nil, func(d *device) error {
		ctx, cancel := ctxTimeout()
		defer cancel()
		raw, err := identifyRaw(ctx, d.ctrl, nvme.CNSController, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if _, err := nvme.ParseIdentifyController(raw); err != nil {
			return fmt.Errorf("%s: Identify Controller: %w", d.name, err)
		}
		if *asJSON {
			return writeJSON(e.stdout, idCtrlJSON(raw))
		}
		printIDCtrl(e.stdout, raw)
		return nil
	})
}

// jsonFlags adds --json and nvme-cli's spelling -o json / --output-format json.
func jsonFlags(fs *flag.FlagSet) *bool {
	j := new(bool)
	fs.BoolVar(j, "json", false, "print JSON with nvme-cli 2.x's keys (as nvme-cli -o json)")
	fs.Func("output-format", "`FORMAT`: normal or json (as nvme-cli -o)", func(s string) error {
		switch s {
		case "json":
			*j = true
		case "normal":
			*j = false
		default:
			return fmt.Errorf("output format %q: want normal or json", s)
		}
		return nil
	})
	return j
}

// ctrlField is one scalar of Identify Controller: JSON key (nvme-cli's), offset and size in
// bytes (16 = a 128-bit value).
type ctrlField struct {
	key  string
	off  int
	size int
}

// idCtrlFields are the Identify Controller fields in nvme-cli's json_nvme_id_ctrl order.
//
// Differences from nvme-cli 2.x, and why:
//   - sn, mn, fr, subnqn, fguid, psds are handled apart (strings and a list), in the same places.
//   - Fields added after NVMe 2.0 that recent nvme-cli versions print (bpcap, nssl, plsi, crcap,
//     kpioc, mptfawr, tmpthha, cqt, cdpa, mup, ipmsr, msmt, oaqd, rhiri, hirt, cmmrtd, nmmrtd,
//     minmrtg, maxmrtg, trattr, mcudmq, mnsudmq, mcmr, nmcmr, mcdqpc, dctype, ccrl) are left out:
//     nvmepoll targets NVMe 2.0, where those bytes are reserved.
//   - The vendor specific area ("vs") is not printed, as nvme-cli does without a plugin.
var idCtrlFields = []ctrlField{
	{"vid", 0, 2}, {"ssvid", 2, 2},
	{"sn", 4, -20}, {"mn", 24, -40}, {"fr", 64, -8},
	{"rab", 72, 1}, {"ieee", 73, 3}, {"cmic", 76, 1}, {"mdts", 77, 1}, {"cntlid", 78, 2},
	{"ver", 80, 4}, {"rtd3r", 84, 4}, {"rtd3e", 88, 4}, {"oaes", 92, 4}, {"ctratt", 96, 4},
	{"rrls", 100, 2}, {"cntrltype", 111, 1}, {"fguid", 112, -16},
	{"crdt1", 128, 2}, {"crdt2", 130, 2}, {"crdt3", 132, 2},
	{"nvmsr", 253, 1}, {"vwci", 254, 1}, {"mec", 255, 1},
	{"oacs", 256, 2}, {"acl", 258, 1}, {"aerl", 259, 1}, {"frmw", 260, 1}, {"lpa", 261, 1},
	{"elpe", 262, 1}, {"npss", 263, 1}, {"avscc", 264, 1}, {"apsta", 265, 1},
	{"wctemp", 266, 2}, {"cctemp", 268, 2}, {"mtfa", 270, 2}, {"hmpre", 272, 4}, {"hmmin", 276, 4},
	{"tnvmcap", 280, 16}, {"unvmcap", 296, 16}, {"rpmbs", 312, 4}, {"edstt", 316, 2},
	{"dsto", 318, 1}, {"fwug", 319, 1}, {"kas", 320, 2}, {"hctma", 322, 2}, {"mntmt", 324, 2},
	{"mxtmt", 326, 2}, {"sanicap", 328, 4}, {"hmminds", 332, 4}, {"hmmaxd", 336, 2},
	{"nsetidmax", 338, 2}, {"endgidmax", 340, 2}, {"anatt", 342, 1}, {"anacap", 343, 1},
	{"anagrpmax", 344, 4}, {"nanagrpid", 348, 4}, {"pels", 352, 4}, {"domainid", 356, 2},
	{"megcap", 368, 16},
	{"sqes", 512, 1}, {"cqes", 513, 1}, {"maxcmd", 514, 2}, {"nn", 516, 4}, {"oncs", 520, 2},
	{"fuses", 522, 2}, {"fna", 524, 1}, {"vwc", 525, 1}, {"awun", 526, 2}, {"awupf", 528, 2},
	{"icsvscc", 530, 1}, {"nwpc", 531, 1}, {"acwu", 532, 2}, {"ocfs", 534, 2}, {"sgls", 536, 4},
	{"mnan", 540, 4}, {"maxdna", 544, 16}, {"maxcna", 560, 4},
	{"subnqn", 768, -256},
	{"ioccsz", 1792, 4}, {"iorcsz", 1796, 4}, {"icdoff", 1800, 2}, {"fcatt", 1802, 1},
	{"msdbd", 1803, 1}, {"ofcs", 1804, 2},
}

// ctrlValue is a field's JSON value: a number (uint128 as a bare decimal) or a string.
func ctrlValue(p le, f ctrlField) any {
	switch {
	case f.key == "fguid":
		return uuidString(p, f.off)
	case f.key == "ieee":
		// nvme-cli: ieee[2] << 16 | ieee[1] << 8 | ieee[0], a number.
		return uint32(p.u8(f.off+2))<<16 | uint32(p.u8(f.off+1))<<8 | uint32(p.u8(f.off))
	case f.size < 0:
		// nvme-cli prints the field as stored, padding included ("%-.*s").
		return rawString(p, f.off, -f.size)
	case f.size == 1:
		return p.u8(f.off)
	case f.size == 2:
		return p.u16(f.off)
	case f.size == 4:
		return p.u32(f.off)
	default:
		return p.u128(f.off)
	}
}

// rawString is a fixed-size ASCII field up to its first NUL, padding kept, non-printable
// bytes as '.'.
func rawString(p le, off, n int) string {
	var b strings.Builder
	for i := off; i < off+n; i++ {
		c := p.u8(i)
		if c == 0 {
			break
		}
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func uuidString(p le, off int) string {
	h := p.hex(off, 16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func idCtrlJSON(raw []byte) object {
	p := le(raw)
	var o object
	for _, f := range idCtrlFields {
		v := ctrlValue(p, f)
		if f.key == "subnqn" && v == "" {
			continue // nvme-cli omits an empty subnqn
		}
		o.add(f.key, v)
	}
	var psds []object
	for i := 0; i <= int(p.u8(263)) && i < nvme.MaxPowerStates; i++ {
		psds = append(psds, psdJSON(p, 2048+32*i))
	}
	o.add("psds", psds)
	return o
}

func psdJSON(p le, off int) object {
	var o object
	flags := p.u8(off + 3)
	o.add("max_power", p.u16(off))
	o.add("flags", flags) // nvme-cli 2.3's key; the two below are its bits, as later versions print them
	o.add("max_power_scale", flags&1)
	o.add("non-operational_state", flags>>1&1)
	o.add("entry_lat", p.u32(off+4))
	o.add("exit_lat", p.u32(off+8))
	o.add("read_tput", p.u8(off+12)&0x1f)
	o.add("read_lat", p.u8(off+13)&0x1f)
	o.add("write_tput", p.u8(off+14)&0x1f)
	o.add("write_lat", p.u8(off+15)&0x1f)
	o.add("idle_power", p.u16(off+16))
	o.add("idle_scale", p.u8(off+18)>>6)
	o.add("active_power", p.u16(off+20))
	o.add("active_power_work", p.u8(off+22)&7)
	o.add("active_scale", p.u8(off+22)>>6)
	return o
}

// printIDCtrl prints Identify Controller the way `nvme id-ctrl` does: one "name : value" line
// per field, hex for flags and versions, decimal for counts.
func printIDCtrl(w io.Writer, raw []byte) {
	p := le(raw)
	fmt.Fprintf(w, "NVME Identify Controller:\n")
	hexKeys := map[string]bool{"vid": true, "ssvid": true, "cmic": true, "ver": true, "oaes": true,
		"ctratt": true, "oacs": true, "frmw": true, "lpa": true, "avscc": true, "apsta": true,
		"sanicap": true, "anacap": true, "sqes": true, "cqes": true, "oncs": true, "fuses": true,
		"fna": true, "vwc": true, "icsvscc": true, "nwpc": true, "sgls": true, "fcatt": true,
		"ofcs": true, "rrls": true, "nvmsr": true, "vwci": true, "mec": true, "cntrltype": true}
	for _, f := range idCtrlFields {
		v := ctrlValue(p, f)
		switch {
		case f.key == "ieee":
			fmt.Fprintf(w, "%-10s: %06x\n", f.key, v)
		case hexKeys[f.key]:
			fmt.Fprintf(w, "%-10s: %#x\n", f.key, v)
		default:
			fmt.Fprintf(w, "%-10s: %v\n", f.key, v)
		}
	}
	for i := 0; i <= int(p.u8(263)) && i < nvme.MaxPowerStates; i++ {
		off := 2048 + 32*i
		flags := p.u8(off + 3)
		mp := float64(p.u16(off))
		if flags&1 != 0 {
			mp /= 10000
		} else {
			mp /= 100
		}
		state := "operational"
		if flags&2 != 0 {
			state = "non-operational"
		}
		fmt.Fprintf(w, "ps %4d : mp:%.2fW %s enlat:%d exlat:%d rrt:%d rrl:%d\n", i, mp, state,
			p.u32(off+4), p.u32(off+8), p.u8(off+12)&0x1f, p.u8(off+13)&0x1f)
		fmt.Fprintf(w, "          rwt:%d rwl:%d idle_power:%s active_power:%s\n",
			p.u8(off+14)&0x1f, p.u8(off+15)&0x1f, psdPower(p.u16(off+16), p.u8(off+18)>>6), psdPower(p.u16(off+20), p.u8(off+22)>>6))
	}
}

// psdPower formats idle/active power: scale 1 is 0.0001 W, 2 is 0.01 W, 0 means not reported.
func psdPower(v uint16, scale uint8) string {
	switch scale {
	case 1:
		return fmt.Sprintf("%.4fW", float64(v)/10000)
	case 2:
		return fmt.Sprintf("%.2fW", float64(v)/100)
	}
	return "-"
}

func cmdIDNS(e *env, args []string) error {
	fs := newFlags("id-ns")
	asJSON := jsonFlags(fs)
	nsid := nsidFlag(fs)
	pos, err := parse(e, "id-ns", fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	if *nsid == 0 {
		return usagef("give the namespace with -n NSID (1 for the first namespace)")
	}
	return withDevice(spec, nil, func(d *device) error {
		ctx, cancel := ctxTimeout()
		defer cancel()
		if nn := d.ctrl.Identify().NN; *nsid > nn && *nsid != 0xffffffff {
			return fmt.Errorf("%s: namespace %d does not exist: the controller has namespace ids 1..%d (active: %s)", d.name, *nsid, nn, d.nsList())
		}
		raw, err := identifyRaw(ctx, d.ctrl, nvme.CNSNamespace, *nsid)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if _, err := nvme.ParseIdentifyNamespace(raw); errors.Is(err, nvme.ErrNamespaceInactive) {
			return fmt.Errorf("%s: namespace %d is not active (active namespaces: %s)", d.name, *nsid, d.nsList())
		} else if err != nil {
			return fmt.Errorf("%s: Identify Namespace %d: %w (active namespaces: %s)", d.name, *nsid, err, d.nsList())
		}
		if *asJSON {
			return writeJSON(e.stdout, idNSJSON(raw))
		}
		printIDNS(e.stdout, raw, *nsid)
		return nil
	})
}

// nsidFlag adds -n / --namespace-id, nvme-cli's names.
func nsidFlag(fs *flag.FlagSet) *uint32 {
	n := new(uint32)
	set := func(s string) error {
		v, err := parseUint(s, 32)
		if err != nil {
			return fmt.Errorf("namespace id %q is not a number from 1 to 4294967295", s)
		}
		*n = uint32(v)
		return nil
	}
	fs.Func("n", "namespace `NSID` (from 1)", set)
	fs.Func("namespace-id", "`NSID`, same as -n", set)
	return n
}

// idNSFields are Identify Namespace scalars in nvme-cli's json_nvme_id_ns order. npwg..nows
// are printed only when NSFEAT bit 4 says they are valid, as nvme-cli does; kpios and
// kpiodaag (NVMe 2.1) are left out.
var idNSFields = []ctrlField{
	{"nsze", 0, 8}, {"ncap", 8, 8}, {"nuse", 16, 8}, {"nsfeat", 24, 1}, {"nlbaf", 25, 1},
	{"flbas", 26, 1}, {"mc", 27, 1}, {"dpc", 28, 1}, {"dps", 29, 1}, {"nmic", 30, 1},
	{"rescap", 31, 1}, {"fpi", 32, 1}, {"dlfeat", 33, 1}, {"nawun", 34, 2}, {"nawupf", 36, 2},
	{"nacwu", 38, 2}, {"nabsn", 40, 2}, {"nabo", 42, 2}, {"nabspf", 44, 2}, {"noiob", 46, 2},
	{"nvmcap", 48, 16},
	{"npwg", 64, 2}, {"npwa", 66, 2}, {"npdg", 68, 2}, {"npda", 70, 2}, {"nows", 72, 2},
	{"mssrl", 74, 2}, {"mcl", 76, 4}, {"msrc", 80, 1}, {"nulbaf", 82, 1},
	{"anagrpid", 92, 4}, {"nsattr", 99, 1}, {"nvmsetid", 100, 2}, {"endgid", 102, 2},
}

func nsValue(p le, f ctrlField) any {
	if f.size == 8 {
		return p.u64(f.off)
	}
	return ctrlValue(p, f)
}

func optimalIOField(key string) bool {
	switch key {
	case "npwg", "npwa", "npdg", "npda", "nows":
		return true
	}
	return false
}

func idNSJSON(raw []byte) object {
	p := le(raw)
	var o object
	nsfeat := p.u8(24)
	for _, f := range idNSFields {
		if optimalIOField(f.key) && nsfeat&0x10 == 0 {
			continue
		}
		o.add(f.key, nsValue(p, f))
	}
	o.add("nguid", p.hex(104, 16))
	o.add("eui64", p.hex(120, 8))
	lbafs := []object{}
	for i := 0; i <= int(p.u8(25)) && i < nvme.MaxLBAFormats; i++ {
		var l object
		l.add("ms", p.u16(128+4*i))
		l.add("ds", p.u8(128+4*i+2))
		l.add("rp", p.u8(128+4*i+3)&3)
		lbafs = append(lbafs, l)
	}
	o.add("lbafs", lbafs)
	return o
}

func printIDNS(w io.Writer, raw []byte, nsid uint32) {
	p := le(raw)
	fmt.Fprintf(w, "NVME Identify Namespace %d:\n", nsid)
	nsfeat := p.u8(24)
	for _, f := range idNSFields {
		if optimalIOField(f.key) && nsfeat&0x10 == 0 {
			continue
		}
		v := nsValue(p, f)
		switch f.key {
		case "nsze", "ncap", "nuse", "nsfeat", "mc", "dpc", "dps", "nmic", "rescap", "fpi", "dlfeat", "nsattr":
			fmt.Fprintf(w, "%-8s: %#x\n", f.key, v)
		default:
			fmt.Fprintf(w, "%-8s: %v\n", f.key, v)
		}
	}
	fmt.Fprintf(w, "%-8s: %s\n", "nguid", p.hex(104, 16))
	fmt.Fprintf(w, "%-8s: %s\n", "eui64", p.hex(120, 8))
	inUse := int(p.u8(26) & 0xf)
	if p.u8(25) >= 16 {
		inUse |= int(p.u8(26)>>5&3) << 4
	}
	rp := []string{"Best", "Better", "Good", "Degraded"}
	for i := 0; i <= int(p.u8(25)) && i < nvme.MaxLBAFormats; i++ {
		suffix := ""
		if i == inUse {
			suffix = " (in use)"
		}
		r := p.u8(128+4*i+3) & 3
		fmt.Fprintf(w, "lbaf %2d : ms:%-3d lbads:%-2d rp:%#x %s%s\n", i, p.u16(128+4*i), p.u8(128+4*i+2), r, rp[r], suffix)
	}
}
