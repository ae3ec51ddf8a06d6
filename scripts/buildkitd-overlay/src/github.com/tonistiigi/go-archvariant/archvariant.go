// Package archvariant is strata's stand-in for github.com/tonistiigi/go-archvariant,
// which Debian does not package. BuildKit asks it which x86-64 micro-architecture
// level (v1..v4) the host CPU reaches, to list linux/amd64/vN among the worker's
// platforms.
//
// The levels are judged from the CPU features golang.org/x/sys/cpu reports.
// A few level requirements are not visible there (LAHF/SAHF for v2; F16C, LZCNT
// and MOVBE for v3); every CPU with the visible features of a level has them, so
// they are assumed.
package archvariant

import "golang.org/x/sys/cpu"

// AMD64Variant returns "v1", "v2", "v3" or "v4".
func AMD64Variant() string {
	x := cpu.X86
	v2 := x.HasCX16 && x.HasPOPCNT && x.HasSSE3 && x.HasSSSE3 && x.HasSSE41 && x.HasSSE42
	v3 := v2 && x.HasAVX && x.HasAVX2 && x.HasBMI1 && x.HasBMI2 && x.HasFMA && x.HasOSXSAVE
	v4 := v3 && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512CD && x.HasAVX512DQ && x.HasAVX512VL
	switch {
	case v4:
		return "v4"
	case v3:
		return "v3"
	case v2:
		return "v2"
	default:
		return "v1"
	}
}
