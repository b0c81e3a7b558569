package main

import (
	"fmt"
	"io"

	"github.com/nvmepoll/nvmepoll/nvme"
)

func cmdSMARTLog(e *env, args []string) error {
	fs := newFlags("smart-log")
	asJSON := jsonFlags(fs)
	pos, err := parse(e, "smart-log", fs, args)
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
		raw := make([]byte, nvme.SMARTLogSize)
		// Controller-wide log, as `nvme smart-log` asks for it (NSID FFFFFFFFh).
		if err := d.ctrl.GetLogPage(ctx, nvme.LogSMART, 0xffffffff, 0, raw); err != nil {
			return fmt.Errorf("%s: reading the SMART / Health log: %w", d.name, err)
		}
		if _, err := nvme.ParseSMARTLog(raw); err != nil {
			return fmt.Errorf("%s: SMART / Health log: %w", d.name, err)
		}
		if *asJSON {
			return writeJSON(e.stdout, smartJSON(raw))
		}
		printSMART(e.stdout, raw, d.name)
		return nil
	})
}

// smartJSON follows nvme-cli 2.x's json_smart_log (non-verbose): temperatures in kelvin,
// 128-bit counters as decimal strings (as nvme-cli 2.3 prints them), sensors that read 0 left out. The NVMe 2.1 fields
// op_lifetime_energy_consumed and interval_power_measurement are not printed (reserved in 2.0).
func smartJSON(raw []byte) object {
	p := le(raw)
	var o object
	o.add("critical_warning", p.u8(0))
	o.add("temperature", p.u16(1))
	o.add("avail_spare", p.u8(3))
	o.add("spare_thresh", p.u8(4))
	o.add("percent_used", p.u8(5))
	o.add("endurance_grp_critical_warning_summary", p.u8(6))
	for i, k := range smartCounters {
		o.add(k, p.u128(32+16*i))
	}
	o.add("warning_temp_time", p.u32(192))
	o.add("critical_comp_time", p.u32(196))
	for i := 0; i < 8; i++ {
		if t := p.u16(200 + 2*i); t != 0 {
			o.add(fmt.Sprintf("temperature_sensor_%d", i+1), t)
		}
	}
	o.add("thm_temp1_trans_count", p.u32(216))
	o.add("thm_temp2_trans_count", p.u32(220))
	o.add("thm_temp1_total_time", p.u32(224))
	o.add("thm_temp2_total_time", p.u32(228))
	return o
}

// smartCounters are the 128-bit counters from byte 32, 16 bytes apart, in nvme-cli's names.
var smartCounters = []string{"data_units_read", "data_units_written", "host_read_commands",
	"host_write_commands", "controller_busy_time", "power_cycles", "power_on_hours",
	"unsafe_shutdowns", "media_errors", "num_err_log_entries"}

func printSMART(w io.Writer, raw []byte, name string) {
	p := le(raw)
	line := func(k string, format string, a ...any) {
		fmt.Fprintf(w, "%-40s: %s\n", k, fmt.Sprintf(format, a...))
	}
	fmt.Fprintf(w, "Smart Log for NVME device:%s namespace-id:ffffffff\n", name)
	cw := nvme.CriticalWarning(p.u8(0))
	line("critical_warning", "%#x (%s)", p.u8(0), cw)
	line("temperature", "%s", kelvin(p.u16(1)))
	line("available_spare", "%d%%", p.u8(3))
	line("available_spare_threshold", "%d%%", p.u8(4))
	line("percentage_used", "%d%%", p.u8(5))
	line("endurance group critical warning summary", "%#x", p.u8(6))
	dataUnits := func(off int) string {
		lo := p.u64(off)
		if p.u64(off+8) != 0 {
			return p.u128String(off)
		}
		return fmt.Sprintf("%d (%s)", lo, humanBytes(float64(lo)*nvme.DataUnitBytes))
	}
	line("Data Units Read", "%s", dataUnits(32))
	line("Data Units Written", "%s", dataUnits(48))
	names := []string{"host_read_commands", "host_write_commands", "controller_busy_time",
		"power_cycles", "power_on_hours", "unsafe_shutdowns", "media_errors", "num_err_log_entries"}
	for i, k := range names {
		line(k, "%s", p.u128String(64+16*i))
	}
	line("Warning Temperature Time", "%d", p.u32(192))
	line("Critical Composite Temperature Time", "%d", p.u32(196))
	for i := 0; i < 8; i++ {
		if t := p.u16(200 + 2*i); t != 0 {
			line(fmt.Sprintf("Temperature Sensor %d", i+1), "%s", kelvin(t))
		}
	}
	line("Thermal Management T1 Trans Count", "%d", p.u32(216))
	line("Thermal Management T2 Trans Count", "%d", p.u32(220))
	line("Thermal Management T1 Total Time", "%d", p.u32(224))
	line("Thermal Management T2 Total Time", "%d", p.u32(228))
}

