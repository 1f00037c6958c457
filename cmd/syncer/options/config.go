package options

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// LoadConfig reads the YAML file named by --config, keyed by flag name, and sets
// every flag that was not given on the command line. Unknown keys are errors, so a
// typo never silently falls back to a default.
func LoadConfig(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(data, &settings); err != nil {
		return fmt.Errorf("--config %s: not YAML: %w", path, err)
	}
	for key, value := range settings {
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return fmt.Errorf("--config %s: unknown setting %q", path, key)
		}
		if f.Changed {
			continue
		}
		if err := f.Value.Set(configValue(value)); err != nil {
			return fmt.Errorf("--config %s: %s: %w", path, key, err)
		}
	}
	return nil
}

// configValue renders a YAML value the way it would be written on the command line.
func configValue(v any) string {
	switch v := v.(type) {
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	case float64:
		// YAML numbers arrive as float64; print integers without an exponent.
		if v == float64(int64(v)) {
			return fmt.Sprintf("%d", int64(v))
		}
		return fmt.Sprint(v)
	default:
		return fmt.Sprint(v)
	}
}
