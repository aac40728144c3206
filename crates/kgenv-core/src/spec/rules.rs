//! Validation rules shared by the builders. Each returns the rule text on failure, so the
//! builder can attach the field name.

use crate::error::ValidationError;

type Rule = Result<(), ValidationError>;

fn fail(field: &str, rule: impl Into<String>) -> Rule {
    Err(ValidationError::new(field, rule))
}

/// GCE resource names: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
pub(crate) fn gce_name(field: &str, v: &str) -> Rule {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` is not a valid GCE name: use 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"),
        )
    }
}

/// GCP project ids: 6-30 chars, lowercase letters, digits, hyphens, starting with a letter.
pub(crate) fn project_id(field: &str, v: &str) -> Rule {
    let b = v.as_bytes();
    let ok = (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        fail(field, format!("`{v}` is not a valid GCP project id: 6-30 lowercase letters, digits and hyphens, starting with a letter (see `gcloud projects list`)"))
    }
}

/// Zones look like `us-central1-a`.
pub(crate) fn zone(field: &str, v: &str) -> Rule {
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() == 3
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && !parts[0].is_empty()
        && parts[1]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
        && parts[1].chars().last().is_some_and(|c| c.is_ascii_digit())
        && parts[1]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && parts[2].len() == 1
        && parts[2].chars().all(|c| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` is not a zone like `us-central1-a` (see `gcloud compute zones list`)"),
        )
    }
}

pub use crate::backends::compute::region_of;

/// A TCP/UDP port, 1-65535.
pub(crate) fn port(field: &str, v: u32) -> Rule {
    if (1..=65535).contains(&v) {
        Ok(())
    } else {
        fail(field, format!("port {v} is out of range: use 1-65535"))
    }
}

/// A port or `low-high` range.
pub(crate) fn port_range(field: &str, v: &str) -> Rule {
    let parse = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
    };
    let ok = match v.split_once('-') {
        Some((a, b)) => matches!((parse(a), parse(b)), (Some(a), Some(b)) if a <= b),
        None => parse(v).is_some(),
    };
    if ok {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` is not a port (1-65535) or a range like `8000-8100`"),
        )
    }
}

/// A CIDR range such as `203.0.113.4/32`.
pub(crate) fn cidr(field: &str, v: &str) -> Rule {
    if v.parse::<ipnet::IpNet>().is_ok() {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` is not a valid CIDR range like `203.0.113.4/32`"),
        )
    }
}

/// Whether `ranges` together open to the whole internet: their union covers every IPv4
/// address or every IPv6 address, whether one range says so (`0.0.0.0/0`, `::/0`) or several
/// do between them (`0.0.0.0/1` and `128.0.0.0/1`). IPv4-mapped IPv6 ranges
/// (`::ffff:0:0/96`) count as the IPv4 addresses they stand for. Unparsable ranges are
/// ignored (the builders reject them).
pub fn is_world_open<S: AsRef<str>>(ranges: &[S]) -> bool {
    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    use std::net::Ipv4Addr;
    const V4_ALL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };
    const MAPPED: Ipv6Net = match Ipv6Net::new(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), 96) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for net in ranges
        .iter()
        .filter_map(|r| r.as_ref().trim().parse::<IpNet>().ok())
    {
        match net {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => {
                if n.contains(&MAPPED) {
                    v4.push(V4_ALL);
                } else if MAPPED.contains(&n) {
                    if let Some(a) = n.network().to_ipv4_mapped() {
                        v4.extend(Ipv4Net::new(a, n.prefix_len() - 96));
                    }
                }
                v6.push(n);
            }
        }
    }
    Ipv4Net::aggregate(&v4).iter().any(|n| n.prefix_len() == 0)
        || Ipv6Net::aggregate(&v6).iter().any(|n| n.prefix_len() == 0)
}

/// GCE label keys and values (and GCS-compatible): lowercase, digits, `_`, `-`.
pub(crate) fn label(field: &str, key: &str, value: &str) -> Rule {
    let chars_ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    if key.is_empty()
        || key.len() > 63
        || !key.starts_with(|c: char| c.is_ascii_lowercase())
        || !chars_ok(key)
    {
        return fail(field, format!("label key `{key}` must be 1-63 lowercase letters, digits, `_` or `-`, starting with a letter"));
    }
    if value.len() > 63 || !chars_ok(value) {
        return fail(field, format!("label `{key}` has value `{value}`: values are at most 63 lowercase letters, digits, `_` or `-`"));
    }
    Ok(())
}

