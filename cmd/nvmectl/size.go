package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize parses a byte count with an optional suffix: K, M, G, T (powers of 1024, as fio
// and nvme-cli take them), the same with B or iB (KiB, MB...), or none. "4k" = "4KiB" = 4096.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	u := strings.ToUpper(t)
	if v, ok := strings.CutSuffix(u, "IB"); ok {
		u = v
	} else {
		u = strings.TrimSuffix(u, "B") // "4KB" is 4K; "512B" is 512
	}
	shift := 0
	if u != "" {
		switch u[len(u)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift != 0 {
			u = u[:len(u)-1]
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q is not a byte count (want e.g. 4096, 4K, 1MiB, 2G)", s)
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n << shift, nil
}

// formatSize prints n bytes in the largest binary unit that divides it ("64MiB", "4KiB", "1000").
func formatSize(n int64) string {
	for _, u := range []struct {
		shift int
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprint(n)
}

// humanBytes is an approximate size for people ("1.50 GiB").
func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.2f %s", n, units[i])
}
