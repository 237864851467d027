//! Both token-record codecs: the sled value format (`store::sled_store::fuzz_codec`, the
//! binary v1 record and the earlier JSON one) and the Redis one (JSON of
//! `store::TokenRecord`). Mode bit 0 picks the codec; each asserts that what decodes
//! re-encodes to a record that decodes equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::store::TokenRecord;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Some((record, again)) = sealkit::store::sled_store::fuzz_codec(rest) {
            assert_eq!(again.ok(), Some(record), "sled codec round trip");
        }
        return;
    }
    if let Ok(record) = serde_json::from_slice::<TokenRecord>(rest) {
        let encoded = serde_json::to_vec(&record).expect("a record encodes");
        let again: TokenRecord = serde_json::from_slice(&encoded).expect("and decodes");
        assert_eq!(again, record);
    }
});
