//! `tenants:`: identifiers and each tenant's policy.

use crate::config::schema::TenantFile;
use crate::config::settings::DpopSettings;
use crate::config::{valid_identifier, Problems};
use crate::policy::TenantPolicy;
use std::collections::BTreeMap;

pub(super) fn validate_tenants(
    tenants_file: &[TenantFile],
    dpop: &DpopSettings,
    problems: &mut Problems,
) -> BTreeMap<String, TenantPolicy> {
    let mut tenants = BTreeMap::new();
    for (i, tenant) in tenants_file.iter().enumerate() {
        let path = format!("tenants[{i}]");
        if !valid_identifier(&tenant.id) {
            problems.add(format!("{path}.id"), "must be 1-128 of A-Z a-z 0-9 - _ . :");
        }
        let policy = TenantPolicy {
            constraint: tenant.sender_constraint,
            require_nonce: tenant.require_nonce || dpop.nonce_required,
        };
        if policy.constraint.needs_dpop() && !dpop.enabled {
            problems.add(
                format!("{path}.senderConstraint"),
                "requires DPoP but security.senderConstraints.dpop.enabled is false",
            );
        }
        if tenants.insert(tenant.id.clone(), policy).is_some() {
            problems.add(
                format!("{path}.id"),
                format!("duplicate tenant `{}`", tenant.id),
            );
        }
    }
    tenants
}
