package policy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the committed fuzz seed corpus in testdata/fuzz")

// The seed corpora below are committed under testdata/fuzz/<target>/<name> so that `go test`
// replays them and `go test -fuzz` starts from every protocol version and flag combination.
// Regenerate with: go test -run TestFuzzCorpus -update ./policy/

type headerSeed struct {
	name string
	in   []byte
}

func fixedHeaderSeeds() []headerSeed {
	return []headerSeed{
		{"empty", nil},
		{"type-only", []byte{0x10}},
		{"len-0", []byte{0x10, 0x00}},
		{"len-127", []byte{0x10, 0x7f}},
		{"len-128", []byte{0x10, 0x80, 0x01}},
		{"len-16383", []byte{0x10, 0xff, 0x7f}},
		{"len-16384", []byte{0x10, 0x80, 0x80, 0x01}},
		{"len-2097152", []byte{0x10, 0x80, 0x80, 0x80, 0x01}},
		{"len-max", []byte{0x30, 0xff, 0xff, 0xff, 0x7f}},
		{"fifth-byte", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"not-shortest", []byte{0x10, 0x80, 0x00}},
		{"cut", []byte{0x10, 0xff, 0xff}},
	}
}

type connectSeed struct {
	name string
	pkt  []byte
}

func connectSeeds() []connectSeed {
	seeds := []connectSeed{
		{"fixture-v31", connect31},
		{"fixture-v311", connect311},
		{"fixture-v311-min", connect311Min},
		{"fixture-v311-empty-id", connect311EmptyID},
		{"fixture-v5", connect5},
		{"fixture-v5-password-only", connect5PasswordOnly},
		{"v5-all-properties", packet(header(Level5, 0xce),
			props([]byte{0x11, 0, 0, 0, 1, 0x21, 0, 1, 0x27, 0, 0, 1, 0, 0x22, 0, 1, 0x19, 1, 0x17, 0},
				userProp("a", "b"), cat([]byte{0x15}, s16("m"), []byte{0x16}, s16("d"))),
			s16("dev1"),
			props([]byte{0x01, 1, 0x02, 0, 0, 0, 9, 0x18, 0, 0, 0, 1}, cat([]byte{0x03}, s16("c"), []byte{0x08}, s16("r"), []byte{0x09}, s16("x")), userProp("w", "v")),
			s16("w/t"), s16("bye"), s16("u"), s16("p"))},
		{"v311-long-client-id", packet(header(Level311, 0x02), s16(strings.Repeat("d", 300)))},
		{"level-6", packet(header(6, 0x02), s16("a"))},
		{"mqisdp-level-4", packet(s16("MQIsdp"), []byte{4, 2, 0, 60}, s16("a"))},
		{"bad-fixed-flags", with(connect311, 0, 0x12)},
		{"bad-utf8-client-id", packet(header(Level311, 0x02), s16("\xed\xa0\x80"))},
		{"nul-user-name", packet(header(Level311, 0x82), s16("a"), s16("u\x00"))},
		{"v5-duplicate-property", packet(header(Level5, 0x02), props([]byte{0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1}), s16("a"))},
		{"v5-auth-data-alone", packet(header(Level5, 0x02), props(cat([]byte{0x16}, s16("x"))), s16("a"))},
		{"v5-will-property-in-connect", packet(header(Level5, 0x02), props([]byte{0x18, 0, 0, 0, 1}), s16("a"))},
		{"trailing-byte", cat(connect311Min, []byte{0})},
		{"truncated", connect311[:20]},
	}
	// Every valid flags byte at every level, with the fields it announces, and one byte
	// breaking each flag rule.
	for _, level := range []byte{Level31, Level311, Level5} {
		for f := 0; f < 256; f++ {
			if checkFlags(level, byte(f)) == nil {
				seeds = append(seeds, connectSeed{fmt.Sprintf("v%s-flags-%02x", levelName(level), f), matrixPacket(level, byte(f))})
			}
		}
		for name, f := range map[string]byte{
			"reserved": 0x03, "qos-without-will": 0x0a, "retain-without-will": 0x22, "qos-3": 0x1e, "password-only": 0x42,
		} {
			seeds = append(seeds, connectSeed{fmt.Sprintf("v%s-bad-flags-%s", levelName(level), name), matrixPacket(level, f)})
		}
	}
	return seeds
}

func levelName(level byte) string {
	switch level {
	case Level31:
		return "31"
	case Level311:
		return "311"
	default:
		return "5"
	}
}

type bindSeed struct {
	name  string
	pkt   []byte
	modes uint16
	cn    string
}

