//! Request signatures: the seeds' hex HMAC over the body, and Standard Webhooks'
//! `v1,<base64 HMAC over "id.timestamp.body">`.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::Secret;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Hex HMAC-SHA256 keyed with the secret string's UTF-8 bytes (`whsec_…` included), over the
/// body: what the seeds' receivers compute.
pub fn hex_signature(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac(secret.expose().as_bytes(), &[body]))
}

/// One Standard Webhooks signature, `v1,<base64>`, keyed with the decoded secret.
pub fn standard_signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(
        &secret.standard_key(),
        &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn standard_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|s| standard_signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ed25519 `webhook-signature` header: `v1a,<base64>` per key, space-separated, each over
/// `{msg_id}.{timestamp}.{body}` as the Standard Webhooks specification defines.
pub fn ed25519_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    use ed25519_dalek::Signer;
    let ts = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + ts.len() + 2 + body.len());
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(ts.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    secrets
        .into_iter()
        .filter_map(Secret::ed25519_key)
        .map(|key| {
            format!(
                "v1a,{}",
                base64::engine::general_purpose::STANDARD.encode(key.sign(&content).to_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_signatures_verify_with_the_public_key() {
        use ed25519_dalek::Verifier;
        let secret = Secret::generate_for(crate::model::Signing::Ed25519);
        let header = ed25519_header([&secret], "msg_1", 1_700_000_000, b"{}");
        let sig = header.strip_prefix("v1a,").expect("v1a");
        let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap()
            .try_into()
            .unwrap();
        let public = secret.public_key().expect("a public key");
        let public: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(public.strip_prefix("whpk_").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        assert!(key.verify(b"msg_1.1700000000.{}", &sig).is_ok());
        assert!(key.verify(b"msg_1.1700000001.{}", &sig).is_err());
        assert_eq!(
            Secret::generate().public_key(),
            None,
            "an HMAC secret has none"
        );
    }

    #[test]
    fn hex_signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe".
        let digest = hex::encode(hmac(b"Jefe", &[b"what do ya want for nothing?"]));
        assert_eq!(
            digest,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        // The example from the Standard Webhooks specification.
        let secret: Secret =
            serde_json::from_str("\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"").unwrap();
        let sig = standard_signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_space_separated_signatures() {
        let a = Secret::generate();
        let b = Secret::generate();
        let h = standard_header([&a, &b], "evt_1", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], standard_signature(&a, "evt_1", 1, b"{}"));
        assert_eq!(parts[1], standard_signature(&b, "evt_1", 1, b"{}"));
    }
}