/// GCS bucket names, by every rule of <https://cloud.google.com/storage/docs/buckets#naming>
/// that can be checked without an API call: 3-63 characters (up to 222 when the name has
/// dots, each dot-separated part at most 63); lowercase letters, digits, `-`, `_` and `.`;
/// a letter or digit at both ends; not an IPv4 address in dotted-decimal; no `goog` prefix;
/// no `google` anywhere, nor a close misspelling of it such as `g00gle`. Each failure says
/// which rule the name breaks, so nothing is sent to GCS that it would refuse.
pub(crate) fn bucket_name(field: &str, v: &str) -> Rule {
    let bad = |why: &str| {
        fail(
            field,
            format!("`{v}` is not a valid GCS bucket name: {why}; choose another name (e.g. `my-kaggle-project-data`)"),
        )
    };
    let b = v.as_bytes();
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(*c)))
    {
        return bad(&format!(
            "`{c}` is not allowed (only lowercase letters, digits, `-`, `_` and `.`)"
        ));
    }
    let max = if v.contains('.') { 222 } else { 63 };
    if !(3..=max).contains(&b.len()) {
        return bad(&format!(
            "it has {} characters; a name has 3-63 (up to 222 when it has dots)",
            b.len()
        ));
    }
    if !(b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()) {
        return bad("it must start and end with a letter or digit");
    }
    if let Some(part) = v.split('.').find(|p| p.is_empty() || p.len() > 63) {
        return bad(if part.is_empty() {
            "it has two dots in a row"
        } else {
            "each dot-separated part has at most 63 characters"
        });
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
        return bad("it has the form of an IP address");
    }
    if v.starts_with("goog") {
        return bad("it must not begin with `goog`");
    }
    if looks_like_google(v) {
        return bad("it must not contain `google` or a close misspelling of it");
    }
    Ok(())
}

/// Whether `name` holds `google` once digits that stand in for letters are read as those
/// letters (`g00gle`, `goog1e`, `9oogle`, `googl3`): GCS refuses such names.
fn looks_like_google(name: &str) -> bool {
    let read: String = name
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' => 'l',
            '3' => 'e',
            '6' | '9' => 'g',
            c => c,
        })
        .collect();
    read.contains("google")
}

