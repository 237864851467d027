//! What the fuzz targets share: fixtures made once per process from sealkit's own
//! machinery (a demo site with real TLS files and its validated settings, a DPoP key, a
//! kit signing key), and the framing of structured inputs.

use std::path::PathBuf;
use std::sync::OnceLock;

/// A demo site in a temporary directory and its validated settings.
pub struct Site {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub settings: sealkit::config::Settings,
    _tmp: tempfile::TempDir,
}

pub fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let demo = sealkit::demo::prepare(&tmp.path().join("site"), "127.0.0.1:8443".parse().expect("addr"))
            .expect("demo site");
        let settings = sealkit::config::Settings::load(&demo.config).expect("demo settings");
        Site {
            dir: demo.dir.clone(),
            config: demo.config.clone(),
            settings,
            _tmp: tmp,
        }
    })
}

/// A fixed ES256 DPoP key: its public JWK and a signer over arbitrary signing input.
pub struct DpopKey {
    pub public_jwk: serde_json::Value,
    pub signer: Box<dyn josekit::jws::JwsSigner>,
}

pub fn dpop_key() -> &'static DpopKey {
    static KEY: OnceLock<DpopKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = sealkit::client::ProofKey::es256().expect("ES256 key");
        let private = josekit::jwk::Jwk::from_bytes(key.private_jwk().to_string().as_bytes())
            .expect("jwk");
        let signer = josekit::jws::ES256.signer_from_jwk(&private).expect("signer");
        DpopKey {
            public_jwk: key.public_jwk(),
            signer: Box::new(signer),
        }
    })
}

/// A minisign key pair (the kit's signer) and the trusted set holding its public key.
pub struct KitKey {
    pub secret: minisign::SecretKey,
    pub trusted: sealkit::bundle::TrustedKeys,
    _tmp: tempfile::TempDir,
}

pub fn kit_key() -> &'static KitKey {
    static KEY: OnceLock<KitKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (secret, public) = (tmp.path().join("k.key"), tmp.path().join("k.pub"));
        sealkit::bundle::keygen(&secret, &public, sealkit::bundle::Passphrase::Unencrypted)
            .expect("keygen");
        let sk = sealkit::bundle::load_secret_key(&secret, sealkit::bundle::Passphrase::Unencrypted)
            .expect("secret key");
        let trusted = sealkit::bundle::TrustedKeys::load_paths(&[public]).expect("trusted");
        KitKey {
            secret: sk,
            trusted,
            _tmp: tmp,
        }
    })
}

/// Splits `data` at the first `0xff` byte: (before, after). Structured targets use it to
/// carry two fields in one input.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// zstd level 1, the way a hostile signer would compress a crafted tar stream.
///
/// One compression context per thread, reused: a fresh one per input (`zstd::encode_all`)
/// spent most of the bundle target's time allocating and zeroing its tables.
pub fn compress(tar: &[u8]) -> Vec<u8> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            std::cell::RefCell::new(zstd::bulk::Compressor::new(1).ok());
    }
    COMPRESSOR.with(|cell| {
        cell.borrow_mut()
            .as_mut()
            .and_then(|c| c.compress(tar).ok())
            .unwrap_or_default()
    })
}
