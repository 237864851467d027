//! The token-record codecs: the sled value format (`store::sled_store::fuzz_codec`, the
//! binary v1 record and the earlier JSON one), the sled batch of records
//! (`store::token_batches`) and the Redis one (JSON of `store::TokenRecord`). Mode bit 0
//! picks Redis, else bit 1 the batch; each asserts that what decodes re-encodes to
//! something that decodes equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealkit::store::TokenRecord;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 3 == 2 {
        use sealkit::store::token_batches;
        if let Ok(entries) = token_batches::entries(rest) {
            let owned: Vec<_> = entries.iter().map(|(id, r)| (*id, r.to_vec())).collect();
            let again = token_batches::encode(&owned);
            let reread = token_batches::entries(&again).expect("a re-encoded batch reads");
            assert_eq!(reread, entries, "batch round trip");
            for (_, record) in entries {
                let _ = sealkit::store::sled_store::fuzz_codec(record);
            }
        }
        return;
    }
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
