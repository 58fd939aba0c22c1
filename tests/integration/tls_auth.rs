//! TLS and authentication on both sides, against servers started with them: MariaDB over TLS
//! with CA and hostname verification and a client certificate; NATS with user and password,
//! a token, an NKey, and TLS with client certificates. A wrong CA or password stops the
//! connector quickly, naming the side and the cause; no secret reaches its output.

use std::path::Path;
use std::time::Duration;

use crate::support::certs::{self, Certs};
use crate::support::http::get;
use crate::support::servers::free_port;
use crate::support::*;

/// A scratch directory with test certificates (kept for the test's length).
fn certificates() -> (tempfile::TempDir, Certs) {
    let dir = tempfile::Builder::new()
        .prefix("bo-certs")
        .tempdir()
        .unwrap();
    let certs = certs::generate(dir.path());
    (dir, certs)
}

fn toml_path(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// Publishes `n` events through an in-process connector configured by `toml` and checks
/// the stream holds exactly them.
async fn publishes_exactly(env: &TestEnv, toml: &str, n: u64) {
    let connector = env.start_connector(env.config_from(toml)).await;
    let e = events(1, n, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e, true).await;
    env.wait_for_count(n, Duration::from_secs(30)).await;
    connector.stop().await.unwrap();
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_over_tls_verifies_the_server_and_presents_a_client_certificate() {
    let (_dir, certs) = certificates();
    let tls_args = [
        format!("--ssl-ca={}", certs.ca.display()),
        format!("--ssl-cert={}", certs.server_cert.display()),
        format!("--ssl-key={}", certs.server_key.display()),
    ];
    let args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let env = TestEnv::start_with("tls_source", &args).await;
    // The connector's user can only connect over TLS with a certificate signed by the CA.
    env.exec_root("ALTER USER cdc@'%' REQUIRE X509").await;
    let tls = |ca: &Path| {
        format!(
            "\n[source.tls]\nmode = \"verify_identity\"\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            toml_path(ca),
            toml_path(&certs.client_cert),
            toml_path(&certs.client_key)
        )
    };
    let toml = env
        .config_toml(None)
        .replace("[[outbox]]", &format!("{}\n[[outbox]]", tls(&certs.ca)));
    publishes_exactly(&env, &toml, 10).await;

    // Without TLS the user is refused; with a CA that did not sign the server's certificate
    // the start fails at once, saying so.
    let plain = env.write_config("plain.toml", &env.config_toml(None));
    let (code, out, _) = run_binary(&["check", "--config", plain.to_str().unwrap()], &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("Access denied"), "{out}");
    let wrong = env.config_toml(None).replace(
        "[[outbox]]",
        &format!("{}\n[[outbox]]", tls(&certs.other_ca)),
    );
    let wrong = env.write_config("wrong-ca.toml", &wrong);
    stops_at_once(&wrong, 78, &["source connection", "certificate"]);
}

/// Runs `binlog-outbox run --config CONFIG`: it must stop with exit code `code` within 10 s
/// (a refusal is not retried), its stderr containing each of `needles` (in any case).
/// Returns the stderr.
fn stops_at_once(config: &Path, code: i32, needles: &[&str]) -> String {
    let started = std::time::Instant::now();
    let (got, _, err) = run_binary(&["run", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(got, code, "{err}");
    for needle in needles {
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{needle:?} not in:\n{err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not fast: {err}"
    );
    err
}

/// The connector's TOML with `url` as nats.url and `extra` in `[nats]`.
fn with_nats(env: &TestEnv, url: &str, extra: &str) -> String {
    env.config_toml(None).replace(
        &format!("url = \"{}\"\n", env.nats.url()),
        &format!("url = \"{url}\"\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_user_and_password_publishes_and_a_wrong_password_stops_at_once_naming_nats() {
    const PASSWORD: &str = "pw-Kq83nZx1";
    let conf = format!(
        "authorization {{ users = [ {{user: bo, password: \"{PASSWORD}\"}}, {{user: test, password: test}} ] }}"
    );
    let mut env = TestEnv::start_servers("nats_user", &[], &conf).await;
    env.nats_access.userinfo = Some("test:test".into());
    let port = env.nats.port;
    let good = format!("nats://bo:{PASSWORD}@127.0.0.1:{port}");
    let http = free_port();
    let toml = with_nats(&env, &good, "") + &format!("\n[http]\nlisten = \"127.0.0.1:{http}\"\n");
    let config = env.write_config("user.toml", &toml);
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let e = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let metrics = get(http, "/metrics").unwrap().1;
    let (_, status, status_err) =
        run_binary(&["status", "--config", config.to_str().unwrap()], &[]);
    let (_, check, _) = run_binary(&["check", "--config", config.to_str().unwrap()], &[]);
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
    let log_text = std::fs::read_to_string(&log).unwrap();
    for (what, output) in [
        ("log", &log_text),
        ("metrics", &metrics),
        ("status", &status),
        ("status stderr", &status_err),
        ("check", &check),
    ] {
        assert!(
            !output.contains(PASSWORD),
            "the password in the {what}:\n{output}"
        );
        assert!(
            !output.contains(CDC_PASSWORD),
            "the source password in the {what}:\n{output}"
        );
    }

    let bad = with_nats(&env, &format!("nats://bo:wrong@127.0.0.1:{port}"), "");
    let bad = env.write_config("bad.toml", &bad);
    let err = stops_at_once(&bad, 1, &["cannot connect to NATS", "authorization"]);
    assert!(!err.contains("wrong"), "the wrong password in:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_a_token_publishes_and_the_token_is_never_printed() {
    const TOKEN: &str = "tok-s3cr3t-77ab";
    let conf = format!("authorization {{ token: \"{TOKEN}\" }}");
    let mut env = TestEnv::start_servers("nats_token", &[], &conf).await;
    env.nats_access.userinfo = Some(TOKEN.into());
    let url = format!("nats://{TOKEN}@127.0.0.1:{}", env.nats.port);
    let config = env.write_config("token.toml", &with_nats(&env, &url, ""));
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;
    let e = events(1, 10, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &e, true).await;
    env.wait_for_count(10, Duration::from_secs(30)).await;
    let (_, status, _) = run_binary(&["status", "--config", config.to_str().unwrap()], &[]);
    assert!(connector.terminate().success());
    assert_exactly_once_in_order(&env.stored_messages().await, &e);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains(TOKEN),
        "the token in the log:\n{log_text}"
    );
    assert!(!status.contains(TOKEN), "the token in status:\n{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_an_nkey_publishes() {
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users = [ {{nkey: \"{}\"}}, {{user: test, password: test}} ] }}",
        user.public_key()
    );
    let mut env = TestEnv::start_servers("nats_nkey", &[], &conf).await;
    env.nats_access.userinfo = Some("test:test".into());
    let seed = env.dir.path().join("connector.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let toml = with_nats(
        &env,
        &env.nats.url(),
        &format!("nkey_seed_file = {}\n", toml_path(&seed)),
    );
    publishes_exactly(&env, &toml, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_client_certificates_publishes_and_a_wrong_ca_stops_at_once() {
    let (_dir, certs) = certificates();
    let conf = format!(
        "tls {{ cert_file: {}, key_file: {}, ca_file: {}, verify: true }}",
        toml_path(&certs.server_cert),
        toml_path(&certs.server_key),
        toml_path(&certs.ca)
    );
    let mut env = TestEnv::start_servers("nats_tls", &[], &conf).await;
    env.nats_access.tls = Some((
        certs.ca.clone(),
        certs.client_cert.clone(),
        certs.client_key.clone(),
    ));
    let tls = |ca: &Path| {
        format!(
            "\n[nats.tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            toml_path(ca),
            toml_path(&certs.client_cert),
            toml_path(&certs.client_key)
        )
    };
    let url = format!("tls://127.0.0.1:{}", env.nats.port);
    let with_tls = |ca: &Path| {
        with_nats(&env, &url, "").replace("[checkpoint]", &format!("{}\n[checkpoint]", tls(ca)))
    };
    publishes_exactly(&env, &with_tls(&certs.ca), 10).await;

    let wrong = env.write_config("wrong-ca.toml", &with_tls(&certs.other_ca));
    stops_at_once(&wrong, 1, &["cannot connect to NATS", "tls"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tls_and_credential_files_are_config_errors_naming_the_key() {
    let env = TestEnv::start("tls_files").await;
    let toml = env.config_toml(None).replace(
        "[[outbox]]",
        "[source.tls]\nca_file = \"/nonexistent/ca.pem\"\ncert_file = \"/nonexistent/c.pem\"\n\n[[outbox]]",
    ) + "\n[nats.tls]\nca_file = \"/nonexistent/nats-ca.pem\"\n";
    let toml = with_nats_extra(&toml, "nkey_seed_file = \"/nonexistent/seed.nk\"\n");
    let config = env.write_config("files.toml", &toml);
    let (code, _, err) = run_binary(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 78, "{err}");
    for needle in [
        "source.tls.ca_file: cannot read /nonexistent/ca.pem",
        "source.tls.key_file: required with source.tls.cert_file",
        "nats.tls.ca_file: cannot read /nonexistent/nats-ca.pem",
        "nats.nkey_seed_file: cannot read /nonexistent/seed.nk",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

/// Adds `extra` lines to the `[nats]` section of `toml`.
fn with_nats_extra(toml: &str, extra: &str) -> String {
    toml.replacen("[nats]\n", &format!("[nats]\n{extra}"), 1)
}

/// A signed NATS JWT (v2) of `claims` about `subject`, issued by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{claims}");
    let signature = b64(&issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_in_operator_mode_with_a_creds_file_publishes() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "outbox",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "connector",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    // JetStream needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let conf = format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
        acc = account.public_key(),
        sys = system.public_key(),
    );
    let mut env = TestEnv::start_servers("nats_creds", &[], &conf).await;
    let creds = env.dir.path().join("connector.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    env.nats_access.creds = Some(creds.clone());
    let toml = with_nats(
        &env,
        &env.nats.url(),
        &format!("credentials_file = {}\n", toml_path(&creds)),
    );
    publishes_exactly(&env, &toml, 10).await;
    // Without the creds file the server refuses the connector: it stops at once.
    let config = env.write_config("no-creds.toml", &env.config_toml(None));
    let err = stops_at_once(&config, 1, &["cannot connect to NATS"]);
    let seed = user.seed().unwrap();
    assert!(!err.contains(&seed), "the seed in:\n{err}");
}
