//! Registry credentials through the session, against the real daemon: for a
//! token-auth registry the daemon asks strata for a token (FetchToken, after
//! GetTokenAuthority), so the password never leaves strata.

mod common;

use std::io::Write;

use common::project::{small_spec, Project};
use common::{hostile_http, stack, strata_command};

/// A registry with token auth: `/token` hands out `tok-123` (to anyone), the
/// API wants that token and then has nothing (a cache miss).
fn token_registry(stream: &mut std::net::TcpStream, head: &str) {
    let lower = head.to_ascii_lowercase();
    let host = lower
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let answer = if lower.starts_with("get /token") {
        let body = r#"{"token":"tok-123","expires_in":300}"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else if lower.contains("authorization: bearer tok-123") {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{host}/token\",service=\"fake\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let _ = stream.write_all(answer.as_bytes());
}

#[test]
fn the_daemon_gets_a_token_never_the_password() {
    let s = stack();
    let (addr, seen) = hostile_http(token_registry);
    let p = Project::new(&small_spec("authed", ""));
    let docker = p.path("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{addr}": {{"username": "ci", "password": "hunter2"}}}}}}"#),
    )
    .unwrap();
    let out = strata_command([
        "--addr",
        &s.buildkit_host,
        "build",
        "-f",
        &p.spec().display().to_string(),
        "--progress",
        "plain",
        "--insecure-registry",
        &addr,
        "--cache-from",
        &format!("type=registry,ref={addr}/strata/authed:cache"),
    ])
    .env("DOCKER_CONFIG", &docker)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let tokens: Vec<&String> = seen
        .iter()
        .filter(|h| h.starts_with("get /token"))
        .collect();
    assert!(!tokens.is_empty(), "no token was fetched: {seen:#?}");
    for t in &tokens {
        assert!(
            t.contains("user-agent: strata/"),
            "the daemon fetched a token itself: {t}"
        );
        assert!(
            t.contains("authorization: basic"),
            "strata fetched it with the credentials: {t}"
        );
    }
    assert!(
        seen.iter()
            .any(|h| h.contains(" /v2/") && h.contains("authorization: bearer tok-123")),
        "the daemon used the token: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|h| !h.contains("user-agent: strata/") && h.contains("authorization: basic")),
        "the daemon sent the password somewhere: {seen:#?}"
    );
}
