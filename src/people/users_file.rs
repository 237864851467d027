//! Editing a users file (`sealkit user add`): a typed edit of the YAML tree, and the result
//! validated by the same rules as the configuration before anything is written.

use crate::config::people::parse_users;
use crate::config::ConfigProblem;
use serde_yaml::{Mapping, Value};

/// A user to add. `Debug` shows no hash or secret.
pub struct NewUser {
    pub id: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub groups: Vec<String>,
    pub totp_secret: Option<String>,
}
impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("id", &self.id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("the users file is not YAML: {0}")]
    Syntax(#[source] serde_yaml::Error),
    #[error("the users file has no `users:` list")]
    Shape,
    #[error("user `{0}` already exists")]
    Exists(String),
    #[error("the result would be invalid:\n  {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<ConfigProblem>),
    #[error("cannot write YAML: {0}")]
    Write(#[source] serde_yaml::Error),
}

/// The users file `existing` (or a new one) with `user` appended, validated.
pub fn add(existing: Option<&str>, user: &NewUser) -> Result<String, UsersFileError> {
    let mut root: Value = match existing {
        Some(text) if !text.trim().is_empty() => {
            serde_yaml::from_str(text).map_err(UsersFileError::Syntax)?
        }
        _ => Value::Mapping(Mapping::new()),
    };
    let map = root.as_mapping_mut().ok_or(UsersFileError::Shape)?;
    let users = map
        .entry(Value::from("users"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if users.is_null() {
        *users = Value::Sequence(Vec::new());
    }
    let list = users.as_sequence_mut().ok_or(UsersFileError::Shape)?;
    if list
        .iter()
        .any(|u| u.get("id").and_then(Value::as_str) == Some(user.id.as_str()))
    {
        return Err(UsersFileError::Exists(user.id.clone()));
    }
    let mut entry = Mapping::new();
    entry.insert("id".into(), user.id.clone().into());
    if let Some(name) = &user.display_name {
        entry.insert("displayName".into(), name.clone().into());
    }
    entry.insert("passwordHash".into(), user.password_hash.clone().into());
    entry.insert(
        "groups".into(),
        Value::Sequence(user.groups.iter().cloned().map(Value::from).collect()),
    );
    if let Some(secret) = &user.totp_secret {
        entry.insert("totpSecret".into(), secret.clone().into());
    }
    list.push(Value::Mapping(entry));
    let text = serde_yaml::to_string(&root).map_err(UsersFileError::Write)?;
    parse_users(&text).map_err(UsersFileError::Invalid)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> NewUser {
        NewUser {
            id: id.into(),
            display_name: Some("Ann".into()),
            password_hash: crate::people::password::hash_password("pw", 1024, 1).unwrap(),
            groups: vec!["operators".into()],
            totp_secret: None,
        }
    }

    #[test]
    fn adds_to_a_new_and_an_existing_file_and_refuses_a_duplicate() {
        let first = add(None, &user("ann")).unwrap();
        let second = add(Some(&first), &user("bob")).unwrap();
        let users = parse_users(&second).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["ann"].groups, vec!["operators".to_string()]);
        assert!(matches!(
            add(Some(&second), &user("ann")),
            Err(UsersFileError::Exists(_))
        ));
        let mut bad = user("carol");
        bad.password_hash = "plain".into();
        assert!(matches!(
            add(Some(&second), &bad),
            Err(UsersFileError::Invalid(_))
        ));
    }
}
