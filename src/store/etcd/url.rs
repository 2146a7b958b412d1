//! Where the etcd store is: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX[?OPTIONS]`, parsed and
//! checked before anything connects.
//!
//! Options (query string, `&`-separated): `ca=FILE` (CA certificate, PEM; TLS), `cert=FILE`
//! and `key=FILE` (client certificate and key, PEM; both or neither), `user=NAME` (etcd
//! authentication; the password comes from `$PAS_ETCD_PASSWORD`, never from the URL, which
//! is printed and may sit in `pas.toml`), `blobs=DIR` (the directory of checkpoint blobs,
//! `<root>/.pas/blobs` by default). `etcds://` is `etcd://` with TLS and the system's
//! roots unless `ca=` names a CA.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where the password of `user=` is read from.
pub const PASSWORD_ENV: &str = "PAS_ETCD_PASSWORD";

/// A parsed `etcd://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of each member, as given.
    pub members: Vec<String>,
    /// The key prefix every key of this store starts with (no leading or trailing `/`).
    pub prefix: String,
    /// Whether to talk TLS to the members.
    pub tls: bool,
    /// The CA certificate to trust (PEM file).
    pub ca: Option<PathBuf>,
    /// The client certificate and its key (PEM files).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The etcd user (its password from [`PASSWORD_ENV`]).
    pub user: Option<String>,
    /// The directory of checkpoint blobs (`blobs=DIR`); `None`: `<root>/.pas/blobs`.
    pub blobs: Option<PathBuf>,
}

impl EtcdUrl {
    /// The URL as it is shown in messages and given to child processes (options kept;
    /// there is never a password in it).
    pub fn display(&self) -> String {
        let scheme = if self.tls && self.ca.is_none() && self.identity.is_none() {
            "etcds"
        } else {
            "etcd"
        };
        let mut opts = Vec::new();
        if let Some(ca) = &self.ca {
            opts.push(format!("ca={}", ca.display()));
        }
        if let Some((cert, key)) = &self.identity {
            opts.push(format!("cert={}", cert.display()));
            opts.push(format!("key={}", key.display()));
        }
        if let Some(user) = &self.user {
            opts.push(format!("user={user}"));
        }
        if let Some(blobs) = &self.blobs {
            opts.push(format!("blobs={}", blobs.display()));
        }
        let query = if opts.is_empty() {
            String::new()
        } else {
            format!("?{}", opts.join("&"))
        };
        format!(
            "{scheme}://{}/{}{query}",
            self.members.join(","),
            self.prefix
        )
    }

    /// The members as gRPC endpoints (`http://` or `https://`).
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://{m}"))
            .collect()
    }
}

/// Whether `spec` names an etcd store rather than a directory.
pub fn is_etcd(spec: &str) -> bool {
    spec.starts_with("etcd://") || spec.starts_with("etcds://")
}

fn bad(spec: &str, what: &str) -> Error {
    Error::usage(format!("store {spec}: {what}")).hint(
        "write it as etcd://HOST:PORT[,HOST:PORT...]/PREFIX, for example etcd://127.0.0.1:2379/pas (docs/etcd.md)",
    )
}

