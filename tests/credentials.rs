//! Credential helpers, run as docker runs them. One test in this binary: it
//! puts a helper on PATH before anything else runs.

use std::os::unix::fs::PermissionsExt;

use strata::credentials::DockerAuth;

#[tokio::test]
async fn credential_helpers_are_asked_as_docker_asks_them() {
    let tmp = tempfile::tempdir().unwrap();
    // A helper that knows one host and logs what it was asked.
    let helper = tmp.path().join("docker-credential-strata-test");
    let log = tmp.path().join("asked");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\necho \"$server\" >> {}\n\
             case \"$server\" in\n  helped.example) echo '{{\"ServerURL\":\"helped.example\",\"Username\":\"u\",\"Secret\":\"from-helper\"}}' ;;\n  \
             *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"credsStore": "strata-test",
            "credHelpers": {"other.example": "strata-test", "bad.example": "../../bin/sh"},
            "auths": {"fallback.example": {"username": "f", "password": "file"},
                      "broken.example": {"auth": "!!"}}}"#,
    )
    .unwrap();
    let auth = DockerAuth::from_file(&config);
    let cred = auth.credential("helped.example").await.unwrap();
    assert_eq!(
        (cred.username.as_str(), cred.secret.as_str()),
        ("u", "from-helper")
    );
    assert!(auth.credential("other.example").await.is_none());
    assert_eq!(
        auth.credential("fallback.example").await.unwrap().secret,
        "file",
        "a store that has none falls back to the file; a broken entry drops only itself"
    );
    // Asked once per host, however often strata needs it.
    auth.credential("helped.example").await;
    let asked = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        asked.lines().collect::<Vec<_>>(),
        ["helped.example", "other.example", "fallback.example"]
    );
}
