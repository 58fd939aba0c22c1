//! TLS and credentials of both connections: `[source.tls]`, `[nats.tls]` and the NATS
//! credential files. Only paths live here; the files are read when connecting, and their
//! contents (keys, seeds, JWTs) never reach logs or `Debug` output.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How much of the server's certificate the source connection verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceTlsMode {
    /// Encrypt, and check nothing about the server (anyone in the path can impersonate it).
    Required,
    /// Encrypt, and check that a trusted CA signed the server's certificate.
    VerifyCa,
    /// Also check that the certificate names the host in `source.url`.
    #[default]
    VerifyIdentity,
}

/// `[source.tls]`: TLS to the database server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTlsConfig {
    #[serde(default)]
    pub mode: SourceTlsMode,
    /// PEM file of the CA(s) that signed the server's certificate (besides the system roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) and its private key (PEM), for `REQUIRE X509` users.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[nats.tls]`: TLS to NATS (required once the section is present).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsConfig {
    /// PEM file of the CA(s) that signed the server's certificate (besides the system roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// TLS before the server's INFO (nats-server `handshake_first`).
    #[serde(default)]
    pub handshake_first: bool,
}

/// Reports a configured file that cannot be read, naming the key.
pub(super) fn check_file(key: &str, path: Option<&Path>, problems: &mut Vec<String>) {
    if let Some(path) = path
        && let Err(e) = std::fs::File::open(path)
    {
        problems.push(format!("{key}: cannot read {}: {e}", path.display()));
    }
}

/// A client certificate needs its key and the other way round.
pub(super) fn check_pair(
    at: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    problems: &mut Vec<String>,
) {
    match (cert, key) {
        (Some(_), None) => problems.push(format!("{at}.key_file: required with {at}.cert_file")),
        (None, Some(_)) => problems.push(format!("{at}.cert_file: required with {at}.key_file")),
        _ => {}
    }
    check_file(&format!("{at}.cert_file"), cert, problems);
    check_file(&format!("{at}.key_file"), key, problems);
}

impl SourceTlsConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        check_file("source.tls.ca_file", self.ca_file.as_deref(), problems);
        check_pair(
            "source.tls",
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
            problems,
        );
    }
}

impl NatsTlsConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        check_file("nats.tls.ca_file", self.ca_file.as_deref(), problems);
        check_pair(
            "nats.tls",
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
            problems,
        );
    }
}
