//! X.500 distinguished names as data: parsed once — from a certificate's DER subject, or
//! from an RFC 4514 string an operator wrote — into relative distinguished names of
//! (attribute type OID, value) pairs, compared structurally, and rendered for display by
//! the one RFC 4514 escaper ([`escape_value`]).
//!
//! So `CN=café,O=a\=b` written by an operator, `CN=caf\C3\A9,O=a=b` as
//! `openssl x509 -subject -nameopt RFC2253` prints it, and the certificate's own subject
//! are the same name. Values are compared exactly (no case folding): a registered name
//! means that name.
//!
//! Not responsible for: deciding whether a certificate is trusted (that is `mtls`).

use std::fmt;

/// One attribute value: text, or (for a string type that has no text form, or a value
/// written `#hex` in RFC 4514) the DER encoding of the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Text(String),
    Der(Vec<u8>),
}

/// One attribute: its type as a dotted OID and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attribute {
    pub oid: String,
    pub value: Value,
}

/// A distinguished name: RDNs in DER order (most general first), each a set of attributes
/// (kept sorted, so a multi-valued RDN compares the same whatever order it was written in).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DistinguishedName {
    rdns: Vec<Vec<Attribute>>,
}

/// Short names of the attribute types (RFC 4514 §3 and those OpenSSL prints).
const NAMES: [(&str, &str); 14] = [
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("serialNumber", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("title", "2.5.4.12"),
    ("GN", "2.5.4.42"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

impl DistinguishedName {
    /// The subject (or issuer) of a certificate, as x509-parser read it.
    pub fn from_x509(name: &x509_parser::x509::X509Name<'_>) -> DistinguishedName {
        let rdns = name
            .iter_rdn()
            .map(|rdn| {
                let mut attributes: Vec<Attribute> = rdn
                    .iter()
                    .map(|atv| Attribute {
                        oid: atv.attr_type().to_id_string(),
                        value: match atv.as_str() {
                            Ok(text) => Value::Text(text.to_string()),
                            Err(_) => Value::Der(atv.attr_value().data.to_vec()),
                        },
                    })
                    .collect();
                attributes.sort();
                attributes
            })
            .collect();
        DistinguishedName { rdns }
    }

    /// The subject of a DER certificate; `None` when it does not parse.
    pub fn subject_of(certificate_der: &[u8]) -> Option<DistinguishedName> {
        let (_, cert) = x509_parser::parse_x509_certificate(certificate_der).ok()?;
        Some(Self::from_x509(cert.subject()))
    }

    /// Parses an RFC 4514 string (most specific RDN first): `CN=a\,b+UID=7,O=Ops\, Inc`.
    /// Types are short names (case-insensitive) or dotted OIDs; values may use `\` escapes
    /// (`\,` or two hex digits per byte of UTF-8) or be `#` and the hex of their DER
    /// encoding. Spaces around `,`, `+` and `=` are ignored.
    pub fn parse(text: &str) -> Result<DistinguishedName, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let mut rdns = Vec::new();
        if text.trim().is_empty() {
            return Err("an empty name".into());
        }
        loop {
            let mut rdn = vec![parser.attribute()?];
            loop {
                parser.skip_spaces();
                match parser.next() {
                    Some(b'+') => rdn.push(parser.attribute()?),
                    Some(b',') | Some(b';') => break,
                    None => {
                        rdn.sort();
                        rdns.push(rdn);
                        rdns.reverse();
                        return Ok(DistinguishedName { rdns });
                    }
                    Some(other) => {
                        return Err(format!(
                            "unexpected {:?} at byte {}",
                            char::from(other),
                            parser.at
                        ))
                    }
                }
            }
            rdn.sort();
            rdns.push(rdn);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }
}

/// RFC 4514 form, most specific RDN first, values escaped by [`escape_value`].
impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, attribute) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                let name = NAMES
                    .iter()
                    .find(|(_, oid)| *oid == attribute.oid)
                    .map(|(name, _)| (*name).to_string())
                    .unwrap_or_else(|| attribute.oid.clone());
                match &attribute.value {
                    Value::Text(text) => write!(f, "{name}={}", escape_value(text))?,
                    Value::Der(der) => write!(f, "{name}=#{}", crate::archive::hex(der))?,
                }
            }
        }
        Ok(())
    }
}

