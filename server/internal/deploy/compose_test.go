package deploy

import (
	"bufio"
	"bytes"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/retryhub/retryhub/server/internal/config"
)

// compose is the part of a Compose file the checks read.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string               `yaml:"image"`
	Build       *build               `yaml:"build"`
	Environment map[string]string    `yaml:"environment"`
	Command     []string             `yaml:"command"`
	DependsOn   map[string]dependsOn `yaml:"depends_on"`
	Healthcheck *healthcheck         `yaml:"healthcheck"`
	Ports       []string             `yaml:"ports"`
	Volumes     []string             `yaml:"volumes"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

type dependsOn struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test     []string `yaml:"test"`
	Interval string   `yaml:"interval"`
	Timeout  string   `yaml:"timeout"`
	Retries  int      `yaml:"retries"`
}

// repoRoot is the directory holding go.work, above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test's directory")
		}
		dir = parent
	}
}

func loadCompose(t *testing.T, root string) compose {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("read docker-compose.yml: %v", err)
	}
	var c compose
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(false) // restart, x- extensions and the like are Compose's, not checked here
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolate expands Compose's ${VAR}, ${VAR:-default} and $VAR as an empty host
// environment would: each to its default, or to nothing; $$ is a literal $.
func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		return interpolation.FindStringSubmatch(m)[2]
	})
}

// stage is one FROM of a Dockerfile, with its COPY instructions.
type stage struct {
	name   string
	copies []copyInstr
}

type copyInstr struct {
	line    int
	from    string   // --from, empty for the build context
	sources []string // every argument but the last
	dest    string
}

// parseDockerfile reads the stages and COPY instructions, joining continued lines.
func parseDockerfile(t *testing.T, p string) []stage {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	var stages []stage
	var logical strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if logical.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if logical.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			logical.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		logical.WriteString(line)
		fields := strings.Fields(logical.String())
		logical.Reset()
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			st := stage{}
			if len(fields) >= 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			stages = append(stages, st)
		case "COPY", "ADD":
			if len(stages) == 0 {
				t.Fatalf("%s:%d: %s before FROM", p, start, fields[0])
			}
			ci := copyInstr{line: start}
			args := fields[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				if v, ok := strings.CutPrefix(args[0], "--from="); ok {
					ci.from = v
				}
				args = args[1:]
			}
			if len(args) < 2 {
				t.Fatalf("%s:%d: %s needs a source and a destination", p, start, fields[0])
			}
			ci.sources, ci.dest = args[:len(args)-1], args[len(args)-1]
			last := &stages[len(stages)-1]
			last.copies = append(last.copies, ci)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// dockerignore reads the patterns of a .dockerignore (none when there is no file).
func dockerignore(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ".dockerignore"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			pats = append(pats, line)
		}
	}
	return pats
}

// ignored says whether a context path, or a directory above it, matches an exclusion. It
// knows the patterns the repository's .dockerignore uses: names, globs and **/ prefixes; a
// pattern starting with ! fails the test, as the check would need the exception rules.
func ignored(t *testing.T, pats []string, rel string) bool {
	t.Helper()
	rel = path.Clean(strings.TrimPrefix(filepath.ToSlash(rel), "./"))
	parts := strings.Split(rel, "/")
	for _, p := range pats {
		if strings.HasPrefix(p, "!") {
			t.Fatalf(".dockerignore exception %q: the check does not know the exception rules", p)
		}
		p = strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/")
		anyDepth := strings.HasPrefix(p, "**/")
		p = strings.TrimPrefix(p, "**/")
		for i := 1; i <= len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			cands := []string{prefix}
			if anyDepth {
				for j := range i {
					cands = append(cands, strings.Join(parts[j:i], "/"))
				}
			}
			for _, c := range cands {
				if ok, _ := path.Match(p, c); ok {
					return true
				}
			}
		}
	}
	return false
}

var flagDef = regexp.MustCompile(`flag\.\w+\((?:&[\w.]+,\s*)?"([\w-]+)"`)

// flagsOf lists the flags a command's main.go defines.
func flagsOf(t *testing.T, mainGo string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(mainGo)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range flagDef.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatalf("%s defines no flags", mainGo)
	}
	return out
}

// commandFlags reads -name=value and -name value arguments.
func commandFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Fatalf("command argument %q is not a flag", a)
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			val = args[i+1]
			i++
		}
		out[name] = val
	}
	return out
}

// The binaries a stage holds, by the path it copies them to.
func stageBinaries(st stage) []string {
	var out []string
	for _, c := range st.copies {
		if c.from != "" && strings.HasPrefix(c.dest, "/usr/local/bin/") {
			out = append(out, c.dest)
		}
	}
	return out
}

func TestComposeFile(t *testing.T) {
	root := repoRoot(t)
	c := loadCompose(t, root)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range c.Services {
			if !yield(n) {
				return
			}
		}
	})

	// What the issue asks for: MySQL 8, two server nodes, the order service, a mail catcher.
	var servers, mysql, orders, mail []string
	for _, n := range names {
		s := c.Services[n]
		switch {
		case s.Build != nil && s.Build.Target == "server":
			servers = append(servers, n)
		case s.Build != nil && s.Build.Target == "orders":
			orders = append(orders, n)
		case strings.HasPrefix(s.Image, "mysql:8"):
			mysql = append(mysql, n)
		case strings.Contains(s.Image, "mailpit"):
			mail = append(mail, n)
		}
	}
	if len(servers) != 2 || len(mysql) != 1 || len(orders) != 1 || len(mail) != 1 {
		t.Fatalf("services: servers %v, mysql %v, orders %v, mail %v; want two servers and one of each other", servers, mysql, orders, mail)
	}

	stagesByFile := map[string][]stage{}
	for _, n := range names {
		s := c.Services[n]
		t.Run(n, func(t *testing.T) {
			switch {
			case s.Build != nil:
				ctx := filepath.Join(root, s.Build.Context)
				if fi, err := os.Stat(ctx); err != nil || !fi.IsDir() {
					t.Fatalf("build context %q: not a directory (%v)", s.Build.Context, err)
				}
				df := s.Build.Dockerfile
				if df == "" {
					df = "Dockerfile"
				}
				dfPath := filepath.Join(ctx, df)
				stages, ok := stagesByFile[dfPath]
				if !ok {
					stages = parseDockerfile(t, dfPath)
					stagesByFile[dfPath] = stages
				}
				if s.Build.Target != "" && !slices.ContainsFunc(stages, func(st stage) bool { return st.name == s.Build.Target }) {
					t.Errorf("build target %q is no stage of %s", s.Build.Target, df)
				}
			case s.Image != "":
				if !strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest") {
					t.Errorf("image %q: pin a version tag", s.Image)
				}
			default:
				t.Error("neither image nor build")
			}
			for dep, d := range s.DependsOn {
				target, ok := c.Services[dep]
				if !ok {
					t.Errorf("depends_on %q: no such service", dep)
					continue
				}
				switch d.Condition {
				case "service_healthy":
					if target.Healthcheck == nil {
						t.Errorf("depends_on %q with service_healthy, but %q has no healthcheck", dep, dep)
					}
				case "", "service_started", "service_completed_successfully":
				default:
					t.Errorf("depends_on %q: unknown condition %q", dep, d.Condition)
				}
			}
			if h := s.Healthcheck; h != nil {
				if len(h.Test) < 2 || (h.Test[0] != "CMD" && h.Test[0] != "CMD-SHELL") {
					t.Errorf("healthcheck test %q: want [CMD, …] or [CMD-SHELL, …]", h.Test)
				}
				if h.Interval == "" || h.Retries < 1 {
					t.Errorf("healthcheck: set interval and retries")
				}
			}
			for _, v := range s.Volumes {
				name, _, _ := strings.Cut(v, ":")
				if !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "/") {
					if _, ok := c.Volumes[name]; !ok {
						t.Errorf("volume %q is not declared under volumes", name)
					}
				}
			}
		})
	}

	// MySQL: pinged over TCP, so the image's initialisation server does not pass for ready.
	if h := c.Services[mysql[0]].Healthcheck; h == nil || !strings.Contains(strings.Join(h.Test, " "), "mysqladmin ping") {
		t.Errorf("%s: want a mysqladmin ping healthcheck", mysql[0])
	}

	// The servers: every RETRYHUB_ variable is a configuration key, and the environment, as a
	// host without overrides expands it, loads and validates as the server would load it.
	known := map[string]string{}
	for _, k := range config.Keys() {
		known[k[1]] = k[0]
	}
	serverFlags := flagsOf(t, filepath.Join(root, "server/cmd/retryhub-server/main.go"))
	var bootstrap config.Bootstrap
	advertised := map[string]bool{}
	for _, n := range servers {
		s := c.Services[n]
		t.Run(n+"/config", func(t *testing.T) {
			var environ []string
			for k, v := range s.Environment {
				if _, ok := known[k]; !ok {
					t.Errorf("environment %s is not a configuration key (see retryhub-server -keys)", k)
				}
				environ = append(environ, k+"="+interpolate(v))
			}
			sort.Strings(environ)
			cfg, err := config.Load("", environ)
			if err != nil {
				t.Fatalf("the server would not start with this environment: %v", err)
			}
			dsn, err := config.ParseDSN(cfg.Database.DSN)
			if err != nil || dsn.Driver != config.MySQL {
				t.Fatalf("database.dsn %q: want the MySQL service (%v)", cfg.Database.DSN, err)
			}
			host, _, _ := strings.Cut(dsn.MySQL.Addr, ":")
			if host != mysql[0] {
				t.Errorf("database.dsn reaches %q, want the service %q", dsn.MySQL.Addr, mysql[0])
			}
			if dsn.MySQL.DBName != interpolate(c.Services[mysql[0]].Environment["MYSQL_DATABASE"]) ||
				dsn.MySQL.User != interpolate(c.Services[mysql[0]].Environment["MYSQL_USER"]) ||
				dsn.MySQL.Passwd != interpolate(c.Services[mysql[0]].Environment["MYSQL_PASSWORD"]) {
				t.Errorf("database.dsn's database, user or password is not the one the MySQL service creates")
			}
			if cfg.Bootstrap.GroupToken == "" {
				t.Error("bootstrap.group_token is empty: the order service could not know the generated token")
			}
			if bootstrap == (config.Bootstrap{}) {
				bootstrap = cfg.Bootstrap
			} else if cfg.Bootstrap != bootstrap {
				t.Errorf("bootstrap differs between the server nodes: %+v and %+v", cfg.Bootstrap, bootstrap)
			}
			if cfg.Server.NodeID == "" || advertised[cfg.Server.Advertise] {
				t.Errorf("server.node_id %q, server.advertise %q: want each node its own", cfg.Server.NodeID, cfg.Server.Advertise)
			}
			advertised[cfg.Server.Advertise] = true
			if h, _, _ := strings.Cut(cfg.Server.Advertise, ":"); h != n {
				t.Errorf("server.advertise %q does not name the service %q", cfg.Server.Advertise, n)
			}
			_, port, _ := strings.Cut(cfg.Server.Listen, ":")
			if !slices.ContainsFunc(s.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
				t.Errorf("ports %v publish no port %s (server.listen)", s.Ports, port)
			}

			// The healthcheck runs the binary the server stage holds, with its -healthcheck flag.
			h := s.Healthcheck
			if h == nil {
				t.Fatal("no healthcheck")
			}
			stages := stagesByFile[filepath.Join(root, s.Build.Context, s.Build.Dockerfile)]
			i := slices.IndexFunc(stages, func(st stage) bool { return st.name == s.Build.Target })
			if i < 0 {
				t.Fatalf("no stage %q", s.Build.Target)
			}
			if h.Test[0] != "CMD" || len(h.Test) != 3 || !slices.Contains(stageBinaries(stages[i]), h.Test[1]) ||
				!serverFlags[strings.TrimLeft(h.Test[2], "-")] || h.Test[2] != "-healthcheck" {
				t.Errorf("healthcheck %q: want [CMD, the server binary of stage %q %v, -healthcheck]", h.Test, s.Build.Target, stageBinaries(stages[i]))
			}
		})
	}

	// The order service: its flags exist, it reports to the server services with the token
	// and the namespace and group the servers bootstrap.
	o := c.Services[orders[0]]
	t.Run(orders[0]+"/wiring", func(t *testing.T) {
		defined := flagsOf(t, filepath.Join(root, "examples/cmd/orders/main.go"))
		flags := commandFlags(t, o.Command)
		for f := range flags {
			if !defined[f] {
				t.Errorf("command flag -%s: examples/cmd/orders defines no such flag", f)
			}
		}
		for k := range o.Environment {
			if k != "RETRYHUB_TOKEN" {
				t.Errorf("environment %s: the order service reads only RETRYHUB_TOKEN", k)
			}
		}
		if got := interpolate(o.Environment["RETRYHUB_TOKEN"]); got != bootstrap.GroupToken {
			t.Errorf("RETRYHUB_TOKEN %q is not the servers' bootstrap.group_token %q", got, bootstrap.GroupToken)
		}
		if flags["namespace"] != bootstrap.Namespace || flags["group"] != bootstrap.Group {
			t.Errorf("-namespace %q -group %q: want the bootstrap %q/%q", flags["namespace"], flags["group"], bootstrap.Namespace, bootstrap.Group)
		}
		var reached []string
		for _, u := range strings.Split(flags["server"], ",") {
			p, err := url.Parse(u)
			if err != nil || p.Scheme != "http" {
				t.Errorf("-server %q: want http URLs", u)
				continue
			}
			if _, ok := c.Services[p.Hostname()]; !ok {
				t.Errorf("-server %q: no service %q", u, p.Hostname())
			}
			reached = append(reached, p.Hostname())
			if d, ok := o.DependsOn[p.Hostname()]; !ok || d.Condition != "service_healthy" {
				t.Errorf("the order service should wait for %s to be healthy", p.Hostname())
			}
		}
		sort.Strings(reached)
		if !slices.Equal(reached, servers) {
			t.Errorf("-server reaches %v, want every server node %v", reached, servers)
		}
		if flags["listen"] == "" || strings.HasPrefix(flags["listen"], "127.") || strings.HasPrefix(flags["listen"], "localhost:") {
			t.Errorf("-listen %q: the executor endpoint must be reachable from the server containers", flags["listen"])
		}
	})
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	pats := dockerignore(t, root)
	seen := map[string]bool{}
	copies := 0
	for _, st := range stages {
		for _, c := range st.copies {
			copies++
			if c.from != "" {
				if !seen[c.from] {
					t.Errorf("line %d: COPY --from=%s: no earlier stage of that name", c.line, c.from)
				}
				continue
			}
			for _, src := range c.sources {
				if strings.ContainsAny(src, "*?[") {
					t.Errorf("line %d: COPY %s: the check reads plain paths only", c.line, src)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("line %d: COPY source %s: %v", c.line, src, err)
				}
				if ignored(t, pats, src) {
					t.Errorf("line %d: COPY source %s is excluded by .dockerignore", c.line, src)
				}
			}
		}
		if st.name != "" {
			seen[st.name] = true
		}
	}
	if copies == 0 {
		t.Fatal("the Dockerfile copies nothing")
	}
	// The embedded console must be in the context: the image has no Node stage to build it.
	for _, p := range []string{"server/internal/web/static", "server/go.mod", "client-sdk/go.mod", "examples/go.mod"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if ignored(t, pats, p) {
			t.Errorf("%s is excluded by .dockerignore", p)
		}
	}
}

func TestIgnored(t *testing.T) {
	pats := []string{".git", "web", "**/*.test", "bin/"}
	for _, c := range []struct {
		path string
		want bool
	}{
		{".git/config", true}, {"web", true}, {"web/src/main.ts", true}, {"server/web", false},
		{"server/x.test", true}, {"x.test", true}, {"bin", true}, {"server/go.mod", false},
		{"./server/", false},
	} {
		if got := ignored(t, pats, c.path); got != c.want {
			t.Errorf("ignored(%q) = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestInterpolate(t *testing.T) {
	for in, want := range map[string]string{
		"${A:-x}":          "x",
		"${A-y}/z":         "y/z",
		"a${B}b":           "ab",
		"$$HOME":           "$HOME",
		"p:${P:-p w}@tcp(": "p:p w@tcp(",
		"$X.y":             ".y",
	} {
		if got := interpolate(in); got != want {
			t.Errorf("interpolate(%q) = %q, want %q", in, got, want)
		}
	}
}
