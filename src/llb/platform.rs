//! Target platforms (`linux/amd64`, `linux/arm64/v8`).

use std::fmt;
use std::str::FromStr;

use crate::wire::pb;

/// An OS/architecture pair, as OCI and BuildKit name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// The platform of the machine strata runs on (builds default to it, as with buildctl).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: String::new(),
        }
    }

    pub(crate) fn to_pb(&self) -> pb::Platform {
        pb::Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Operating systems Go (and so OCI and containerd) names.
const KNOWN_OS: [&str; 17] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go names, after [`normalize_arch`].
const KNOWN_ARCH: [&str; 25] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
    "wasm32",
];

/// containerd's normalisation of an architecture and its variant: the names
/// `uname -m` and Debian use map to OCI's, and a variant that says nothing
/// more than the default is dropped (`arm64/v8` is `arm64`).
pub fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    let (arch, variant) = match (arch.as_str(), variant.as_str()) {
        ("i386", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", ""),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", "5" | "6" | "8") => return ("arm".into(), format!("v{variant}")),
        (a, v) => (a, v),
    };
    (arch.to_owned(), variant.to_owned())
}

impl FromStr for Platform {
    type Err = String;

    /// `os/arch[/variant]`, or an architecture alone (`arm64`: Linux), each
    /// part checked against the names OCI knows and normalised as
    /// containerd's platforms package does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(',') {
            return Err(format!(
                "{s:?} names several platforms where one is expected (a list is an array, or --platform a,b)"
            ));
        }
        let bad = |why: String| {
            format!("{s:?} is not a platform ({why}; expected OS/ARCH[/VARIANT], e.g. linux/amd64)")
        };
        let parts: Vec<&str> = s.split('/').collect();
        let well_formed = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        };
        if parts.len() > 3 || !parts.iter().all(well_formed) {
            return Err(bad("each part is letters, digits, '_', '-' or '.'".into()));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if KNOWN_OS.contains(&one.to_ascii_lowercase().as_str()) => {
                return Err(bad(format!("{one} is an OS: name its architecture too")))
            }
            [arch] => ("linux", *arch, ""),
            [os, arch] => (*os, *arch, ""),
            [os, arch, variant] => (*os, *arch, *variant),
            _ => unreachable!("1 to 3 parts"),
        };
        let mut os = os.to_ascii_lowercase();
        if os == "macos" {
            os = "darwin".into();
        }
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(bad(format!("unknown OS {os:?}")));
        }
        let (architecture, variant) = normalize_arch(arch, variant);
        if !KNOWN_ARCH.contains(&architecture.as_str()) {
            return Err(bad(format!("unknown architecture {arch:?}")));
        }
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

/// The platforms one image is built for: at least one, each once, in the
/// order given (the first is the one a single-platform consumer, such as
/// `--load`, falls back to when none matches).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platforms(Vec<Platform>);

impl Platforms {
    /// `platforms`, unless empty or naming one twice (after normalising).
    pub fn new(platforms: Vec<Platform>) -> Result<Self, String> {
        if platforms.is_empty() {
            return Err("no platform given".into());
        }
        for (i, p) in platforms.iter().enumerate() {
            if platforms[..i].contains(p) {
                return Err(format!("{p} is named twice"));
            }
        }
        Ok(Platforms(platforms))
    }

    pub fn one(platform: Platform) -> Self {
        Platforms(vec![platform])
    }

    pub fn first(&self) -> &Platform {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: kept for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Platform> {
        self.0.iter()
    }

    pub fn contains(&self, platform: &Platform) -> bool {
        self.0.contains(platform)
    }

    /// Whether every one of `self` is among `other`.
    pub fn within(&self, other: &Platforms) -> bool {
        self.0.iter().all(|p| other.contains(p))
    }
}

impl<'a> IntoIterator for &'a Platforms {
    type Item = &'a Platform;
    type IntoIter = std::slice::Iter<'a, Platform>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromStr for Platforms {
    type Err = String;

    /// A comma-separated list (`linux/amd64,linux/arm64`), as buildx and
    /// BuildKit's Dockerfile frontend take it: each entry a [`Platform`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = Vec::new();
        for entry in s.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("{s:?} has an empty entry"));
            }
            list.push(entry.parse::<Platform>()?);
        }
        Platforms::new(list).map_err(|why| format!("{s:?}: {why}"))
    }
}

/// As its string, `linux/arm64` (what `--metadata-file` and JSON reports show).
impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p: Platform = "linux/arm/v6".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v6");
        assert_eq!(
            "linux/amd64".parse::<Platform>().unwrap().architecture,
            "amd64"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//".parse::<Platform>().is_err());
    }

    #[test]
    fn normalises_as_containerd_does() {
        let p = |s: &str| s.parse::<Platform>().unwrap().to_string();
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("Linux/X86_64"), "linux/amd64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        assert_eq!(p("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/armel"), "linux/arm/v6");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("i386"), "linux/386");
        assert_eq!(p("macos/arm64"), "darwin/arm64");
    }

    #[test]
    fn refuses_what_is_not_one_known_platform() {
        let err = |s: &str| s.parse::<Platform>().unwrap_err();
        // The list once read as os "linux", arch "amd64,linux", variant "arm64".
        assert!(err("linux/amd64,linux/arm64").contains("several platforms"));
        assert!(err("linux/amd65").contains("unknown architecture \"amd65\""));
        assert!(err("lunix/amd64").contains("unknown OS \"lunix\""));
        assert!(err("linux").contains("is an OS"));
        assert!(err("linux/amd64/v3/x").contains("expected OS/ARCH[/VARIANT]"));
        assert!(err("linux/am d64").contains("letters, digits"));
        assert!(err("").contains("not a platform"));
    }

    #[test]
    fn lists_are_parsed_entry_by_entry() {
        let list: Platforms = "linux/amd64, aarch64".parse().unwrap();
        assert_eq!(list.to_string(), "linux/amd64,linux/arm64");
        assert_eq!(list.first().architecture, "amd64");
        let err = |s: &str| s.parse::<Platforms>().unwrap_err();
        assert!(err("linux/amd64,,linux/arm64").contains("empty entry"));
        assert!(err("linux/arm64,aarch64").contains("linux/arm64 is named twice"));
        assert!(err("linux/amd64,linux/amd65").contains("unknown architecture"));
        assert!(Platforms::new(Vec::new()).is_err());
    }
}