/// Escapes an attribute value as RFC 4514 §2.4 requires: `"` `+` `,` `;` `<` `>` `\`
/// always, `#` and space at the start, space at the end, NUL as `\00`. The one escaper
/// for names shown to people (inventory, logs, messages).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    /// `type=value`.
    fn attribute(&mut self) -> Result<Attribute, String> {
        self.skip_spaces();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            self.at += 1;
        }
        let name = std::str::from_utf8(self.bytes.get(start..self.at).unwrap_or_default())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(format!("an attribute type is missing at byte {start}"));
        }
        let oid = if name.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            if !name
                .split('.')
                .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
                || !name.contains('.')
            {
                return Err(format!("{name:?} is not a dotted OID"));
            }
            name.to_string()
        } else {
            NAMES
                .iter()
                .find(|(short, _)| short.eq_ignore_ascii_case(name))
                .map(|(_, oid)| (*oid).to_string())
                .ok_or_else(|| format!("unknown attribute type {name:?} (use its dotted OID)"))?
        };
        self.skip_spaces();
        if self.next() != Some(b'=') {
            return Err(format!("`=` expected after {name:?}"));
        }
        self.skip_spaces();
        let value = if self.peek() == Some(b'#') {
            self.at += 1;
            let start = self.at;
            while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                self.at += 1;
            }
            let hex = self.bytes.get(start..self.at).unwrap_or_default();
            if hex.is_empty() || hex.len() % 2 != 0 {
                return Err(format!("the value of {name:?} is not #<hex pairs>"));
            }
            Value::Der(hex.chunks(2).filter_map(hex_byte).collect())
        } else {
            Value::Text(self.text(name)?)
        };
        Ok(Attribute { oid, value })
    }

    /// A string value up to an unescaped `,` `;` `+` or the end; trailing unescaped spaces
    /// dropped.
    fn text(&mut self, name: &str) -> Result<String, String> {
        let mut out: Vec<u8> = Vec::new();
        let mut keep = 0; // length up to the last byte that is not an unescaped space
        while let Some(b) = self.peek() {
            match b {
                b',' | b';' | b'+' => break,
                b'\\' => {
                    self.at += 1;
                    match self.next() {
                        Some(h) if h.is_ascii_hexdigit() => {
                            let l = self
                                .next()
                                .filter(u8::is_ascii_hexdigit)
                                .ok_or_else(|| format!("a bad `\\` escape in {name:?}"))?;
                            out.extend(hex_byte(&[h, l]));
                        }
                        Some(c) if b" \"#+,;<=>\\".contains(&c) => out.push(c),
                        _ => return Err(format!("a bad `\\` escape in {name:?}")),
                    }
                    keep = out.len();
                }
                b'"' | b'<' | b'>' | 0 => {
                    return Err(format!(
                        "{:?} must be escaped in the value of {name:?}",
                        char::from(b)
                    ))
                }
                _ => {
                    self.at += 1;
                    out.push(b);
                    if b != b' ' {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        String::from_utf8(out).map_err(|_| format!("the value of {name:?} is not UTF-8"))
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_are_equal() {
        let written = DistinguishedName::parse("CN=café,O=a\\=b\\, Inc").unwrap();
        for other in [
            // openssl x509 -subject -nameopt RFC2253
            "CN=caf\\C3\\A9,O=a=b\\, Inc",
            "cn = café , o=a\\=b\\2C Inc",
            "2.5.4.3=café,2.5.4.10=a=b\\, Inc",
        ] {
            assert_eq!(DistinguishedName::parse(other).unwrap(), written, "{other}");
        }
        assert_ne!(
            DistinguishedName::parse("CN=cafe,O=a=b\\, Inc").unwrap(),
            written
        );
        assert_ne!(
            DistinguishedName::parse("O=a=b\\, Inc,CN=café").unwrap(),
            written,
            "RDN order matters"
        );
        // Multi-valued RDNs are sets.
        assert_eq!(
            DistinguishedName::parse("CN=a+UID=7,O=t").unwrap(),
            DistinguishedName::parse("UID=7+CN=a,O=t").unwrap()
        );
        assert_eq!(written.to_string(), "CN=café,O=a=b\\, Inc");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            "CN",
            "CN=a,",
            "XX=a",
            "1.2=a\\",
            "CN=#abc",
            "CN=a\"b",
            "2.5.4=x,=y",
        ] {
            assert!(DistinguishedName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_escaper_escapes_what_rfc_4514_requires() {
        assert_eq!(escape_value("a,b"), "a\\,b");
        assert_eq!(escape_value("#x "), "\\#x\\ ");
        assert_eq!(escape_value("Ops, Inc"), "Ops\\, Inc");
        assert_eq!(escape_value("a=b"), "a=b");
        assert_eq!(escape_value("plain"), "plain");
    }
}
