//! The token-record codec as stored in Redis (JSON of `sealkit::store::TokenRecord`): what
//! decodes re-encodes to a record that decodes equal. The sled value codec
//! (`encode_record`/`decode_record` in `store::sled_store`) is private; see docs/fuzzing.md.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::store::TokenRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<TokenRecord>(data) {
        let encoded = serde_json::to_vec(&record).expect("a record encodes");
        let again: TokenRecord = serde_json::from_slice(&encoded).expect("and decodes");
        assert_eq!(again, record);
    }
});
