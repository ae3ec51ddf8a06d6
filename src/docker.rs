//! The Docker Engine API over its unix socket, for what `--load` and
//! `strata images` need of a docker daemon's image store: an image's ID,
//! pulling from a registry, loading a tarball (streamed, never staged on
//! disk), tagging, listing and removing. A connection per request.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_stream::StreamExt;

use crate::credentials::DockerAuth;
use crate::reference::ImageRef;

/// How long connecting and the answer's headers may take (a pull or a load
/// then streams for as long as it needs).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pull or load may go without a progress message (docker sends
/// them at least every few seconds while it downloads or extracts).
const SILENCE: Duration = Duration::from_secs(120);
/// How long docker may take to answer once a load's tarball is all sent
/// (it unpacks every layer first: a 1.7 GB image took 28 s here).
const LOAD_SETTLE: Duration = Duration::from_secs(600);

/// Largest answer read whole (an image inspect, a list); progress streams
/// are read line by line.
const MAX_ANSWER: usize = 16 << 20;

/// Why a docker daemon could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the docker daemon at {}: {reason}", socket.display())]
    Unreachable { socket: PathBuf, reason: String },
    #[error("docker daemon at {}: {what} failed: {message}", socket.display())]
    Failed {
        socket: PathBuf,
        what: String,
        message: String,
    },
}

/// A docker daemon, by its API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Docker {
    socket: PathBuf,
}

/// One image of a docker daemon's store, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DockerImage {
    pub id: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
}

type Body = BoxBody<Bytes, io::Error>;

impl Docker {
    pub fn new(socket: impl Into<PathBuf>) -> Docker {
        Docker {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, reason: impl ToString) -> DockerError {
        DockerError::Unreachable {
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    fn failed(&self, what: &str, message: impl ToString) -> DockerError {
        DockerError::Failed {
            socket: self.socket.clone(),
            what: what.to_owned(),
            message: message.to_string(),
        }
    }

    /// Sends one request; the answer's status and body.
    async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<(StatusCode, hyper::body::Incoming), DockerError> {
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| self.unreachable(e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(format!("HTTP handshake: {e}")))?;
            tokio::spawn(conn);
            sender
                .send_request(request)
                .await
                .map_err(|e| self.unreachable(format!("no answer: {e}")))
        };
        // A load's body is sent while this waits: its headers come after it.
        let response = exchange.await?;
        Ok((response.status(), response.into_body()))
    }

    fn request(method: Method, path: &str, body: Body) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "docker")
            .body(body)
            .expect("a request of constant parts")
    }

    fn empty() -> Body {
        Empty::new().map_err(|never| match never {}).boxed()
    }

