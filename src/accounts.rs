//! Users and groups by name, from `/etc/passwd` and `/etc/group`: whom an agent runs as
//! when pas runs as root (`security_context.user`/`group` in `config/isolation.json`).
//!
//! The files are read directly rather than through the C library's NSS, which keeps the
//! crate free of `unsafe`; accounts that only a directory service (LDAP, sssd) knows are
//! not found by name, and are given as numbers instead (`"user": "1001"`).

use std::io;

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// Finds `name` (or a number) in the text of `/etc/passwd`.
pub fn find_user(passwd: &str, name: &str) -> Option<User> {
    let by_number: Option<u32> = name.parse().ok();
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            let uid: u32 = f[2].parse().ok()?;
            let matches = f[0] == name || by_number == Some(uid);
            matches.then(|| User {
                name: f[0].to_string(),
                uid,
                gid: f[3].parse().unwrap_or(uid),
                home: f[5].to_string(),
            })
        })
}

/// Finds the id of group `name` (or a number) in the text of `/etc/group`.
pub fn find_group(group: &str, name: &str) -> Option<u32> {
    let by_number: Option<u32> = name.parse().ok();
    group
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let gid: u32 = f.get(2)?.parse().ok()?;
            (f[0] == name || by_number == Some(gid)).then_some(gid)
        })
        .or(by_number)
}

/// The user `name` on this machine; a number not in `/etc/passwd` is that uid, with the
/// same number as its group and `/` as its home.
pub fn user(name: &str) -> io::Result<Option<User>> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Ok(find_user(&passwd, name).or_else(|| {
        name.parse().ok().map(|uid| User {
            name: name.to_string(),
            uid,
            gid: uid,
            home: "/".to_string(),
        })
    }))
}

/// The id of group `name` on this machine.
pub fn group(name: &str) -> io::Result<Option<u32>> {
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    Ok(find_group(&text, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # a comment\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          alice:x:1000:100:Alice:/home/alice:/bin/sh\n\
                          broken:x:notanumber:1::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:alice\nnogroup:x:65534:\n";

    #[test]
    fn users_are_found_by_name_or_number() {
        let cases = [
            ("alice", Some((1000, 100, "/home/alice"))),
            ("1000", Some((1000, 100, "/home/alice"))),
            ("nobody", Some((65534, 65534, "/nonexistent"))),
            ("root", Some((0, 0, "/root"))),
            ("bob", None),
            ("broken", None),
            ("", None),
        ];
        for (name, want) in cases {
            let got = find_user(PASSWD, name).map(|u| (u.uid, u.gid, u.home));
            assert_eq!(got, want.map(|(u, g, h)| (u, g, h.to_string())), "{name}");
        }
    }

    #[test]
    fn groups_are_found_by_name_or_number() {
        let cases = [
            ("users", Some(100)),
            ("nogroup", Some(65534)),
            ("4242", Some(4242)),
            ("agents", None),
        ];
        for (name, want) in cases {
            assert_eq!(find_group(GROUP, name), want, "{name}");
        }
    }
}
