//! buildctl's option syntax, `type=KIND,KEY=VALUE,…`, as `--output`,
//! `--cache-to` and `--cache-from` take it: split once, checked against what
//! the kind knows, taken apart key by key.

use std::collections::BTreeMap;

/// Why an option value could not be parsed: the flag, the value, the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {reason}")]
pub struct OptionError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl OptionError {
    pub fn new(flag: &'static str, value: &str, reason: impl Into<String>) -> Self {
        OptionError {
            flag,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Attributes whose value is a comma-separated list (`mounts=apt,pip`).
const LISTS: &[&str] = &["mounts"];

/// `KEY=VALUE,…` with `type` taken out, checked against the attributes the type knows.
pub(crate) struct Attrs {
    flag: &'static str,
    value: String,
    /// The `type=` value.
    pub kind: String,
    /// The other attributes, as yet untaken.
    pub map: BTreeMap<String, String>,
}

impl Attrs {
    /// Splits `value`; `kinds` lists the types for the error when `type=` is missing.
    pub fn parse(flag: &'static str, value: &str, kinds: &str) -> Result<Attrs, OptionError> {
        let mut attrs = Attrs {
            flag,
            value: value.to_owned(),
            kind: String::new(),
            map: BTreeMap::new(),
        };
        let mut last = String::new();
        for part in value.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                // `mounts=apt,pip`: a list goes on until the next KEY=VALUE.
                match attrs.map.get_mut(&last).filter(|_| LISTS.contains(&&*last)) {
                    Some(list) => {
                        list.push(',');
                        list.push_str(part.trim());
                        continue;
                    }
                    None => return Err(attrs.error(format!("{part:?} is not KEY=VALUE"))),
                }
            };
            last = k.trim().to_owned();
            attrs.map.insert(last.clone(), v.trim().to_owned());
        }
        attrs.kind = attrs
            .map
            .remove("type")
            .ok_or_else(|| attrs.error(format!("missing type= ({kinds})")))?;
        Ok(attrs)
    }

    pub fn error(&self, reason: impl Into<String>) -> OptionError {
        OptionError::new(self.flag, &self.value, reason)
    }

    pub fn allow(&self, known: &[&[&str]]) -> Result<(), OptionError> {
        let known: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(self.error(format!(
                "unknown attribute {unknown:?} for type={} (known: {})",
                self.kind,
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn take(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }

    pub fn need(&mut self, key: &str) -> Result<String, OptionError> {
        self.take(key)
            .ok_or_else(|| self.error(format!("type={} needs {key}=", self.kind)))
    }

    pub fn flag(&mut self, key: &str) -> Result<Option<bool>, OptionError> {
        match self.take(key).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(self.error(format!("{key} is true or false, not {other:?}"))),
        }
    }
}