func bindSeeds() []bindSeed {
	var seeds []bindSeed
	// Every client ID × username × password × identity property combination at each level.
	for _, f := range []struct {
		level byte
		pkt   []byte
	}{{Level31, connect31}, {Level311, connect311}, {Level5, connect5}} {
		for m := uint16(0); m < 64; m++ {
			if m>>2&3 == 3 { // username mode is taken mod 3; skip the duplicate
				continue
			}
			cfg, _ := fuzzPolicy(m, "")
			name := fmt.Sprintf("v%s-%s-%s-%s", levelName(f.level), cfg.ClientID, cfg.Username, cfg.Password)
			if cfg.IdentityProperty != "" {
				name += "-property"
			}
			cn := "dev1"
			if cfg.ClientID == ClientIDRewrite {
				cn = "device-7"
			}
			seeds = append(seeds, bindSeed{name, f.pkt, m, cn})
		}
	}
	prefixed := packet(header(Level311, 0x02), s16("dev1/kitchen"))
	forged := packet(header(Level5, 0x02), props(userProp("mqtls-identity", "forged"), userProp("k", "v")), s16("dev1"))
	seeds = append(seeds,
		bindSeed{"prefix-match", prefixed, uint16(ClientIDPrefix), "dev1"},
		bindSeed{"prefix-sep-only", packet(header(Level311, 0x02), s16("dev1/")), uint16(ClientIDPrefix), "dev1"},
		bindSeed{"prefix-colon", packet(header(Level311, 0x02), s16("dev1:a")), uint16(ClientIDPrefix) | 1<<10, "dev1"},
		bindSeed{"rewrite-empty-id-clean-0", connect311EmptyID, uint16(ClientIDRewrite), "dev1"},
		bindSeed{"off-empty-id-clean-0", connect311EmptyID, 0, "dev1"},
		bindSeed{"v31-rewrite-24-bytes", connect31, uint16(ClientIDRewrite), strings.Repeat("x", 24)},
		bindSeed{"v5-forged-identity-property", forged, 1<<5 | uint16(ClientIDEnforce), "dev1"},
		bindSeed{"no-identity", connect311, uint16(ClientIDEnforce) | 1<<8, "dev1"},
		bindSeed{"allow-miss", connect311, 1 << 6, "gw1"},
		bindSeed{"deny-hit", connect311, 1 << 7, "dev-deny"},
		bindSeed{"identity-nul", connect311, uint16(ClientIDRewrite), "a\x00b"},
		bindSeed{"identity-slash", connect311, uint16(ClientIDRewrite), "dev1/x"},
		bindSeed{"identity-plus", connect311, uint16(ClientIDRewrite), "dev1+"},
		bindSeed{"prefix-takeover", packet(header(Level311, 0x02), s16("dev1/b/x")), uint16(ClientIDPrefix), "dev1"},
		bindSeed{"v5-will-forged-identity-property", packet(header(Level5, 0x06), props(), s16("dev1"),
			props(userProp("mqtls-identity", "forged"), userProp("k", "v")), s16("w/t"), s16("bye")), 1<<5 | uint16(ClientIDEnforce), "dev1"},
		bindSeed{"template-literal", connect311, uint16(ClientIDEnforce) | 1<<9, "dev1"},
		bindSeed{"v5-password-only-strip", connect5PasswordOnly, uint16(UsernameStrip)<<2 | 1<<4, "dev1"},
	)
	return seeds
}

type renderSeed struct {
	name       string
	tmpl, bits uint8
	a, b       string
}

// renderSeeds are the collisions issue #14 names, and their neighbours; templates are
// indexes into renderTemplates, identities as fuzzIdentity reads them.
func renderSeeds() []renderSeed {
	const cert, psk, pinned = 1, 2, 3
	vals := func(v ...string) string { return strings.Join(v, "\x00") }
	return []renderSeed{
		{"tenant-dash-in-o", 1, cert | cert<<2, vals("y", "acme-x"), vals("x-y", "acme")},
		{"literal-early", 2, cert | cert<<2, vals("x", "a"), vals("ax", "")},
		{"slash-cn", 0, cert | cert<<2, vals("dev-1/x"), vals("dev-1")},
		{"slash-uri-allowed", 6, cert | cert<<2 | 1<<4, vals("", "", "", "", "spiffe://td/a"), vals("", "", "", "", "spiffe://td/a/b")},
		{"cert-vs-psk", 4, cert | psk<<2, vals("psk-dev-1"), vals("", "", "", "", "", "", "dev-1")},
		{"cert-vs-pinned", 5, cert | pinned<<2, vals("key-gw"), vals("", "", "", "", "", "", "", "gw")},
		{"two-cns", 0, cert | cert<<2 | 1<<5, vals("victim"), vals("victim")},
		{"fingerprint-both", 8, cert | pinned<<2, vals("", "", "", "", "", "", "", "", "ab12"), vals("", "", "", "", "", "", "", "", "ab12")},
		{"control", 0, cert | cert<<2, vals("dev\x01"), vals("dev")},
		{"invalid-utf8", 10, pinned | pinned<<2, vals("", "", "", "", "", "", "", "\xff"), vals("", "", "", "", "", "", "", "gw")},
		{"wrapped-literals", 13, cert | cert<<2, vals("aba", "b"), vals("", "bab")},
	}
}

func TestFuzzCorpus(t *testing.T) {
	files := map[string][]byte{}
	for _, s := range fixedHeaderSeeds() {
		files["FuzzParseFixedHeader/"+s.name] = corpusFile(fmt.Sprintf("[]byte(%q)", s.in))
	}
	for _, s := range connectSeeds() {
		files["FuzzParseConnect/"+s.name] = corpusFile(fmt.Sprintf("[]byte(%q)", s.pkt))
	}
	for _, s := range bindSeeds() {
		files["FuzzBind/"+s.name] = corpusFile(fmt.Sprintf("[]byte(%q)", s.pkt), fmt.Sprintf("uint16(%d)", s.modes), fmt.Sprintf("string(%q)", s.cn))
	}
	for _, s := range renderSeeds() {
		files["FuzzRenderIdentity/"+s.name] = corpusFile(fmt.Sprintf("byte(%d)", s.tmpl), fmt.Sprintf("byte(%d)", s.bits), fmt.Sprintf("string(%q)", s.a), fmt.Sprintf("string(%q)", s.b))
	}
	for name, want := range files {
		path := filepath.Join("testdata", "fuzz", filepath.FromSlash(name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale; run go test -run TestFuzzCorpus -update ./policy/", path)
		}
	}
}

// corpusFile is the "go test fuzz v1" encoding of one seed, one Go literal per argument.
func corpusFile(args ...string) []byte {
	return []byte("go test fuzz v1\n" + strings.Join(args, "\n") + "\n")
}