/// Parses an `etcd://` or `etcds://` URL; every mistake is a usage error naming it.
pub fn parse(spec: &str) -> Result<EtcdUrl> {
    let (rest, tls) = if let Some(rest) = spec.strip_prefix("etcd://") {
        (rest, false)
    } else if let Some(rest) = spec.strip_prefix("etcds://") {
        (rest, true)
    } else {
        return Err(bad(spec, "the scheme must be etcd:// or etcds://"));
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let Some((hosts, prefix)) = rest.split_once('/') else {
        return Err(bad(
            spec,
            "it names no key prefix after the members (add /PREFIX)",
        ));
    };
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(bad(spec, "the key prefix is empty"));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(*c)))
    {
        return Err(bad(
            spec,
            &format!("the key prefix may hold letters, digits and - _ . / only, not {c:?}"),
        ));
    }
    if prefix
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad(spec, "the key prefix has an empty, . or .. part"));
    }
    let mut members = Vec::new();
    for member in hosts.split(',') {
        let Some((host, port)) = member.rsplit_once(':') else {
            return Err(bad(spec, &format!("member {member:?} has no :PORT")));
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
        if !host_ok {
            return Err(bad(spec, &format!("member {member:?} has no valid host")));
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(bad(
                spec,
                &format!("member {member:?}: the port must be a number from 1 to 65535"),
            ));
        }
        members.push(member.to_string());
    }
    let mut url = EtcdUrl {
        members,
        prefix: prefix.to_string(),
        tls,
        ca: None,
        identity: None,
        user: None,
        blobs: None,
    };
    let (mut cert, mut key) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=').filter(|(_, v)| !v.is_empty()) else {
            return Err(bad(
                spec,
                &format!("option {pair:?} has no value (NAME=VALUE)"),
            ));
        };
        match name {
            "ca" => url.ca = Some(PathBuf::from(value)),
            "cert" => cert = Some(PathBuf::from(value)),
            "key" => key = Some(PathBuf::from(value)),
            "user" => url.user = Some(value.to_string()),
            "blobs" => url.blobs = Some(PathBuf::from(value)),
            "password" => {
                return Err(bad(
                    spec,
                    &format!("a password does not go in the URL; set ${PASSWORD_ENV} instead"),
                ))
            }
            other => {
                return Err(bad(
                    spec,
                    &format!("unknown option {other:?} (known: ca, cert, key, user, blobs)"),
                ))
            }
        }
    }
    match (cert, key) {
        (Some(c), Some(k)) => url.identity = Some((c, k)),
        (None, None) => {}
        _ => return Err(bad(spec, "cert= and key= go together")),
    }
    if url.ca.is_some() || url.identity.is_some() {
        url.tls = true;
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        // (input, Ok(members, prefix, tls) or Err(part of the message))
        type Want =
            std::result::Result<(&'static [&'static str], &'static str, bool), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("etcd://h1:2379/pas", Ok((&["h1:2379"], "pas", false))),
            (
                "etcd://h1:2379,h2:2380,h3:2381/team/a/",
                Ok((&["h1:2379", "h2:2380", "h3:2381"], "team/a", false)),
            ),
            (
                "etcds://10.0.0.1:2379/p",
                Ok((&["10.0.0.1:2379"], "p", true)),
            ),
            ("etcd://h:2379/p?ca=/ca.pem", Ok((&["h:2379"], "p", true))),
            ("etcd://h:2379/p?user=ops", Ok((&["h:2379"], "p", false))),
            (
                "etcd://h:2379/p?blobs=/srv/blobs",
                Ok((&["h:2379"], "p", false)),
            ),
            ("http://h:2379/p", Err("scheme")),
            ("etcd://h:2379", Err("no key prefix")),
            ("etcd://h:2379/", Err("prefix is empty")),
            ("etcd://h/p", Err("no :PORT")),
            ("etcd://h:0/p", Err("port must be")),
            ("etcd://h:99999/p", Err("port must be")),
            ("etcd://:2379/p", Err("no valid host")),
            ("etcd://h:2379/a b", Err("not ' '")),
            ("etcd://h:2379/a//b", Err("empty, . or ..")),
            ("etcd://h:2379/a/../b", Err("empty, . or ..")),
            ("etcd://h:2379/p?cert=/c.pem", Err("go together")),
            ("etcd://h:2379/p?password=x", Err("PAS_ETCD_PASSWORD")),
            ("etcd://h:2379/p?colour=red", Err("unknown option")),
            ("etcd://h:2379/p?ca", Err("has no value")),
        ];
        for (input, want) in cases {
            match (parse(input), want) {
                (Ok(url), Ok((members, prefix, tls))) => {
                    assert_eq!(url.members, *members, "{input}");
                    assert_eq!(url.prefix, *prefix, "{input}");
                    assert_eq!(url.tls, *tls, "{input}");
                    assert_eq!(parse(&url.display()).ok().as_ref(), Some(&url), "{input}");
                }
                (Err(e), Err(part)) => {
                    assert!(e.message.contains(part), "{input}: {}", e.message);
                    assert_eq!(e.kind, crate::error::Kind::Usage, "{input}");
                }
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
