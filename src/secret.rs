//! A wrapper that keeps secrets (passwords inside URLs) out of logs and `Debug` output.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A URL that may carry a password. `Debug` and `Display` show it with the password replaced
/// by `***`; [`SecretUrl::expose`] gives the real value to the one place that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting only. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Replaces the secret of a URL with `***`: the password of `scheme://user:password@host`,
/// and for NATS (`nats`, `tls`, `ws`, `wss`) a bare token (`nats://TOKEN@host`); a bare
/// user name of other schemes (`mysql://root@host`) is no secret. Comma-separated lists of
/// URLs (NATS server lists) are redacted one by one. Other strings are returned unchanged.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_one).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    let Some(parts) = userinfo_of(url) else {
        return url.to_owned();
    };
    // async-nats also takes `user:password@host:port` without a scheme.
    let scheme = parts.prefix.trim().trim_end_matches("://");
    let token_scheme = scheme.is_empty()
        || ["nats", "tls", "ws", "wss"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s));
    let Userinfo {
        prefix,
        userinfo,
        rest,
    } = parts;
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{prefix}{user}:***@{rest}"),
        None if token_scheme => format!("{prefix}***@{rest}"),
        None => url.to_owned(),
    }
}

/// One URL cut around its credentials.
struct Userinfo<'a> {
    /// `scheme://`, or nothing for a URL without a scheme.
    prefix: &'a str,
    /// What stands before the authority's last `@`.
    userinfo: &'a str,
    /// The host, port and whatever follows.
    rest: &'a str,
}

/// The credentials part of `url`, if it has one.
fn userinfo_of(url: &str) -> Option<Userinfo<'_>> {
    let prefix_len = url.find("://").map_or(0, |i| i + 3);
    let after = &url[prefix_len..];
    let authority_end = after.find(['/', '?']).unwrap_or(after.len());
    let at = after[..authority_end].rfind('@')?;
    Some(Userinfo {
        prefix: &url[..prefix_len],
        userinfo: &after[..at],
        rest: &after[at + 1..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_appears_in_debug_or_display() {
        let url = SecretUrl::new("mysql://cdc:s3cret@127.0.0.1:3306/db?x=1");
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("cdc:***@127.0.0.1:3306/db"), "{shown}");
        }
        assert_eq!(url.expose(), "mysql://cdc:s3cret@127.0.0.1:3306/db?x=1");
    }

    #[test]
    fn nats_tokens_and_server_lists_are_redacted() {
        assert_eq!(
            redact_url("nats://s3cr3t-token@h:4222"),
            "nats://***@h:4222"
        );
        assert_eq!(redact_url("tls://tok@h:4222"), "tls://***@h:4222");
        assert_eq!(
            redact_url("nats://a:pw@h1:4222,nats://tok@h2:4222"),
            "nats://a:***@h1:4222,nats://***@h2:4222"
        );
        let shown = SecretUrl::new("nats://s3cr3t-token@127.0.0.1:4222").to_string();
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for url in ["nats://127.0.0.1:4222", "mysql://root@h:1", "not a url"] {
            assert_eq!(redact_url(url), url);
        }
    }
}

/// Credentials written into a NATS URL (`nats://user:password@host`, `nats://token@host`),
/// percent-decoded. async-nats reads none of them from the URL, so the connector passes them
/// on itself. With several comma-separated URLs the first one carrying credentials counts.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// The credentials in `urls`, if any.
pub fn nats_url_credentials(urls: &str) -> Option<UrlCredentials> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    urls.split(',').find_map(|one| {
        let userinfo = userinfo_of(one.trim())?.userinfo;
        match userinfo.split_once(':') {
            Some((user, password)) => Some(UrlCredentials::UserPassword {
                user: decode(user),
                password: decode(password),
            }),
            None if !userinfo.is_empty() => Some(UrlCredentials::Token(decode(userinfo))),
            None => None,
        }
    })
}

/// Each of the comma-separated `urls`, with its credentials taken out (they are passed to the
/// client apart). The client takes a list: it does not split a string at commas itself.
pub fn without_credentials(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(|one| {
            let one = one.trim();
            match userinfo_of(one) {
                Some(parts) => format!("{}{}", parts.prefix, parts.rest),
                None => one.to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod url_credential_tests {
    use super::*;

    #[test]
    fn user_password_and_token_urls_yield_their_credentials_decoded() {
        assert_eq!(
            nats_url_credentials("nats://bo:p%40ss%2Fw+x@127.0.0.1:4222"),
            Some(UrlCredentials::UserPassword {
                user: "bo".into(),
                password: "p@ss/w+x".into()
            })
        );
        assert_eq!(
            nats_url_credentials("nats://a:4222, tls://tok-1@b:4222"),
            Some(UrlCredentials::Token("tok-1".into()))
        );
        assert_eq!(nats_url_credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(
            nats_url_credentials("bo:pw@127.0.0.1:4222"),
            Some(UrlCredentials::UserPassword {
                user: "bo".into(),
                password: "pw".into()
            }),
            "async-nats takes URLs without a scheme too"
        );
        assert_eq!(redact_url("bo:pw@127.0.0.1:4222"), "bo:***@127.0.0.1:4222");
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(
            without_credentials("nats://bo:p%40w@a:4222, tls://tok@b:4222,c:4222,u:p@d:1"),
            ["nats://a:4222", "tls://b:4222", "c:4222", "d:1"]
        );
        assert_eq!(
            format!("{:?}", nats_url_credentials("nats://u:secret@h")),
            "Some(UserPassword(u, ***))"
        );
    }
}
