//! Syntax rules for the names that cross the API: repositories, hosts, apps,
//! git refs and commit SHAs. Each check returns a sentence a person can act on.
//!
//! The patterns below say the same in the OpenAPI document (ECMA regexes,
//! without look-around): a name the pattern allows passes its check, except
//! where a note says the check is stricter.

/// [`check_repo`], but for `.` and `..` as names, which the check refuses.
pub const REPO_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$";
/// [`check_hostname`] (and at most 253 characters).
pub const HOST_PATTERN: &str =
    "^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*$";
pub const HOST_MAX: usize = 253;
/// [`check_app_name`].
pub const APP_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// [`check_sha`].
pub const SHA_PATTERN: &str = "^[0-9a-fA-F]{7,64}$";
/// [`check_ref`]'s forbidden characters (at most 255 of the others); the
/// check also refuses `..`, `@{`, `//`, a leading or trailing `/`, a
/// trailing `.`, `@` alone, and components starting with `.` or ending
/// with `.lock`.
pub const REF_PATTERN: &str = "^[^\\x00-\\x20\\x7f-\\x9f~^:?*\\[\\\\]{1,255}$";

/// `owner/name`, as GitHub allows them.
pub fn check_repo(repo: &str) -> Result<(), String> {
    let Some((owner, name)) = repo.split_once('/') else {
        return Err(format!("repo {repo:?} must look like owner/name"));
    };
    let owner_ok = !owner.is_empty()
        && owner.len() <= 39
        && !owner.starts_with('-')
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !owner_ok {
        return Err(format!(
            "repo {repo:?}: owner must be 1-39 letters, digits or '-', not starting with '-'"
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(format!(
            "repo {repo:?}: name must be 1-100 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// A host name: DNS labels of letters, digits, '-' and '_', joined by dots.
pub fn check_hostname(host: &str) -> Result<(), String> {
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    });
    if host.is_empty() || host.len() > 253 || !labels_ok {
        return Err(format!(
            "host {host:?} is not a valid host name (letters, digits, '-', '_' and dots; at most 253 characters)"
        ));
    }
    Ok(())
}

/// An app name: starts with a letter or digit; letters, digits, '-', '_', '.'; at most 64.
pub fn check_app_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "app name {name:?} must start with a letter or digit and hold only letters, digits, '-', '_' or '.' (at most 64)"
        ));
    }
    Ok(())
}

/// A git ref, by the rules of `git check-ref-format` (one-level names allowed,
/// so `main` works as well as `refs/heads/main`).
pub fn check_ref(git_ref: &str) -> Result<(), String> {
    let problem = if git_ref.is_empty() {
        Some("is empty")
    } else if git_ref.len() > 255 {
        Some("is longer than 255 bytes")
    } else if git_ref == "@" {
        Some("cannot be '@'")
    } else if git_ref.starts_with('/') || git_ref.ends_with('/') {
        Some("cannot start or end with '/'")
    } else if git_ref.ends_with('.') {
        Some("cannot end with '.'")
    } else if git_ref.contains("..") || git_ref.contains("@{") || git_ref.contains("//") {
        Some("cannot contain '..', '@{' or '//'")
    } else if git_ref
        .chars()
        .any(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        Some("cannot contain spaces, control characters or any of ~ ^ : ? * [ \\")
    } else if git_ref
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("has a component starting with '.' or ending with '.lock'")
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!("ref {git_ref:?} {why}")),
        None => Ok(()),
    }
}

/// The full form of a ref as a push names it: a bare name (`main`,
/// `release/1.2`) is a branch, `refs/heads/main`.
pub fn full_ref(git_ref: &str) -> String {
    if git_ref.starts_with("refs/") {
        git_ref.to_owned()
    } else {
        format!("refs/heads/{git_ref}")
    }
}

/// The short name of a full ref: `main` of `refs/heads/main`, `v1.2.0` of
/// `refs/tags/v1.2.0`; any other ref as it is.
pub fn ref_name(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

/// A commit SHA: 7 to 64 hex digits (short, SHA-1 or SHA-256).
pub fn check_sha(sha: &str) -> Result<(), String> {
    if (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("sha {sha:?} must be 7 to 64 hexadecimal digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_a_branch_and_short_names_drop_the_namespace() {
        assert_eq!(full_ref("main"), "refs/heads/main");
        assert_eq!(full_ref("refs/tags/v1"), "refs/tags/v1");
        assert_eq!(ref_name("refs/heads/release/1.2"), "release/1.2");
        assert_eq!(ref_name("refs/tags/v1.2.0"), "v1.2.0");
        assert_eq!(ref_name("refs/pull/1/head"), "refs/pull/1/head");
    }

    #[test]
    fn repos() {
        for ok in ["acme/web", "a/b", "Acme-Co/web.site_2"] {
            assert!(check_repo(ok).is_ok(), "{ok}");
        }
        for bad in [
            "acme",
            "/web",
            "acme/",
            "-acme/web",
            "acme/we b",
            "acme/..",
            "a/b/c",
        ] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["web-01", "web-01.prod.example.com", "db_1"] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web..01", "web 01", "web;rm", &"a".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_follow_check_ref_format() {
        for ok in [
            "main",
            "refs/heads/main",
            "release/1.2",
            "v1.0.0",
            "refs/tags/v1",
        ] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "main; touch /tmp/pwned",
            "a..b",
            "a/.hidden",
            "x.lock",
            "/main",
            "main/",
            "ma\u{7}in",
            "a@{1}",
            "feat*",
            "@",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shas() {
        assert!(check_sha("abc1234").is_ok());
        assert!(check_sha(&"f".repeat(40)).is_ok());
        assert!(check_sha("abc").is_err());
        assert!(check_sha("xyz1234").is_err());
    }

    /// The request schemas publish the same patterns the checks are
    /// documented by (utoipa takes only literals, so they are written twice).
    #[test]
    fn request_schemas_publish_these_patterns() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(crate::CreateJobRequest::schema()).unwrap();
        let pattern = |field: &str| schema["properties"][field]["pattern"].clone();
        assert_eq!(pattern("repo"), REPO_PATTERN);
        assert_eq!(pattern("ref"), REF_PATTERN);
        assert_eq!(pattern("host"), HOST_PATTERN);
        assert_eq!(pattern("sha"), SHA_PATTERN);
        assert_eq!(pattern("app"), APP_PATTERN);
        assert_eq!(schema["properties"]["host"]["maxLength"], HOST_MAX);
    }
}
