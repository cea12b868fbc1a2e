//! A credential: what one identity needs to join — its role and name, its nkey seed, the
//! admin keys it trusts, and (optionally) where NATS is and the CA that signed its
//! certificate. One TOML file, readable by its owner only; handed over once.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulkhead_actors::signing::Signer;
use bulkhead_schemas::identity::Role;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a bulkhead credential: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path} can be read by others (mode {mode:o}): a credential must be 0600")]
    Exposed { path: PathBuf, mode: u32 },
}

/// One identity's credential.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub role: Role,
    pub name: String,
    /// The nkey seed (`SU…`): the secret.
    pub seed: String,
    /// The admins' public keys: whose enrolments it trusts.
    pub admins: Vec<String>,
    /// Where NATS listens, when the credential says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<String>,
    /// The CA certificate (PEM) the server's certificate chains to, when it speaks TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("seed", &"<secret>")
            .finish()
    }
}

impl Credential {
    pub fn signer(&self) -> Result<Signer, CredsError> {
        Signer::from_seed(&self.seed).map_err(|e| CredsError::Format {
            path: PathBuf::new(),
            reason: e.to_string(),
        })
    }

    /// The inbox prefix this identity may receive replies on (and no other may).
    pub fn inbox(&self) -> String {
        inbox(self.role, &self.name)
    }

    /// Reads a credential, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Credential, CredsError> {
        let io = |source| CredsError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredsError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let c: Credential = toml::from_str(&text).map_err(|e| CredsError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Signer::from_seed(&c.seed).map_err(|e| CredsError::Format {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(c)
    }

    /// Writes the credential, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), CredsError> {
        let io = |source| CredsError::Io {
            path: path.to_owned(),
            source,
        };
        let text = self.to_text().map_err(|reason| CredsError::Format {
            path: path.to_owned(),
            reason,
        })?;
        write_secret(path, text.as_bytes()).map_err(io)
    }

    /// The file's text: what `node add` and `tenant add` print to hand over.
    pub fn to_text(&self) -> Result<String, String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        Ok(format!(
            "# bulkhead credential of {} {}: keep it 0600 and give it to that {} only.\n{text}",
            self.role, self.name, self.role
        ))
    }
}

/// `_INBOX.<role>.<name>`: the replies an identity receives.
pub fn inbox(role: Role, name: &str) -> String {
    format!("_INBOX.{role}.{name}")
}

/// Writes `bytes` to a new file only its owner can read (replacing any file there).
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_round_trips_at_0600_and_an_exposed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.creds");
        let c = Credential {
            role: Role::Node,
            name: "n1".into(),
            seed: Signer::generate().seed().unwrap(),
            admins: vec![Signer::generate().public_key().into()],
            nats: Some("nats://127.0.0.1:4222".into()),
            ca: None,
        };
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Credential::load(&path).unwrap();
        assert_eq!(
            back.signer().unwrap().public_key(),
            c.signer().unwrap().public_key()
        );
        assert!(
            !format!("{back:?}").contains(&c.seed),
            "the seed never reaches a log line"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Credential::load(&path),
            Err(CredsError::Exposed { .. })
        ));
    }
}
