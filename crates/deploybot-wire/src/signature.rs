//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header GitHub signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    Malformed,
    /// The signature does not match the body.
    Mismatch,
}

/// The header value for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    mac
}

/// Checks `header` against `body`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    let mut verifier = Verifier::new(header, [secret])?;
    verifier.update(body);
    verifier.finish().map(drop).ok_or(SignatureError::Mismatch)
}

/// A signature checked while the body streams in, against several keys at
/// once (the current secret, the previous one, apps' own): the body need
/// not be held to be checked, and one pass serves every key.
pub struct Verifier {
    expected: [u8; 32],
    macs: Vec<HmacSha256>,
}

impl Verifier {
    /// For GitHub's `header` (`sha256=` and 64 hex digits) and `keys`.
    /// Refuses a missing or malformed header before any byte is read.
    pub fn new<'a>(
        header: Option<&[u8]>,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Verifier, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let digits = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(digits, &mut expected).map_err(|_| SignatureError::Malformed)?;
        Ok(Verifier {
            expected,
            macs: keys.into_iter().map(|key| mac(key, b"")).collect(),
        })
    }

    /// The next bytes of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
    }

    /// The index of the (first) key the body was signed with, each
    /// compared in constant time; `None` when none matches.
    pub fn finish(self) -> Option<usize> {
        let expected = self.expected;
        self.macs
            .into_iter()
            .map(|mac| mac.verify_slice(&expected).is_ok())
            .collect::<Vec<_>>()
            .into_iter()
            .position(|matched| matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_pieces_is_checked_against_every_key() {
        let body = b"Hello, World!";
        let header = sign(b"second", body);
        let keys: [&[u8]; 3] = [b"first", b"second", b"third"];
        let mut verifier = Verifier::new(Some(header.as_bytes()), keys).unwrap();
        for piece in body.chunks(3) {
            verifier.update(piece);
        }
        assert_eq!(verifier.finish(), Some(1));
        let mut wrong = Verifier::new(Some(header.as_bytes()), [b"first".as_slice()]).unwrap();
        wrong.update(body);
        assert_eq!(wrong.finish(), None);
        assert!(matches!(
            Verifier::new(None, keys),
            Err(SignatureError::Missing)
        ));
        assert!(matches!(
            Verifier::new(Some(b"sha256=abc"), keys),
            Err(SignatureError::Malformed)
        ));
    }

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" page.
        let signature = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(
            verify(
                b"It's a Secret to Everybody",
                b"Hello, World!",
                Some(signature.as_bytes())
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_missing_malformed_and_wrong_signatures() {
        let good = sign(b"k", b"body");
        assert_eq!(verify(b"k", b"body", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"k", b"body", Some(b"sha1=00")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", b"body", Some(b"sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", b"body", Some(b"sha256=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"other", b"body", Some(good.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", b"bodY", Some(good.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }
}