func kelvin(k uint16) string {
	if k == 0 {
		return "not reported"
	}
	return fmt.Sprintf("%d °C (%d K)", int(k)-273, k)
}

func cmdErrorLog(e *env, args []string) error {
	fs := newFlags("error-log")
	asJSON := jsonFlags(fs)
	entries := fs.Int("e", 0, "number of `ENTRIES` to read (default: all the controller keeps, ELPE+1)")
	pos, err := parse(e, "error-log", fs, args)
	if err != nil {
		return err
	}
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	if *entries < 0 {
		return usagef("-e %d: the number of entries cannot be negative", *entries)
	}
	return withDevice(spec, nil, func(d *device) error {
		ctx, cancel := ctxTimeout()
		defer cancel()
		max := d.ctrl.ErrorLogEntries()
		n := *entries
		if n > max {
			return usagef("-e %d: %s keeps at most %d error log entries", n, d.name, max)
		}
		if n == 0 {
			n = max
		}
		raw := make([]byte, n*nvme.ErrorLogEntrySize)
		if err := d.ctrl.GetLogPage(ctx, nvme.LogErrorInformation, 0, 0, raw); err != nil {
			return fmt.Errorf("%s: reading the Error Information log: %w", d.name, err)
		}
		if *asJSON {
			return writeJSON(e.stdout, errorLogJSON(raw))
		}
		printErrorLog(e.stdout, raw, d.name)
		return nil
	})
}

// errorLogJSON follows nvme-cli 2.x's json_error_log: {"errors": [...]}, one object per entry
// read, unused ones (error_count 0) included as nvme-cli does; status_field without the
// phase tag, which is its own key.
func errorLogJSON(raw []byte) object {
	errs := []object{}
	for off := 0; off+nvme.ErrorLogEntrySize <= len(raw); off += nvme.ErrorLogEntrySize {
		p := le(raw[off : off+nvme.ErrorLogEntrySize])
		var o object
		o.add("error_count", p.u64(0))
		o.add("sqid", p.u16(8))
		o.add("cmdid", p.u16(10))
		o.add("status_field", p.u16(12)>>1)
		o.add("phase_tag", p.u16(12)&1)
		o.add("parm_error_location", p.u16(14))
		o.add("lba", p.u64(16))
		o.add("nsid", p.u32(24))
		o.add("vs", p.u8(28))
		o.add("trtype", p.u8(29))
		o.add("csi", p.u8(30))
		o.add("opcode", p.u8(31))
		o.add("cs", p.u64(32))
		o.add("trtype_spec_info", p.u16(40))
		o.add("log_page_version", p.u8(63))
		errs = append(errs, o)
	}
	return object{{"errors", errs}}
}

func printErrorLog(w io.Writer, raw []byte, name string) {
	n := len(raw) / nvme.ErrorLogEntrySize
	fmt.Fprintf(w, "Error Log Entries for device:%s entries:%d\n", name, n)
	fmt.Fprintf(w, ".................\n")
	for i := 0; i < n; i++ {
		p := le(raw[i*nvme.ErrorLogEntrySize : (i+1)*nvme.ErrorLogEntrySize])
		st := nvme.Status(p.u16(12) >> 1)
		fmt.Fprintf(w, " Entry[%2d]\n.................\n", i)
		fmt.Fprintf(w, "%-16s: %d\n", "error_count", p.u64(0))
		fmt.Fprintf(w, "%-16s: %d\n", "sqid", p.u16(8))
		fmt.Fprintf(w, "%-16s: %#x\n", "cmdid", p.u16(10))
		fmt.Fprintf(w, "%-16s: %#x(%s)\n", "status_field", uint16(st), nvme.StatusName(st.SCT(), st.SC(), p.u16(8) == 0))
		fmt.Fprintf(w, "%-16s: %#x\n", "phase_tag", p.u16(12)&1)
		fmt.Fprintf(w, "%-16s: %#x\n", "parm_err_loc", p.u16(14))
		fmt.Fprintf(w, "%-16s: %#x\n", "lba", p.u64(16))
		fmt.Fprintf(w, "%-16s: %#x\n", "nsid", p.u32(24))
		fmt.Fprintf(w, "%-16s: %d\n", "vs", p.u8(28))
		fmt.Fprintf(w, "%-16s: %d\n", "trtype", p.u8(29))
		fmt.Fprintf(w, "%-16s: %d\n", "csi", p.u8(30))
		fmt.Fprintf(w, "%-16s: %#x\n", "opcode", p.u8(31))
		fmt.Fprintf(w, "%-16s: %#x\n", "cs", p.u64(32))
		fmt.Fprintf(w, "%-16s: %#x\n", "trtype_spec_info", p.u16(40))
		fmt.Fprintf(w, "%-16s: %d\n", "log_page_version", p.u8(63))
		fmt.Fprintf(w, ".................\n")
	}
}
