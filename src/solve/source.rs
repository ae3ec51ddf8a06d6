//! Where in a frontend's source an error comes from. BuildKit attaches an
//! `errdefs.Source` to a failed Solve's gRPC status (the Dockerfile and the
//! line of the instruction); strata puts it in front of the error as
//! `Dockerfile:3`, as editors and buildctl name places. BuildKit encodes it
//! as protobuf or, as daemons of the 0.13 line do, as JSON (`…Source+json`).

use prost::Message;

use crate::wire::errdefs::Source;
use crate::wire::google::rpc::Status as RpcStatus;

/// `FILE:LINE` of the first source location `status` carries, if any.
pub(super) fn location(status: &tonic::Status) -> Option<String> {
    let details = RpcStatus::decode(status.details()).ok()?;
    details.details.iter().find_map(|any| {
        let (file, line) = if any.type_url.ends_with("errdefs.Source+json") {
            from_json(&any.value)?
        } else if any.type_url.ends_with("errdefs.Source") {
            let source = Source::decode(any.value.as_slice()).ok()?;
            let line = source.ranges.first()?.start.as_ref()?.line;
            (source.info?.filename, i64::from(line))
        } else {
            return None;
        };
        Some(format!("{file}:{line}"))
    })
}

/// `{"info":{"filename":…},"ranges":[{"start":{"line":N}}]}`.
fn from_json(value: &[u8]) -> Option<(String, i64)> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let file = v["info"]["filename"].as_str()?.to_owned();
    let line = v["ranges"][0]["start"]["line"].as_i64()?;
    Some((file, line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{Position, Range, SourceInfo};

    #[test]
    fn names_the_file_and_line_of_a_source_detail() {
        let source = Source {
            info: Some(SourceInfo {
                filename: "Dockerfile".into(),
                ..Default::default()
            }),
            ranges: vec![Range {
                start: Some(Position {
                    line: 3,
                    character: 0,
                }),
                end: None,
            }],
        };
        let details = RpcStatus {
            code: 2,
            message: "x".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/errdefs.Source".into(),
                value: source.encode_to_vec(),
            }],
        };
        let status =
            tonic::Status::with_details(tonic::Code::Unknown, "x", details.encode_to_vec().into());
        assert_eq!(location(&status).as_deref(), Some("Dockerfile:3"));
        let json = br#"{"info":{"filename":"Bad.dockerfile","data":"RlJPTQ=="},"ranges":[{"start":{"line":3},"end":{"line":3}}]}"#;
        let details = RpcStatus {
            code: 2,
            message: "x".into(),
            details: vec![prost_types::Any {
                type_url: "github.com/moby/buildkit/errdefs.Source+json".into(),
                value: json.to_vec(),
            }],
        };
        let status =
            tonic::Status::with_details(tonic::Code::Unknown, "x", details.encode_to_vec().into());
        assert_eq!(location(&status).as_deref(), Some("Bad.dockerfile:3"));
        assert_eq!(location(&tonic::Status::unknown("plain")), None);
    }
}
