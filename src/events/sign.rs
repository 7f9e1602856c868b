//! Request signatures: HMAC-SHA256 over `timestamp + "." + body` with the endpoint's
//! secret, sent as `Feedgraph-Signature: t=<unix seconds>,v1=<lowercase hex>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "feedgraph-signature";
/// The header carrying the event id (the same on every attempt of one event).
pub const EVENT_ID_HEADER: &str = "feedgraph-event-id";
/// The header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "feedgraph-event-type";
/// The header carrying the id of this attempt (as in the delivery log).
pub const DELIVERY_ID_HEADER: &str = "feedgraph-delivery-id";

/// The hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of the [`SIGNATURE_HEADER`].
pub fn header_value(secret: &str, timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// A new endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("whsec_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // The signed bytes are exactly "<t>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"12.{}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sign("k", 12, b"{}"), want);
        assert_eq!(header_value("k", 12, b"{}"), format!("t=12,v1={want}"));
        assert_eq!(
            sign("Jefe", 0, b"x").len(),
            64,
            "a hex SHA-256 MAC is 64 characters"
        );
    }

    #[test]
    fn secrets_differ() {
        assert_ne!(new_secret(), new_secret());
        assert!(new_secret().starts_with("whsec_"));
    }
}
