//! Property tests of the name checks in `deploybot_wire::names`: they never
//! panic, and whatever they accept has the shape their docs promise.

use deploybot_wire::names::{
    APP_PATTERN, HOST_MAX, HOST_PATTERN, REPO_PATTERN, SHA_PATTERN, check_app_name, check_hostname,
    check_ref, check_repo, check_sha,
};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config {
        cases: 1024,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings worth throwing at every check: anything at all, and strings built
/// from the characters the rules care about (so that near misses are common).
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9]{0,300}",
        "[a-zA-Z0-9./_@{}~^:?*\\[\\\\ \t\n\u{7f}\u{85}\u{0}-]{0,40}",
        "[a-z0-9-]{0,45}/[a-z0-9._/-]{0,105}",
        "([a-z0-9_-]{0,64}\\.){0,5}[a-z0-9_-]{0,64}",
        "(refs/(heads|tags)/)?([a-z.@{-]{0,8}(\\.lock)?/){0,4}[a-z.@{-]{0,8}(\\.lock)?",
        "[0-9a-fA-Fg]{0,70}",
        "[\u{80}-\u{10ffff}]{0,20}",
    ]
}

/// An independent reading of `git check-ref-format --allow-onelevel` (see
/// `git help check-ref-format`), for ASCII refs.
fn git_accepts_ref(r: &str) -> bool {
    let bad_byte = |b: u8| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b);
    !r.is_empty()
        && r != "@"
        && !r.bytes().any(bad_byte)
        && !r.contains("..")
        && !r.contains("@{")
        && !r.ends_with('.')
        && r.split('/').all(|component| {
            !component.is_empty() && !component.starts_with('.') && !component.ends_with(".lock")
        })
}

/// A repo GitHub allows, by the rules `check_repo` states in its messages.
fn valid_repo() -> impl Strategy<Value = String> {
    ("[a-zA-Z0-9][a-zA-Z0-9-]{0,38}", "[a-zA-Z0-9._-]{1,100}")
        .prop_filter("'.' and '..' are not names", |(_, name)| {
            name != "." && name != ".."
        })
        .prop_map(|(owner, name)| format!("{owner}/{name}"))
}

