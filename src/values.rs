//! Values the command line reads (`--build-arg`, `--label`, `--secret`):
//! parsed whole or refused, never half-read and passed on. They live in the
//! library so one property test can feed every parser (tests/fuzz.rs).

use std::path::PathBuf;

use crate::spec::MAX_LABEL;

/// `KEY=VALUE` with a non-empty key without `=` or NUL (`--build-arg`).
pub fn parse_pair(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        Some((_, _)) if value.contains('\0') => Err(format!("{value:?}: a NUL byte")),
        _ => Err(format!("{value:?}: expected KEY=VALUE")),
    }
}

/// A label, `KEY=VALUE` as [`parse_pair`], at most [`MAX_LABEL`] bytes (the
/// image config travels in one gRPC message, and a daemon refuses big ones).
pub fn parse_label(value: &str) -> Result<(String, String), String> {
    let (k, v) = parse_pair(value)?;
    if k.len() + v.len() > MAX_LABEL {
        return Err(format!(
            "{} bytes: a label is at most {MAX_LABEL} bytes (name and value)",
            k.len() + v.len()
        ));
    }
    Ok((k, v))
}

/// `id=ID[,src=FILE]` (`source` for `src`; the file defaults to the id),
/// each key once, neither empty.
pub fn parse_secret(value: &str) -> Result<(String, PathBuf), String> {
    let (mut id, mut src): (Option<&str>, Option<&str>) = (None, None);
    for part in value.split(',') {
        let slot = match part.split_once('=') {
            Some(("id", v)) => (&mut id, v),
            Some(("src" | "source", v)) => (&mut src, v),
            _ => return Err(format!("{part:?}: expected id=ID,src=FILE")),
        };
        if slot.0.is_some() {
            return Err(format!("{part:?}: said twice"));
        }
        if slot.1.is_empty() || slot.1.contains('\0') {
            return Err(format!("{part:?}: an empty value or a NUL byte"));
        }
        *slot.0 = Some(slot.1);
    }
    match (id, src) {
        (Some(id), Some(src)) => Ok((id.to_owned(), PathBuf::from(src))),
        (Some(id), None) => Ok((id.to_owned(), PathBuf::from(id))),
        _ => Err("missing id= (expected id=ID,src=FILE)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_whole_or_refused() {
        assert_eq!(parse_pair("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        for bad in ["=x", "novalue", "A\0=b", "A=b\0"] {
            assert!(parse_pair(bad).is_err(), "{bad:?}");
        }
        assert!(parse_label(&format!("k={}", "v".repeat(MAX_LABEL))).is_err());
        assert_eq!(parse_secret("id=a").unwrap().1, PathBuf::from("a"));
        assert_eq!(
            parse_secret("id=a,source=/f").unwrap().1,
            PathBuf::from("/f")
        );
        for bad in [
            "id=a,src=",
            "id=",
            "id=a,id=b",
            "src=x",
            "id=a,x=y",
            "id=a,src=b,src=c",
        ] {
            assert!(parse_secret(bad).is_err(), "{bad:?}");
        }
    }
}