/// An absolute path with no `..` and no NUL.
pub(crate) fn abs_path(field: &str, v: &str) -> Rule {
    if v.starts_with('/') && !v.split('/').any(|p| p == "..") && !v.contains('\0') {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` must be an absolute path such as `/mnt/data`, without `..`"),
        )
    }
}

/// Package names for apt: `^[a-z0-9][a-z0-9+.-]+$` (optionally `=version`).
pub(crate) fn apt_package(field: &str, v: &str) -> Rule {
    let name = v.split_once('=').map_or(v, |(n, _)| n);
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
        && v.chars().all(|c| !c.is_whitespace());
    if ok {
        Ok(())
    } else {
        fail(
            field,
            format!("`{v}` is not a Debian package name like `cmake` or `libgl1`"),
        )
    }
}

/// A pip requirement without options, URLs or whitespace: `dlib`, `torch==2.4.0`, `x[extra]>=1`.
pub(crate) fn pip_requirement(field: &str, v: &str) -> Rule {
    let ok = !v.is_empty()
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-[]=<>!~,*".contains(c));
    if ok {
        Ok(())
    } else {
        fail(field, format!("`{v}` is not a pip requirement like `dlib` or `lightgbm==4.5.0` (no spaces, options or URLs)"))
    }
}

/// A container image reference: `[registry/]path[:tag][@digest]`, lowercase path.
pub(crate) fn image_ref(field: &str, v: &str) -> Rule {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !v.contains("//");
    if ok {
        Ok(())
    } else {
        fail(
            field,
            format!(
                "`{v}` is not an image reference like `gcr.io/kaggle-gpu-images/python:latest`"
            ),
        )
    }
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn env_name(field: &str, v: &str) -> Rule {
    let ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        fail(field, format!("`{v}` is not an environment variable name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gce_names() {
        for ok in ["a", "kgenv", "my-env-1", &"a".repeat(63)] {
            assert!(gce_name("n", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Abc", "abc-", "a_b", &"a".repeat(64)] {
            assert!(gce_name("n", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_ranges_and_cidrs() {
        assert!(zone("z", "us-central1-a").is_ok());
        assert!(zone("z", "europe-west4-b").is_ok());
        assert!(zone("z", "us-central1").is_err());
        assert_eq!(region_of("asia-northeast1-c"), "asia-northeast1");
        assert!(port_range("p", "22").is_ok());
        assert!(port_range("p", "8000-8100").is_ok());
        assert!(port_range("p", "9000-8000").is_err());
        assert!(port_range("p", "0").is_err());
        assert!(cidr("c", "10.0.0.0/8").is_ok());
        assert!(cidr("c", "10.0.0.0/33").is_err());
        assert!(is_world_open(&["0.0.0.0/0"]));
        assert!(is_world_open(&["::/0"]));
        assert!(!is_world_open(&["203.0.113.4/32"]));
    }

    #[test]
    fn world_open_is_any_union_covering_a_whole_family() {
        assert!(is_world_open(&["0.0.0.0/1", "128.0.0.0/1"]));
        assert!(is_world_open(&[
            "128.0.0.0/2",
            "203.0.113.4/32",
            "0.0.0.0/1",
            "192.0.0.0/2"
        ]));
        assert!(is_world_open(&["::/1", "8000::/1"]));
        // Host bits set in a range do not hide what it opens.
        assert!(is_world_open(&["10.0.0.1/1", "200.1.2.3/1"]));
        // IPv4 written as IPv4-mapped IPv6.
        assert!(is_world_open(&["::ffff:0:0/96"]));
        assert!(is_world_open(&["::ffff:0:0/97", "128.0.0.0/1"]));
        // Half of each family is not everything, nor a gap of one address.
        assert!(!is_world_open(&["0.0.0.0/1", "8000::/1"]));
        assert!(!is_world_open(&[
            "0.0.0.0/1",
            "128.0.0.0/2",
            "192.0.0.0/3",
            "224.0.0.0/4"
        ]));
        // Everything but 255.255.255.255: 0.0.0.0/1, 128.0.0.0/2, …, 255.255.255.254/32.
        let all_but_one: Vec<String> = (1..=32u32)
            .map(|k| format!("{}/{k}", std::net::Ipv4Addr::from(!(u32::MAX >> (k - 1)))))
            .collect();
        assert!(!is_world_open(&all_but_one), "{all_but_one:?}");
        assert!(!is_world_open::<&str>(&[]));
    }

    #[test]
    fn bucket_names_follow_every_gcs_rule() {
        let long_dotted = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        for ok in [
            "abc",
            "my-kaggle-project-data",
            "a_b.c-d",
            "1.2.3.4.5",
            "1.2.3.x",
            "256.1.1.1",
            &"a".repeat(63),
            &long_dotted,
        ] {
            assert!(bucket_name("bucket", ok).is_ok(), "{ok}");
        }
        let too_long_dotted = format!("{}.{}", "a".repeat(64), "b");
        let too_long_total = vec!["a".repeat(60); 4].join(".");
        for (bad, says) in [
            ("ab", "3-63"),
            (&"a".repeat(64), "3-63"),
            (&too_long_total, "up to 222"),
            (&too_long_dotted, "at most 63"),
            ("My-Bucket", "`M` is not allowed"),
            ("a b c", "` ` is not allowed"),
            ("-abc", "start and end"),
            ("abc_", "start and end"),
            ("a..b", "two dots"),
            ("192.168.5.4", "IP address"),
            ("010.0.0.1", "IP address"),
            ("goog-data", "begin with `goog`"),
            ("my-google-data", "`google`"),
            ("my-g00gle-data", "`google`"),
            ("data-goog1e", "`google`"),
            ("9oogle-data", "`google`"),
        ] {
            let e = bucket_name("bucket", bad).expect_err(bad);
            assert_eq!(e.field, "bucket", "{bad}");
            assert!(e.rule.contains(says), "{bad}: {}", e.rule);
            assert!(e.rule.contains("choose another name"), "{bad}: {}", e.rule);
        }
    }
}
