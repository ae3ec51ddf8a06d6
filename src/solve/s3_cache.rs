//! A failed S3 cache export said in a line a user can act on. BuildKit's
//! text is the AWS SDK's (`operation error S3: HeadObject, https response
//! error StatusCode: 403, RequestID: …`) and names neither the bucket nor the
//! endpoint; strata knows both.

use super::{DaemonSaid, SolveError};
use crate::options::CacheExport;

/// The progress vertex BuildKit's s3 exporter runs under.
const EXPORT_STEP: &str = "exporting cache to Amazon S3";

/// `error` as an [`SolveError::S3Cache`] when it is the failure of one of
/// `exports`' S3 caches; otherwise `error` unchanged.
pub(super) fn explained(exports: &[CacheExport], error: SolveError) -> SolveError {
    let SolveError::StepFailed {
        name, error: text, ..
    } = &error
    else {
        return error;
    };
    let Some(cache) = exports.iter().find_map(|e| match e {
        CacheExport::S3 { cache, .. } => Some(cache),
        _ => None,
    }) else {
        return error;
    };
    if !name.starts_with(EXPORT_STEP) {
        return error;
    }
    SolveError::S3Cache {
        location: cache.location(),
        endpoint: cache
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("AWS ({})", cache.region.as_deref().unwrap_or("?"))),
        reason: reason(text),
        daemon: DaemonSaid(text.clone()),
    }
}

/// What went wrong, in a few words, from the SDK's text.
fn reason(text: &str) -> String {
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&[
        "StatusCode: 403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ]) {
        crate::options::ACCESS_DENIED.to_owned()
    } else if has(&["NoSuchBucket", "StatusCode: 404"]) {
        "no such bucket".to_owned()
    } else if has(&[
        "connection refused",
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection reset",
        "broken pipe",
        "closed network connection",
        "EOF",
    ]) {
        format!("could not reach the server ({})", last_words(text))
    } else {
        last_words(text)
    }
}

/// The innermost cause of a Go error chain (`a: b: c` → `c`).
fn last_words(text: &str) -> String {
    text.rsplit(": ").next().unwrap_or(text).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_s_words_become_a_reason() {
        let denied = "failed to check file presence in cache: operation error S3: HeadObject, \
                      https response error StatusCode: 403, RequestID: 18E, HostID: , \
                      api error Forbidden: Forbidden";
        assert!(reason(denied).starts_with("access denied"));
        let refused = "error writing layer blob: operation error S3: PutObject, exceeded \
                       maximum attempts, 3, https response error StatusCode: 0, RequestID: , \
                       HostID: , request send failed, Put \"http://127.0.0.1:9/b/k\": dial tcp \
                       127.0.0.1:9: connect: connection refused";
        assert_eq!(
            reason(refused),
            "could not reach the server (connection refused)"
        );
        // Cut while a blob was on its way.
        let cut = "error writing layer blob: operation error S3: PutObject, request send \
                   failed, Put \"http://127.0.0.1:9/b/k\": write tcp 127.0.0.1:5->127.0.0.1:9: \
                   write: broken pipe";
        assert_eq!(reason(cut), "could not reach the server (broken pipe)");
    }
}
