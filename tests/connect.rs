//! Every transport reaches the real daemon, and every way of failing to reach
//! one ends in one clear line and exit 1.

mod common;

use common::{stack, strata};

fn assert_info(stdout: &str) {
    assert!(stdout.contains("github.com/moby/buildkit"), "{stdout}");
    assert!(stdout.contains("Worker "), "{stdout}");
    assert!(stdout.contains("linux/amd64"), "{stdout}");
}

#[test]
fn info_over_unix_socket() {
    let s = stack();
    let run = strata(["--addr", &s.buildkit_host, "info"]);
    let out = run.ok();
    assert_info(out);
    assert!(
        out.contains("org.mobyproject.buildkit.worker.executor = oci"),
        "{out}"
    );
    assert!(out.contains("GC policy:"), "{out}");
}

#[test]
fn info_json_has_workers_and_version() {
    let s = stack();
    let run = strata(["--addr", &s.buildkit_host, "info", "--json"]);
    let v: serde_json::Value = serde_json::from_str(run.ok()).expect("info --json is JSON");
    assert_eq!(v["package"], "github.com/moby/buildkit");
    assert!(!v["version"].as_str().unwrap().is_empty());
    let workers = v["workers"].as_array().unwrap();
    assert!(!workers.is_empty());
    let platforms = workers[0]["platforms"].as_array().unwrap();
    assert!(platforms.iter().any(|p| p == "linux/amd64"), "{v}");
    // scripts/daemon.sh registers qemu-user-static's arm64 emulator.
    assert!(platforms.iter().any(|p| p == "linux/arm64"), "{v}");
}

#[test]
fn info_reads_buildkit_host() {
    let s = stack();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("info")
        .env("BUILDKIT_HOST", &s.buildkit_host)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_info(&String::from_utf8_lossy(&out.stdout));
}

#[test]
fn info_over_tcp_with_mutual_tls() {
    let s = stack();
    let mut args = vec!["--addr".to_string(), s.tcp_addr.clone()];
    args.extend(s.tls_args());
    args.push("info".into());
    assert_info(strata(&args).ok());
}

#[test]
fn info_over_tcp_with_tlsdir() {
    let s = stack();
    let run = strata([
        "--addr",
        &s.tcp_addr,
        "--tlsdir",
        s.tls_dir.to_str().unwrap(),
        "info",
    ]);
    assert_info(run.ok());
}

#[test]
fn info_over_docker_grpc_upgrade() {
    let s = stack();
    let run = strata(["--addr", &s.docker_host, "info"]);
    let out = run.ok();
    // dockerd's embedded BuildKit reports its own package/version.
    assert!(out.contains("Worker "), "{out}");
    assert!(out.contains("linux/amd64"), "{out}");
}

#[test]
fn missing_socket_is_named() {
    let run = strata([
        "--addr",
        "unix:///nonexistent/strata/buildkitd.sock",
        "info",
    ]);
    let line = run.clean_error();
    assert!(
        line.contains("unix:///nonexistent/strata/buildkitd.sock"),
        "{line}"
    );
    assert!(
        line.contains("no socket at /nonexistent/strata/buildkitd.sock"),
        "{line}"
    );
}

#[test]
fn default_address_is_buildctls() {
    let out = strata(["--help"]);
    assert!(out.ok().contains("unix:///run/buildkit/buildkitd.sock"));
}

#[test]
fn refused_tcp_port_is_named() {
    // Bind then drop a listener to find a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("tcp://127.0.0.1:{port}");
    let line = strata(["--addr", &addr, "info"]).clean_error().to_owned();
    assert!(line.contains(&addr), "{line}");
    assert!(line.contains("connection refused"), "{line}");
}

#[test]
fn wrong_scheme_is_explained() {
    let line = strata(["--addr", "http://127.0.0.1:1234", "info"])
        .clean_error()
        .to_owned();
    assert!(line.contains("unknown scheme http://"), "{line}");
    assert!(line.contains("unix://, tcp:// or docker://"), "{line}");
}

