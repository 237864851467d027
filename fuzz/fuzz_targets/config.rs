//! Configuration loading (`Settings::from_yaml`): the lenient schema reader, validation and
//! the file loader, with relative paths resolving into a demo site with real TLS files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let site = sealkit_fuzz::site();
    match sealkit::config::Settings::from_yaml(text, &site.dir, 1_800_000_000) {
        Ok(settings) => assert!(!settings.issuer.is_empty()),
        Err(sealkit::config::ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "invalid without a problem");
        }
        Err(_) => {}
    }
});