proptest! {
    #![proptest_config(config())]

    // Property: no check panics, whatever the string.
    // Why: every one of them runs on request fields before anything else does.
    #[test]
    fn no_name_check_panics_on_any_string(s in any_name()) {
        let _ = check_repo(&s);
        let _ = check_hostname(&s);
        let _ = check_app_name(&s);
        let _ = check_ref(&s);
        let _ = check_sha(&s);
    }

    // Property: every refusal is a non-empty sentence that quotes the input.
    // Why: the message goes back to the person who sent the name.
    #[test]
    fn every_refusal_explains_itself_and_quotes_the_input(s in any_name()) {
        let quoted = format!("{s:?}");
        for result in [
            check_repo(&s),
            check_hostname(&s),
            check_app_name(&s),
            check_ref(&s),
            check_sha(&s),
        ] {
            if let Err(message) = result {
                prop_assert!(message.contains(&quoted), "{message:?} does not quote {quoted}");
            }
        }
    }

    // Property: an accepted repo is `owner/name` with exactly one '/', an owner
    // of 1-39 letters, digits or '-' not starting with '-', and a name of 1-100
    // letters, digits, '-', '_' or '.' that is not "." or "..".
    // Why: the repo ends up in job rows, log lines and the deploy's environment.
    #[test]
    fn an_accepted_repo_is_owner_slash_name(s in any_name()) {
        if check_repo(&s).is_ok() {
            prop_assert_eq!(s.matches('/').count(), 1, "{:?}", s);
            let (owner, name) = s.split_once('/').unwrap();
            prop_assert!((1..=39).contains(&owner.len()), "{:?}", s);
            prop_assert!(!owner.starts_with('-'), "{:?}", s);
            prop_assert!(owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{:?}", s);
            prop_assert!((1..=100).contains(&name.len()), "{:?}", s);
            prop_assert!(name != "." && name != "..", "{:?}", s);
            prop_assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{:?}", s
            );
        }
    }

    // Property: every repo of that shape is accepted.
    // Why: refusing a real GitHub repo would make it impossible to deploy.
    #[test]
    fn every_well_formed_repo_is_accepted(repo in valid_repo()) {
        prop_assert!(check_repo(&repo).is_ok(), "{:?}: {:?}", repo, check_repo(&repo));
    }

    // Property: an accepted host name is 1-253 bytes of dot-separated labels,
    // each 1-63 letters, digits, '-' or '_', not starting with '-'.
    // Why: host names select which agent runs a deploy and appear in URLs.
    #[test]
    fn an_accepted_hostname_is_dns_labels(s in any_name()) {
        if check_hostname(&s).is_ok() {
            prop_assert!((1..=253).contains(&s.len()), "{:?}", s);
            for label in s.split('.') {
                prop_assert!((1..=63).contains(&label.len()), "{:?}", s);
                prop_assert!(!label.starts_with('-'), "{:?}", s);
                prop_assert!(
                    label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{:?}", s
                );
            }
        }
    }

    // Property: every host name made of such labels (at most 253 bytes) is accepted.
    // Why: a valid host must be able to register an agent.
    #[test]
    fn every_well_formed_hostname_is_accepted(
        host in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62}", 1..6)
            .prop_map(|labels| labels.join("."))
            .prop_filter("at most 253 bytes", |h| h.len() <= 253),
    ) {
        prop_assert!(check_hostname(&host).is_ok(), "{:?}", host);
    }

    // Property: an accepted app name is 1-64 bytes, starts with a letter or
    // digit and holds only letters, digits, '-', '_' or '.'.
    // Why: app names are keys in apps.yaml, job rows and query strings.
    #[test]
    fn an_accepted_app_name_has_the_documented_shape(s in any_name()) {
        if check_app_name(&s).is_ok() {
            prop_assert!((1..=64).contains(&s.len()), "{:?}", s);
            prop_assert!(s.as_bytes()[0].is_ascii_alphanumeric(), "{:?}", s);
            prop_assert!(
                s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{:?}", s
            );
        }
    }

    // Property: every app name of that shape is accepted.
    #[test]
    fn every_well_formed_app_name_is_accepted(name in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}") {
        prop_assert!(check_app_name(&name).is_ok(), "{:?}", name);
    }

    // Property: an accepted ref obeys every rule of git check-ref-format: no
    // control characters, space, ~ ^ : ? * [ \, no "..", "@{" or "//", does not
    // start or end with '/', does not end with '.', no component starting with
    // '.' or ending with ".lock", not "@"; and it is at most 255 bytes.
    // Why: refs reach git on the host (through DEPLOYBOT_REF); a ref git would
    // refuse, or one carrying a newline or a space, must never get that far.
    #[test]
    fn an_accepted_ref_obeys_git_check_ref_format(s in any_name()) {
        if check_ref(&s).is_ok() {
            prop_assert!(!s.chars().any(char::is_control), "{:?}", s);
            prop_assert!(!s.contains(' '), "{:?}", s);
            prop_assert!((1..=255).contains(&s.len()), "{:?}", s);
            prop_assert!(git_accepts_ref(&s), "git check-ref-format refuses {:?}", s);
        }
    }

    // Property: for ASCII refs of at most 255 bytes, check_ref accepts exactly
    // what git check-ref-format accepts.
    // Why: its doc promises git's rules; refusing a ref git allows would make
    // a legitimate branch undeployable.
    #[test]
    fn for_ascii_refs_check_ref_agrees_with_git(
        s in prop_oneof![
            "[a-zA-Z0-9./_@{}~^:?*\\[\\\\ \t\u{7f}-]{0,20}",
            "(refs/(heads|tags)/)?([a-z.@{-]{0,8}(\\.lock)?/){0,4}[a-z.@{-]{0,8}(\\.lock)?",
            "[ -~]{0,255}",
        ]
    ) {
        prop_assume!(s.len() <= 255);
        prop_assert_eq!(check_ref(&s).is_ok(), git_accepts_ref(&s), "{:?}: {:?}", s, check_ref(&s));
    }

    // Property: check_sha accepts exactly 7 to 64 ASCII hex digits.
    // Why: the SHA is checked out on the host; anything else must be refused,
    // and every short, SHA-1 or SHA-256 commit id must pass.
    #[test]
    fn check_sha_accepts_exactly_7_to_64_hex_digits(s in any_name()) {
        let expected = (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(check_sha(&s).is_ok(), expected, "{:?}", s);
    }

    // Property: every 7-64 digit hex string is accepted (either case).
    #[test]
    fn every_hex_sha_is_accepted(s in "[0-9a-fA-F]{7,64}") {
        prop_assert!(check_sha(&s).is_ok(), "{:?}", s);
    }
}

/// A published pattern without its anchors, which proptest cannot generate from.
fn matching(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let inner = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$'));
    proptest::string::string_regex(inner.unwrap()).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// What a client builds from the patterns in the OpenAPI document is accepted.
    #[test]
    fn names_matching_the_published_patterns_pass_their_checks(
        repo in matching(REPO_PATTERN),
        host in matching(HOST_PATTERN),
        app in matching(APP_PATTERN),
        sha in matching(SHA_PATTERN),
    ) {
        let (_, name) = repo.split_once('/').unwrap();
        if name != "." && name != ".." {
            prop_assert!(check_repo(&repo).is_ok(), "{repo}");
        }
        if host.len() <= HOST_MAX {
            prop_assert!(check_hostname(&host).is_ok(), "{host}");
        }
        prop_assert!(check_app_name(&app).is_ok(), "{app}");
        prop_assert!(check_sha(&sha).is_ok(), "{sha}");
    }
}