#[test]
fn missing_docker_socket_is_named() {
    let line = strata(["--addr", "docker:///nonexistent/docker.sock", "info"])
        .clean_error()
        .to_owned();
    assert!(
        line.contains("no socket at /nonexistent/docker.sock"),
        "{line}"
    );
}

#[test]
fn tls_with_a_wrong_ca_fails_cleanly() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = rcgen::generate_simple_self_signed(vec!["some-other-ca".into()]).unwrap();
    let ca_path = dir.path().join("other-ca.pem");
    std::fs::write(&ca_path, other_ca.cert.pem()).unwrap();
    let tls = s.tls_args();
    let line = strata([
        "--addr",
        &s.tcp_addr,
        "--tlscacert",
        ca_path.to_str().unwrap(),
        &tls[2],
        &tls[3],
        &tls[4],
        &tls[5],
        "info",
    ])
    .clean_error()
    .to_owned();
    assert!(line.contains(&s.tcp_addr), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(
        line.to_lowercase().contains("unknown"),
        "names the unknown issuer: {line}"
    );
}

#[test]
fn tls_without_client_certificate_is_refused_cleanly() {
    let s = stack();
    let ca = s.tls_dir.join("ca.pem");
    let line = strata([
        "--addr",
        &s.tcp_addr,
        "--tlscacert",
        ca.to_str().unwrap(),
        "info",
    ])
    .clean_error()
    .to_owned();
    assert!(line.contains(&s.tcp_addr), "{line}");
    assert!(line.to_lowercase().contains("certificate"), "{line}");
}

#[test]
fn plain_tcp_to_a_tls_port_suggests_tls() {
    let s = stack();
    let line = strata(["--addr", &s.tcp_addr, "info"])
        .clean_error()
        .to_owned();
    assert!(line.contains(&s.tcp_addr), "{line}");
    assert!(line.contains("--tlscacert"), "{line}");
}

#[test]
fn missing_tls_file_is_named() {
    let s = stack();
    let line = strata([
        "--addr",
        &s.tcp_addr,
        "--tlscacert",
        "/nonexistent/ca.pem",
        "info",
    ])
    .clean_error()
    .to_owned();
    assert!(line.contains("/nonexistent/ca.pem: no such file"), "{line}");
}

#[test]
fn verbose_error_shows_the_chain_without_panicking() {
    let run = strata(["-v", "--addr", "unix:///nonexistent/x.sock", "info"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("error: cannot reach unix:///nonexistent/x.sock"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
}

/// `--help` lists a command's own options first and the daemon connection
/// flags under their own heading, not interleaved with them.
#[test]
fn help_puts_the_connection_flags_under_their_own_heading() {
    let help = common::strata(["build", "--help"]);
    let text = help.ok();
    let heading = text
        .find("Daemon connection (every command):")
        .unwrap_or_else(|| panic!("no connection heading:\n{text}"));
    for own in ["--cache-to", "--push", "--progress", "--verbose"] {
        let at = text
            .find(own)
            .unwrap_or_else(|| panic!("{own} in:\n{text}"));
        assert!(at < heading, "{own} comes before the connection flags");
    }
    for flag in ["--addr", "--tlscacert", "--tlsdir"] {
        let at = text
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in:\n{text}"));
        assert!(at > heading, "{flag} is under the connection heading");
    }
}

/// A `--builders` file's node without TLS files of its own takes the
/// command line's TLS flags: a tcp:// node behind mTLS is spoken to over
/// TLS, never in plaintext.
#[test]
fn a_builders_file_takes_the_tls_flags_as_its_defaults() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("builders.toml");
    std::fs::write(
        &file,
        format!("[[node]]\nname = \"tls\"\naddr = \"{}\"\n", s.tcp_addr),
    )
    .unwrap();
    let path = file.display().to_string();
    let tlsdir = s.tls_dir.display().to_string();
    let run = strata([
        "--builders",
        &path,
        "--tlsdir",
        &tlsdir,
        "pool",
        "status",
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(status[0]["reachable"], true, "{status:#}");
}
