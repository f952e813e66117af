//! Property tests of GitHub's webhook signature scheme (`signature::sign` and
//! `signature::verify`): what any header, secret and body can and cannot do.

use deploybot_wire::signature::{SignatureError, sign, verify};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A header value as an attacker or a broken proxy might send it: raw bytes,
/// any text, and many near misses of `sha256=<64 hex digits>`.
fn header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..100),
        any::<String>().prop_map(String::into_bytes),
        // The right prefix followed by hex digits of any length (odd, short, long).
        "[0-9a-fA-F]{0,130}".prop_map(|digits| format!("sha256={digits}").into_bytes()),
        // The right prefix followed by exactly 64 characters, hex or not.
        "[0-9a-fA-Fg-zG-Z =+\u{e9}\u{1F600}]{64}"
            .prop_map(|digits| format!("sha256={digits}").into_bytes()),
        // The right prefix followed by anything, including non-ASCII and control characters.
        any::<String>().prop_map(|rest| format!("sha256={rest}").into_bytes()),
        // Other prefixes in front of well-formed digits.
        (
            "(sha1|SHA256|sha512|sha256 |sha256:|sha256==| sha256|sha25|)=?",
            "[0-9a-f]{64}"
        )
            .prop_map(|(prefix, digits)| format!("{prefix}{digits}").into_bytes()),
    ]
}

/// `sha256=` followed by exactly 64 ASCII hex digits (either case): the only
/// headers the docs allow past `Malformed`.
fn is_well_formed(header: &[u8]) -> bool {
    header
        .strip_prefix(b"sha256=")
        .is_some_and(|digits| digits.len() == 64 && digits.iter().all(u8::is_ascii_hexdigit))
}

/// Secrets that HMAC does not treat as equal to `other`: HMAC pads keys of up
/// to one block with zero bytes (so `k` and `k\0` are the same key) and
/// hashes longer ones, so distinct strings without NUL and of at most 64
/// bytes are distinct keys.
fn distinct_secrets() -> impl Strategy<Value = (String, String)> {
    ("[^\u{0}]{0,16}", "[^\u{0}]{0,16}")
        .prop_filter("secrets must differ", |(a, b)| a != b)
        .prop_filter("at most one HMAC block", |(a, b)| {
            a.len() <= 64 && b.len() <= 64
        })
}

