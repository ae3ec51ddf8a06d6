// Package packageurl is strata's stand-in for github.com/package-url/packageurl-go,
// which Debian does not package. It covers what BuildKit uses (image references
// in provenance attestations): building a package URL ("purl") and parsing one.
//
// Format (https://github.com/package-url/purl-spec):
//
//	pkg:TYPE/NAMESPACE/NAME@VERSION?KEY=VALUE&...#SUBPATH
//
// Path segments are percent-encoded like URL path segments, qualifier values
// like URL query values (so "linux/amd64" becomes "linux%2Famd64"); qualifiers
// are written sorted by key.
package packageurl

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Package types BuildKit uses, plus a few common ones.
const (
	TypeDocker  = "docker"
	TypeOCI     = "oci"
	TypeGeneric = "generic"
	TypeDebian  = "deb"
	TypeGolang  = "golang"
	TypeNPM     = "npm"
	TypePyPi    = "pypi"
)

// Qualifier is one KEY=VALUE pair of the qualifiers part.
type Qualifier struct {
	Key   string
	Value string
}

func (q Qualifier) String() string {
	return q.Key + "=" + url.QueryEscape(q.Value)
}

// Qualifiers is the ordered list of qualifiers of a package URL.
type Qualifiers []Qualifier

// QualifiersFromMap builds Qualifiers sorted by key.
func QualifiersFromMap(m map[string]string) Qualifiers {
	q := make(Qualifiers, 0, len(m))
	for k, v := range m {
		q = append(q, Qualifier{Key: k, Value: v})
	}
	sort.SliceStable(q, func(i, j int) bool { return q[i].Key < q[j].Key })
	return q
}

// Map returns the qualifiers as a map.
func (qq Qualifiers) Map() map[string]string {
	m := make(map[string]string, len(qq))
	for _, q := range qq {
		m[q.Key] = q.Value
	}
	return m
}

// String renders the qualifiers sorted by key, without empty values.
func (qq Qualifiers) String() string {
	sorted := make(Qualifiers, 0, len(qq))
	for _, q := range qq {
		if q.Value != "" {
			sorted = append(sorted, q)
		}
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })
	parts := make([]string, len(sorted))
	for i, q := range sorted {
		parts[i] = q.String()
	}
	return strings.Join(parts, "&")
}

// PackageURL is a parsed package URL.
type PackageURL struct {
	Type       string
	Namespace  string
	Name       string
	Version    string
	Qualifiers Qualifiers
	Subpath    string
}

// NewPackageURL returns a PackageURL with the given parts.
func NewPackageURL(purlType, namespace, name, version string, qualifiers Qualifiers, subpath string) *PackageURL {
	return &PackageURL{
		Type:       purlType,
		Namespace:  namespace,
		Name:       name,
		Version:    version,
		Qualifiers: qualifiers,
		Subpath:    subpath,
	}
}

// escapeSegments percent-encodes each "/"-separated segment of s, dropping empty ones.
func escapeSegments(s string) []string {
	var out []string
	for _, seg := range strings.Split(s, "/") {
		if seg != "" {
			out = append(out, url.PathEscape(seg))
		}
	}
	return out
}

// ToString renders the package URL in its canonical form.
func (p *PackageURL) ToString() string {
	var b strings.Builder
	b.WriteString("pkg:")
	b.WriteString(strings.ToLower(p.Type))
	b.WriteString("/")
	if ns := escapeSegments(p.Namespace); len(ns) > 0 {
		b.WriteString(strings.Join(ns, "/"))
		b.WriteString("/")
	}
	b.WriteString(url.PathEscape(p.Name))
	if p.Version != "" {
		b.WriteString("@")
		b.WriteString(url.PathEscape(p.Version))
	}
	if q := p.Qualifiers.String(); q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	if sub := escapeSegments(p.Subpath); len(sub) > 0 {
		b.WriteString("#")
		b.WriteString(strings.Join(sub, "/"))
	}
	return b.String()
}

func (p PackageURL) String() string {
	return p.ToString()
}

// unescapeSegments decodes and rejoins the "/"-separated segments of s.
func unescapeSegments(s string) (string, error) {
	var out []string
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			continue
		}
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return "", fmt.Errorf("invalid percent-encoding in %q: %w", seg, err)
		}
		out = append(out, dec)
	}
	return strings.Join(out, "/"), nil
}

// FromString parses a package URL.
func FromString(purl string) (PackageURL, error) {
	var p PackageURL
	rest, ok := strings.CutPrefix(purl, "pkg:")
	if !ok {
		return p, fmt.Errorf("purl %q: scheme is not \"pkg\"", purl)
	}

	rest, subpath, _ := strings.Cut(rest, "#")
	sub, err := unescapeSegments(subpath)
	if err != nil {
		return p, fmt.Errorf("purl %q: subpath: %w", purl, err)
	}
	p.Subpath = sub

	rest, rawQuery, _ := strings.Cut(rest, "?")
	if rawQuery != "" {
		values, err := url.ParseQuery(rawQuery)
		if err != nil {
			return p, fmt.Errorf("purl %q: qualifiers: %w", purl, err)
		}
		m := make(map[string]string, len(values))
		for k, v := range values {
			if len(v) > 0 && v[len(v)-1] != "" {
				m[strings.ToLower(k)] = v[len(v)-1]
			}
		}
		p.Qualifiers = QualifiersFromMap(m)
	}

	rest = strings.Trim(rest, "/")
	purlType, rest, ok := strings.Cut(rest, "/")
	if !ok || purlType == "" {
		return p, fmt.Errorf("purl %q: missing type or name", purl)
	}
	p.Type = strings.ToLower(purlType)

	rest = strings.TrimRight(rest, "/")
	namespace, nameVersion := "", rest
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		namespace, nameVersion = rest[:i], rest[i+1:]
	}
	if i := strings.LastIndex(nameVersion, "@"); i >= 0 {
		version, err := url.PathUnescape(nameVersion[i+1:])
		if err != nil {
			return p, fmt.Errorf("purl %q: version: %w", purl, err)
		}
		p.Version = version
		nameVersion = nameVersion[:i]
	}
	name, err := url.PathUnescape(nameVersion)
	if err != nil {
		return p, fmt.Errorf("purl %q: name: %w", purl, err)
	}
	if name == "" {
		return p, errors.New("purl " + purl + ": name is required")
	}
	p.Name = name
	if p.Namespace, err = unescapeSegments(namespace); err != nil {
		return p, fmt.Errorf("purl %q: namespace: %w", purl, err)
	}
	return p, nil
}
