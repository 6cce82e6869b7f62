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

#[cfg(test)]
mod tests {
    use super::*;

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
