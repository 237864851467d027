//! TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) for users whose entry carries a
//! secret: decoding the base32 secret and checking a code against the steps around now.

use ring::hmac;

const STEP: i64 = 30;
const DIGITS: u32 = 6;

/// Decodes an RFC 4648 base32 secret (case and `=` padding and spaces ignored); `None` if
/// it is not base32 or shorter than 10 bytes (RFC 4226 §4: at least 128 bits recommended,
/// 80 the minimum).
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut count = 0u32;
    let mut out = Vec::new();
    for c in text.chars().filter(|c| *c != ' ' && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        bits = (bits << 5) | v;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    (out.len() >= 10).then_some(out)
}

/// The code for time step `counter` (RFC 4226 §5.3 dynamic truncation).
fn code_at(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(DIGITS)
}

/// Whether `code` is the code of the step of `now` or of one step either side (clock
/// drift), compared in constant time.
pub fn verify(secret: &[u8], code: &str, now: i64) -> bool {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let step = now.div_euclid(STEP);
    let mut ok = false;
    for s in [step - 1, step, step + 1] {
        if s < 0 {
            continue;
        }
        let expected = format!("{:06}", code_at(secret, s as u64));
        ok |= bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            code.as_bytes(),
        ));
    }
    ok
}

/// The current code (for tests and the drill).
pub fn current_code(secret: &[u8], now: i64) -> String {
    format!("{:06}", code_at(secret, now.div_euclid(STEP) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1, secret "12345678901234567890", 8 digits; the last six
    /// digits are the 6-digit code.
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        assert_eq!(current_code(secret, 59), "287082");
        assert_eq!(current_code(secret, 1_111_111_109), "081804");
        assert_eq!(current_code(secret, 1_234_567_890), "005924");
        assert!(verify(secret, "005924", 1_234_567_890));
        assert!(verify(secret, "005924", 1_234_567_890 + 30));
        assert!(!verify(secret, "005924", 1_234_567_890 + 90));
        assert!(!verify(secret, "5924", 1_234_567_890));
    }

    #[test]
    fn base32() {
        assert_eq!(
            decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            b"12345678901234567890"
        );
        assert!(decode_secret("GEZDG").is_none());
        assert!(decode_secret("not base32!").is_none());
    }
}
