package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestReadmeFlags keeps README.md's flag table in step with Settings: every flag serve has
// is a row, and every row is a flag serve has.
func TestReadmeFlags(t *testing.T) {
	var documented []string
	row := regexp.MustCompile("^\\| (`--[a-z-]+`(?:, `--[a-z-]+`)*) \\|")
	for _, line := range strings.Split(readme(t), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			for _, f := range strings.Split(m[1], ", ") {
				documented = append(documented, strings.Trim(f, "`")[2:])
			}
		}
	}
	var flags []string
	for _, s := range Settings {
		flags = append(flags, s.Flag)
	}
	for _, f := range flags {
		if !slices.Contains(documented, f) {
			t.Errorf("serve flag --%s is missing from README.md's flag table", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(flags, f) {
			t.Errorf("README.md's flag table lists --%s, which serve does not have", f)
		}
	}
}

// TestReadmeConfigKeys keeps the README's config file reference complete: every key the
// file accepts appears in it, and the sample parses as a valid file (so a key the schema
// does not have is an error: unknown keys are).
func TestReadmeConfigKeys(t *testing.T) {
	_, rest, ok := strings.Cut(readme(t), "## Config file")
	if !ok {
		t.Fatal("README.md has no \"## Config file\" section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	sample, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the Config file section has no ```yaml block")
	}
	for _, k := range yamlKeys(reflect.TypeOf(File{}), "") {
		leaf := k[strings.LastIndexByte(k, '.')+1:]
		if !regexp.MustCompile(`(?m)^\s*(- )?` + regexp.QuoteMeta(leaf) + `:`).MatchString(sample) {
			t.Errorf("config key %q is missing from README.md's config reference", k)
		}
	}
	// The sample names files that do not exist here; it must still parse and validate.
	if _, err := Parse("README.md", []byte(sample)); err != nil {
		t.Errorf("README.md's config sample does not validate: %v", err)
	}
}

// TestSettingsMatchSchema keeps the flags and the file's keys from drifting apart: every
// setting names a key the schema has, and every key of the schema has a flag, except the
// few FileOnlyKeys.
func TestSettingsMatchSchema(t *testing.T) {
	flagged := map[string]bool{}
	for _, s := range Settings {
		var root reflect.Value
		switch s.Scope {
		case FlagOnly:
			if s.Key != "" {
				t.Errorf("flag-only --%s names key %s", s.Flag, s.Key)
			}
			continue
		case TopLevel:
			root = reflect.ValueOf(File{})
		case InListener:
			root = reflect.ValueOf(Listener{})
		}
		f := field(root, s.Key)
		if !f.IsValid() {
			t.Errorf("--%s names key %s, which the schema does not have", s.Flag, s.Key)
			continue
		}
		if f.Kind() == reflect.Struct {
			t.Errorf("--%s names %s, a section rather than a key", s.Flag, s.Key)
		}
		path := s.Key
		if s.Scope == InListener {
			path = "listeners." + s.Key
		}
		if flagged[path] {
			t.Errorf("two flags set key %s", path)
		}
		flagged[path] = true
	}
	for _, k := range yamlKeys(reflect.TypeOf(File{}), "") {
		if k == "listeners" || k == "admin" || k == "log" || isSection(k) {
			continue
		}
		if !flagged[k] && !slices.Contains(FileOnlyKeys, strings.TrimPrefix(k, "listeners.")) {
			t.Errorf("config key %s has no flag: add a Setting for it, or list it in FileOnlyKeys", k)
		}
	}
}

// isSection reports whether key path k names a struct of the schema rather than a value.
func isSection(k string) bool {
	v := reflect.ValueOf(File{})
	if rest, ok := strings.CutPrefix(k, "listeners."); ok {
		v, k = reflect.ValueOf(Listener{}), rest
	}
	f := field(v, k)
	return f.IsValid() && f.Kind() == reflect.Struct
}

// yamlKeys returns every yaml key path in t, recursively ("listeners.tls.cert").
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeOf(Duration(0)) {
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, prefix+name)
		keys = append(keys, yamlKeys(f.Type, prefix+name+".")...)
	}
	return keys
}

// TestYAMLTypesNamed: every struct of the config file has a name for decoding errors, so
// no message shows a Go type ("config.TLS") to the operator.
func TestYAMLTypesNamed(t *testing.T) {
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		if _, ok := yamlTypes[typ.Name()]; !ok {
			t.Errorf("yamlTypes has no name for %s", typ.Name())
		}
		for i := range typ.NumField() {
			walk(typ.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(File{}))
}