    /// A short call: `what` names it in errors; 404 is `None`.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
    ) -> Result<Option<Bytes>, DockerError> {
        let request = Self::request(method, path, Self::empty());
        // One deadline for the whole exchange, body too: a daemon that sends
        // headers and then trickles (or stalls) its body cannot hold us.
        let exchange = async {
            let (status, body) = self.send(request).await?;
            let bytes = read_capped(body, MAX_ANSWER)
                .await
                .map_err(|e| self.failed(what, e))?;
            Ok::<_, DockerError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                self.failed(what, format!("no whole answer within {ANSWER_TIMEOUT:?}"))
            })??;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(bytes)),
            s => Err(self.failed(what, format!("{s}: {}", api_message(&bytes)))),
        }
    }

    /// The ID of the image `name` names, if the daemon has it.
    pub async fn image_id(&self, name: &ImageRef) -> Result<Option<String>, DockerError> {
        let path = format!("/images/{}/json", escape(&name.to_string()));
        let Some(body) = self.call("image inspect", Method::GET, &path).await? else {
            return Ok(None);
        };
        let inspect: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.failed("image inspect", e))?;
        Ok(inspect["Id"].as_str().map(str::to_owned))
    }

    /// Makes `target` name the image `source` (an ID or name) names.
    pub async fn tag(&self, source: &str, target: &ImageRef) -> Result<(), DockerError> {
        let repo = target.name();
        let tag = target.tag.as_deref().unwrap_or("latest");
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            escape(source),
            escape(&repo),
            escape(tag)
        );
        match self.call("tag", Method::POST, &path).await? {
            Some(_) => Ok(()),
            None => Err(self.failed("tag", format!("no image {source}"))),
        }
    }

    /// Removes the tag `name` (and the image, when no other tag names it).
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let path = format!("/images/{}", escape(name));
        self.call("image remove", Method::DELETE, &path).await?;
        Ok(())
    }

    /// The images with a tag matching `pattern` (`REPO:strata-*`).
    pub async fn images(&self, pattern: &str) -> Result<Vec<DockerImage>, DockerError> {
        let filters = serde_json::json!({ "reference": [pattern] }).to_string();
        let path = format!("/images/json?filters={}", escape(&filters));
        let body = self
            .call("image list", Method::GET, &path)
            .await?
            .unwrap_or_default();
        let listed: Vec<serde_json::Value> =
            serde_json::from_slice(&body).map_err(|e| self.failed("image list", e))?;
        Ok(listed
            .iter()
            .map(|i| DockerImage {
                id: i["Id"].as_str().unwrap_or_default().to_owned(),
                tags: i["RepoTags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                created: i["Created"].as_i64().unwrap_or_default(),
            })
            .collect())
    }

    /// Has the daemon pull `image` from its registry (only the layers it
    /// lacks travel), with the user's credentials for that registry.
    pub async fn pull(&self, image: &ImageRef, auth: &DockerAuth) -> Result<(), DockerError> {
        // By digest when there is one ("tag" takes a tag or a digest).
        let tag = image
            .digest
            .as_deref()
            .or(image.tag.as_deref())
            .unwrap_or("latest");
        let path = format!(
            "/images/create?fromImage={}&tag={}",
            escape(&image.name()),
            escape(tag)
        );
        let mut request = Self::request(Method::POST, &path, Self::empty());
        if let Some(credential) = auth.credential(&image.registry).await {
            let json = serde_json::json!({
                "username": credential.username,
                "password": credential.secret,
                "serveraddress": image.registry,
            });
            let header = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE,
                json.to_string(),
            );
            let value = header.parse().map_err(|e| self.failed("pull", e))?;
            request.headers_mut().insert("X-Registry-Auth", value);
        }
        self.progress_call("pull", request, Some(ANSWER_TIMEOUT))
            .await
    }

    /// Loads a docker image tarball (`docker save` format) streamed from
    /// `tar`. An error in the stream aborts the request, so a cut-off
    /// tarball loads nothing.
    pub async fn load<S>(&self, tar: S) -> Result<(), DockerError>
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Send + Sync + 'static,
    {
        // The answer's headers come once the whole tarball is sent (as long
        // as the build takes): from then on, docker has LOAD_SETTLE to answer.
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
        let frames = tar.map(|chunk| chunk.map(Frame::data));
        let end = futures::stream::once(async move {
            let _ = sent_tx.send(());
        })
        .filter_map(|()| None::<Result<Frame<Bytes>, io::Error>>);
        let body = BodyExt::boxed(StreamBody::new(frames.chain(end)));
        let mut request = Self::request(Method::POST, "/images/load?quiet=1", body);
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-tar"),
        );
        let call = self.progress_call("load", request, None);
        tokio::pin!(call);
        tokio::select! {
            done = &mut call => return done,
            sent = sent_rx => if sent.is_err() { return call.await },
        }
        tokio::time::timeout(LOAD_SETTLE, call).await.map_err(|_| {
            self.failed(
                "load",
                format!("no answer within {LOAD_SETTLE:?} of the tarball's end"),
            )
        })?
    }

    /// A call whose answer is a stream of JSON progress messages, any of
    /// which may carry the error.
    /// The answer's headers must come within `first` (when given); then
    /// the daemon may be silent at most SILENCE between messages.
    async fn progress_call(
        &self,
        what: &str,
        request: Request<Body>,
        first: Option<Duration>,
    ) -> Result<(), DockerError> {
        let silent = |d: Duration| self.failed(what, format!("no answer for {d:?}"));
        let (status, mut body) = match first {
            Some(d) => tokio::time::timeout(d, self.send(request))
                .await
                .map_err(|_| silent(d))??,
            None => self.send(request).await?,
        };
        let mut pending = Vec::new();
        let mut error = None;
        loop {
            let frame = tokio::time::timeout(SILENCE, body.frame())
                .await
                .map_err(|_| silent(SILENCE))?;
            let Some(frame) = frame else {
                break;
            };
            let frame = frame.map_err(|e| self.failed(what, format!("reading the answer: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                error = error.or_else(|| progress_error(&line));
            }
            pending.truncate(MAX_ANSWER);
        }
        error = error.or_else(|| progress_error(&pending));
        match (status.is_success(), error) {
            (true, None) => Ok(()),
            (_, Some(message)) => Err(self.failed(what, message)),
            (false, None) => Err(self.failed(what, format!("{status}: {}", api_message(&pending)))),
        }
    }
}

/// Reads a body whole, up to `cap` bytes.
async fn read_capped(mut body: hyper::body::Incoming, cap: usize) -> Result<Bytes, String> {
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if all.len() + data.len() > cap {
                return Err(format!("answer larger than {cap} bytes"));
            }
            all.extend_from_slice(&data);
        }
    }
    Ok(all.into())
}

/// `{"message": "…"}` of an API error, or the body as text.
fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// The error a progress message carries (`{"error": …}` or `errorDetail`).
fn progress_error(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v["errorDetail"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_owned)
}

/// Percent-encodes everything but unreserved characters, `/` and `:`
/// (which the Docker API's routes take as they are).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_errors_and_escapes() {
        assert_eq!(
            progress_error(br#"{"errorDetail":{"message":"no space"},"error":"x"}"#).as_deref(),
            Some("no space")
        );
        assert_eq!(progress_error(br#"{"stream":"Loaded image: a:b\n"}"#), None);
        assert_eq!(escape("127.0.0.1:5000/a b?&"), "127.0.0.1:5000/a%20b%3F%26");
        assert_eq!(
            api_message(br#"{"message":"No such image"}"#),
            "No such image"
        );
    }
}
