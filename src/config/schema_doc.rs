//! A test that `docs/configuration.md` documents every key `authority.yaml` accepts, and no
//! key it does not: the key paths are read from the serde structs in `schema.rs` (field
//! names in camelCase, nested structs followed) and compared with the doc's key table.

use std::collections::{BTreeMap, BTreeSet};

/// `struct name → [(field name, field type)]` from the source of `schema.rs`.
fn structs(source: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for line in source.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some((name.to_string(), Vec::new()));
            }
            continue;
        }
        if line == "}" {
            if let Some((name, fields)) = current.take() {
                out.insert(name, fields);
            }
            continue;
        }
        if let (Some((_, fields)), Some(rest)) = (current.as_mut(), line.strip_prefix("pub ")) {
            if let Some((name, ty)) = rest.split_once(": ") {
                fields.push((name.to_string(), ty.trim_end_matches(',').to_string()));
            }
        }
    }
    out
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Every key path under `ty` (`tls.clientCrl`, `clients[].scopes`).
fn paths(
    structs: &BTreeMap<String, Vec<(String, String)>>,
    ty: &str,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    let Some(fields) = structs.get(ty) else {
        return;
    };
    for (name, field_ty) in fields {
        let (inner, list) = match field_ty.strip_prefix("Vec<") {
            Some(rest) => (rest.trim_end_matches('>'), true),
            None => (
                field_ty
                    .strip_prefix("Option<")
                    .map(|r| r.trim_end_matches('>'))
                    .unwrap_or(field_ty),
                false,
            ),
        };
        let path = format!("{prefix}{}", camel(name));
        if structs.contains_key(inner) {
            let nested = if list {
                format!("{path}[].")
            } else {
                format!("{path}.")
            };
            paths(structs, inner, &nested, out);
        } else {
            out.insert(path);
        }
    }
}

#[test]
fn the_configuration_page_documents_every_key_of_the_schema() {
    let source = include_str!("schema.rs");
    let structs = structs(source);
    let mut schema = BTreeSet::new();
    paths(&structs, "AuthorityFile", "", &mut schema);
    assert!(schema.contains("tls.clientCrl"), "{schema:?}");
    assert!(
        schema.contains("clients[].certificateThumbprints"),
        "{schema:?}"
    );
    // `storage.password` is accepted by the parser only to be refused with a clear message.
    schema.remove("storage.password");

    let page = include_str!("../../docs/configuration.md");
    let table = page
        .split("## Every key")
        .nth(1)
        .expect("docs/configuration.md has a `## Every key` table");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = schema.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&schema).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md: undocumented keys {missing:?}; documented keys the schema lacks {extra:?}"
    );
}

/// The kit's default configuration checks client certificates against the site CA's CRL
/// (without it `sealkit ca revoke` changes nothing on a kit host) and parses as the schema.
#[test]
fn the_kit_configuration_checks_the_client_crl() {
    let text = include_str!("../../kit/authority.yaml");
    let file: super::schema::AuthorityFile = serde_yaml::from_str(text).unwrap();
    assert!(file.tls.client_ca.is_some());
    assert_eq!(
        file.tls.client_crl.as_deref(),
        Some(std::path::Path::new("/etc/sealkit/tls/site-ca.crl"))
    );
}