proptest! {
    #![proptest_config(config())]

    // Property: verify never panics, and its verdict is exactly the one its
    // docs promise: Missing without a header, Malformed unless the header is
    // `sha256=` + 64 hex digits, otherwise Ok only for the right digest.
    // Why: the header is attacker-controlled and verify runs before anything
    // else on the webhook endpoint.
    #[test]
    fn verify_never_panics_and_classifies_every_header(
        secret in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        header in proptest::option::weighted(0.95, header()),
    ) {
        let verdict = verify(&secret, &body, header.as_deref());
        match &header {
            None => prop_assert_eq!(verdict, Err(SignatureError::Missing)),
            Some(h) if !is_well_formed(h) => {
                prop_assert_eq!(verdict, Err(SignatureError::Malformed));
            }
            Some(h) => {
                let right = sign(&secret, &body);
                if h.to_ascii_lowercase() == right.as_bytes() {
                    prop_assert_eq!(verdict, Ok(()));
                } else {
                    prop_assert_eq!(verdict, Err(SignatureError::Mismatch));
                }
            }
        }
    }

    // Property: verify never panics on text secrets and headers either (the
    // server hands it the configured secret string and the header's bytes).
    #[test]
    fn verify_never_panics_on_arbitrary_strings(
        secret in any::<String>(),
        body in any::<String>(),
        header in any::<String>(),
    ) {
        let _ = verify(secret.as_bytes(), body.as_bytes(), Some(header.as_bytes()));
        let _ = verify(secret.as_bytes(), body.as_bytes(), None);
    }

    // Property: what sign produces, verify accepts, for any secret and body,
    // and it is always `sha256=` + 64 lowercase hex digits as GitHub sends it.
    // Why: otherwise the test helpers and real GitHub deliveries could disagree.
    #[test]
    fn sign_then_verify_is_ok_for_any_secret_and_body(
        secret in proptest::collection::vec(any::<u8>(), 0..200),
        body in proptest::collection::vec(any::<u8>(), 0..1000),
    ) {
        let header = sign(&secret, &body);
        prop_assert!(is_well_formed(header.as_bytes()), "{}", header);
        prop_assert_eq!(header.to_ascii_lowercase(), header.clone());
        prop_assert_eq!(verify(&secret, &body, Some(header.as_bytes())), Ok(()));
    }

    // Property: changing any single byte of a signed body makes it fail.
    // Why: this is what the signature is for: a tampered payload must never deploy.
    #[test]
    fn changing_any_byte_of_the_body_fails(
        secret in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 1..500),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let header = sign(&secret, &body);
        let mut tampered = body.clone();
        let at = index.index(tampered.len());
        tampered[at] ^= flip;
        prop_assert_eq!(
            verify(&secret, &tampered, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    // Property: adding or removing bytes at the end of a signed body fails too.
    // Why: truncation and extension are the other easy ways to tamper.
    #[test]
    fn truncating_or_extending_the_body_fails(
        secret in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 1..500),
        extra in proptest::collection::vec(any::<u8>(), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let header = sign(&secret, &body);
        let mut extended = body.clone();
        extended.extend_from_slice(&extra);
        prop_assert_eq!(
            verify(&secret, &extended, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let truncated = &body[..cut.index(body.len())];
        prop_assert_eq!(
            verify(&secret, truncated, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    // Property: replacing any one hex digit of a good signature with another
    // value fails (as Mismatch: the header is still well-formed).
    // Why: a near-miss signature must be as useless as a random one.
    #[test]
    fn changing_any_hex_digit_of_the_signature_fails(
        secret in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 0..500),
        index in any::<prop::sample::Index>(),
        delta in 1u8..16,
        upper in any::<bool>(),
    ) {
        let header = sign(&secret, &body);
        let mut bytes = header.into_bytes();
        let at = "sha256=".len() + index.index(64);
        let old = (bytes[at] as char).to_digit(16).unwrap() as u8;
        let new = char::from_digit(u32::from((old + delta) % 16), 16).unwrap();
        bytes[at] = if upper { new.to_ascii_uppercase() } else { new } as u8;
        prop_assert_eq!(
            verify(&secret, &body, Some(&bytes)),
            Err(SignatureError::Mismatch)
        );
    }

    // Property: the right digest behind any other prefix (`sha1=`, `SHA256=`,
    // `sha256:`, a space, nothing…) is refused as Malformed.
    // Why: only `sha256=` names the algorithm we check; accepting a look-alike
    // would mean parsing something we did not mean to accept.
    #[test]
    fn a_header_with_another_prefix_fails(
        secret in proptest::collection::vec(any::<u8>(), 0..100),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in prop_oneof![
            Just(String::new()),
            Just("sha1=".to_owned()),
            Just("SHA256=".to_owned()),
            Just("sha512=".to_owned()),
            Just("sha256:".to_owned()),
            Just("sha256 =".to_owned()),
            Just(" sha256=".to_owned()),
            Just("sha256==".to_owned()),
            "[a-zA-Z0-9 =:-]{1,10}".prop_filter("not sha256=", |p| p != "sha256="),
        ],
    ) {
        let good = sign(&secret, &body);
        let digits = good.strip_prefix("sha256=").unwrap();
        let header = format!("{prefix}{digits}");
        prop_assert_eq!(
            verify(&secret, &body, Some(header.as_bytes())),
            Err(SignatureError::Malformed)
        );
    }

    // Property: a body signed with another secret is refused as Mismatch.
    // Why: the secret is the webhook's only credential.
    #[test]
    fn a_signature_made_with_another_secret_fails(
        (secret, other) in distinct_secrets(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let header = sign(other.as_bytes(), &body);
        prop_assert_eq!(
            verify(secret.as_bytes(), &body, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }
}
