// Package sql serves a jisr service from an existing PostgreSQL database
// without code (`jisr backend sql --config ministry.yaml`): a declarative
// mapping gives each method a parameterised SQL query (or, for a predicate,
// a SQL boolean expression) and maps the result's columns to fields of the
// reply. It talks to the database through a pgx pool with a statement
// timeout, in read-only transactions, and serves the standard gRPC health
// service (NOT_SERVING while the database does not answer) and reflection.
//
// Invariant: a mapping is checked whole before anything is served — every
// request field, reply field and column it names exists with a compatible
// type, and every query is prepared against the database with exactly the
// parameters and columns the mapping names — and a request's values reach
// the database only as bound parameters, never in the SQL text.
package sql

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Sentinel errors.
var (
	// ErrConfig is returned for a mapping file that cannot be served; the
	// message names the field.
	ErrConfig = errors.New("sql backend: invalid configuration")
	// ErrPlaintextNotLocal is returned for a backend without TLS asked to
	// listen on a non-loopback address.
	ErrPlaintextNotLocal = errors.New("sql backend: plaintext gRPC is allowed only on a loopback address; serve mTLS with the member's SVID")
)

// Config is a ministry's mapping file (ministry.yaml).
type Config struct {
	// Member is the federation member whose service this is.
	Member string `yaml:"member"`
	// Service is the full protobuf service name
	// (jisr.civilregistry.v1.CivilRegistry).
	Service string `yaml:"service"`
	// DescriptorSet optionally names a FileDescriptorSet (`buf build -o`)
	// holding Service, for a service not linked into jisr; relative to
	// the mapping file.
	DescriptorSet string `yaml:"descriptor_set"`
	// Register names the data in NotFound messages ("civil registry").
	Register string   `yaml:"register"`
	Database Database `yaml:"database"`
	// Methods maps each served method's name to its query. A method of the
	// service without a mapping answers Unimplemented.
	Methods map[string]Method `yaml:"methods"`

	dir string // the mapping file's directory
}

// Database says how to reach PostgreSQL.
type Database struct {
	// URL is a libpq connection string or URL; URLEnv names an environment
	// variable holding it instead (so that a password stays out of the file).
	URL    string `yaml:"url"`
	URLEnv string `yaml:"url_env"`
	// MaxConns bounds the pool (default 8).
	MaxConns int32 `yaml:"max_conns"`
	// StatementTimeout bounds every query, in the server
	// (statement_timeout) and in the backend (default 2s).
	StatementTimeout Duration `yaml:"statement_timeout"`
	// HealthInterval is how often the pool is pinged for the health
	// service (default 5s).
	HealthInterval Duration `yaml:"health_interval"`
}

// Method maps one method to SQL. Either SQL with Columns, or Predicate
// with From.
type Method struct {
	// Params are request field paths bound to $1, $2, … in order.
	Params []string `yaml:"params"`
	// SQL is a SELECT with $n placeholders only.
	SQL string `yaml:"sql"`
	// Columns maps each result column to a reply field path
	// (person.names.latin.given). A path through a repeated message field
	// adds one element per row; without one, the query answers one row.
	Columns map[string]string `yaml:"columns"`
	// Predicate is a SQL boolean expression evaluated on From
	// ("NOT deceased" on "person WHERE eid = $1"); its value is the
	// reply's one bool field (or Field).
	Predicate string `yaml:"predicate"`
	From      string `yaml:"from"`
	Field     string `yaml:"field"`
}

// Duration reads "2s", "500ms" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads and checks a mapping file (unknown keys are refused).
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.dir = dirOf(path)
	return c, nil
}

// ParseConfig reads a mapping from YAML (unknown keys are refused).
func ParseConfig(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) check() error {
	switch {
	case c.Member == "":
		return fmt.Errorf("%w: member is required", ErrConfig)
	case c.Service == "":
		return fmt.Errorf("%w: service is required", ErrConfig)
	case len(c.Methods) == 0:
		return fmt.Errorf("%w: methods: at least one method is required", ErrConfig)
	case c.Database.MaxConns < 0:
		return fmt.Errorf("%w: database.max_conns must be positive", ErrConfig)
	case c.Database.StatementTimeout < 0 || c.Database.HealthInterval < 0:
		return fmt.Errorf("%w: database durations must be positive", ErrConfig)
	}
	if c.Register == "" {
		c.Register = c.Member
	}
	if c.Database.MaxConns == 0 {
		c.Database.MaxConns = 8
	}
	if c.Database.StatementTimeout == 0 {
		c.Database.StatementTimeout = Duration(2 * time.Second)
	}
	if c.Database.HealthInterval == 0 {
		c.Database.HealthInterval = Duration(5 * time.Second)
	}
	for name, m := range c.Methods {
		switch {
		case m.SQL != "" && m.Predicate != "":
			return fmt.Errorf("%w: methods.%s: sql and predicate exclude each other", ErrConfig, name)
		case m.SQL != "" && (len(m.Columns) == 0 || m.From != "" || m.Field != ""):
			return fmt.Errorf("%w: methods.%s: sql needs columns (and takes no from or field)", ErrConfig, name)
		case m.Predicate != "" && (m.From == "" || len(m.Columns) != 0):
			return fmt.Errorf("%w: methods.%s: predicate needs from (and takes no columns)", ErrConfig, name)
		case m.SQL == "" && m.Predicate == "":
			return fmt.Errorf("%w: methods.%s: sql or predicate is required", ErrConfig, name)
		}
	}
	return nil
}

// URL returns the connection string, from the file or its environment
// variable.
func (d Database) url() (string, error) {
	switch {
	case d.URL != "" && d.URLEnv != "":
		return "", fmt.Errorf("%w: database: url and url_env exclude each other", ErrConfig)
	case d.URLEnv != "":
		if v := os.Getenv(d.URLEnv); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%w: database.url_env: $%s is empty", ErrConfig, d.URLEnv)
	case d.URL != "":
		return d.URL, nil
	}
	return "", fmt.Errorf("%w: database.url or database.url_env is required", ErrConfig)
}
