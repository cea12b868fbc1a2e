//! The admin's data directory: the book of identities (public keys only, what nats-server's
//! users and the log's enrolments are made from) and the credentials written for each.
//!
//! ```text
//! <data>/identities.json           role, name, public key, node classes, revoked
//! <data>/keys/<role>-<name>.creds  each identity's credential (0600, directory 0700)
//! <data>/keys/<role>-<name>.nk     its seed alone, for `nats --nkey` (0600)
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bulkhead_actors::signing::Signer;
use bulkhead_schemas::RuntimeClass;
use bulkhead_schemas::identity::Role;
use bulkhead_schemas::subjects;
use serde::{Deserialize, Serialize};

use super::creds::{Credential, CredsError};

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error(transparent)]
    Creds(#[from] CredsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{role} name {name:?} must be 1-64 of [A-Za-z0-9_-]{reserved}")]
    BadName {
        role: Role,
        name: String,
        reserved: String,
    },
    #[error(
        "another `bulkhead up` runs on {path} ({holder}): stop it first, or give this one \
         its own --data-dir"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("no {role} {name} in the book")]
    Unknown { role: Role, name: String },
    #[error("{0} is not set up: run `bulkhead init --data-dir {0}` (or `bulkhead up`, which does)")]
    NotSetUp(String),
}

/// One identity in the book.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub role: Role,
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<RuntimeClass>,
    #[serde(default)]
    pub revoked: bool,
    /// Its curve public key (derived from its seed), for secrets sealed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xkey: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Book {
    pub identities: Vec<Entry>,
}

impl Book {
    /// The identities that may connect.
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        self.identities.iter().filter(|e| !e.revoked)
    }

    pub fn get(&self, role: Role, name: &str) -> Option<&Entry> {
        self.live().find(|e| e.role == role && e.name == name)
    }

    /// The admins' public keys: every reader's trust anchor.
    pub fn admins(&self) -> Vec<String> {
        self.live()
            .filter(|e| e.role == Role::Admin)
            .map(|e| e.key.clone())
            .collect()
    }
}

/// The services `init` creates, each with its own key.
pub const SERVICES: [(Role, &str); 4] = [
    (Role::Scheduler, "scheduler"),
    (Role::Failover, "failover"),
    (Role::Api, "api"),
    (Role::Scanner, "scanner"),
];

/// An admin's data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn book_path(&self) -> PathBuf {
        self.root.join("identities.json")
    }

    /// Where the credential of `role` `name` is kept.
    pub fn creds_path(&self, role: Role, name: &str) -> PathBuf {
        self.root.join("keys").join(format!("{role}-{name}.creds"))
    }

    /// Where the seed of `role` `name` is kept alone, for the `nats` CLI's `--nkey`.
    pub fn seed_path(&self, role: Role, name: &str) -> PathBuf {
        self.root.join("keys").join(format!("{role}-{name}.nk"))
    }

    /// Whether `init` ran here.
    pub fn is_set_up(&self) -> bool {
        self.book_path().exists()
    }

    /// The book of identities.
    pub fn book(&self) -> Result<Book, BookError> {
        let path = self.book_path();
        if !path.exists() {
            return Err(BookError::NotSetUp(self.root.display().to_string()));
        }
        let text = std::fs::read_to_string(&path).map_err(|source| BookError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| BookError::Format {
            path,
            reason: e.to_string(),
        })
    }

    fn save(&self, book: &Book) -> Result<(), BookError> {
        let path = self.book_path();
        let io = |source| BookError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let text = serde_json::to_string_pretty(book).map_err(|e| BookError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Sets the directory up once: an admin, the services and the default tenant, each
    /// with its own key. A directory already set up is left as it is.
    /// Locks the directory for one `bulkhead up` (an advisory lock on `up.lock`, holding this
    /// process's id), for as long as the returned file is open: a second `up` on the same
    /// directory would start a second nats-server on the same JetStream store.
    pub fn lock_up(&self) -> Result<std::fs::File, BookError> {
        use std::io::{Read, Seek, Write};
        let path = self.root.join("up.lock");
        let io = |source| BookError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(io)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => "its process id unknown".to_owned(),
                    p => format!("process {p}"),
                };
                return Err(BookError::Locked {
                    path: self.root.clone(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        f.set_len(0).map_err(io)?;
        f.rewind().map_err(io)?;
        write!(f, "{}", std::process::id()).map_err(io)?;
        Ok(f)
    }

    pub fn init(&self) -> Result<Book, BookError> {
        if self.is_set_up() {
            return self.book();
        }
        let keys = self.root.join("keys");
        std::fs::create_dir_all(&keys).map_err(|source| BookError::Io {
            path: keys.clone(),
            source,
        })?;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| BookError::Io {
                path: keys.clone(),
                source,
            },
        )?;
        self.save(&Book::default())?;
        self.enroll(Role::Admin, "admin", Vec::new())?;
        for (role, name) in SERVICES {
            self.enroll(role, name, Vec::new())?;
        }
        self.enroll(Role::Tenant, subjects::DEFAULT_TENANT, Vec::new())?;
        self.book()
    }

    /// Enrols `role` `name` with a new key (a name enrolled before gets a new key: the old
    /// one is done) and writes its credential. Returns it.
    pub fn enroll(
        &self,
        role: Role,
        name: &str,
        classes: Vec<RuntimeClass>,
    ) -> Result<Credential, BookError> {
        let mut out = self.enroll_all(vec![(role, name.to_owned(), classes)])?;
        Ok(out.remove(0))
    }

    /// Enrols many identities at once (the book written once): a fleet of nodes.
    pub fn enroll_all(
        &self,
        who: Vec<(Role, String, Vec<RuntimeClass>)>,
    ) -> Result<Vec<Credential>, BookError> {
        let mut book = self.book()?;
        let mut out = Vec::with_capacity(who.len());
        for (role, name, classes) in who {
            out.push(self.enroll_in(&mut book, role, &name, classes)?);
        }
        self.save(&book)?;
        Ok(out)
    }

    fn enroll_in(
        &self,
        book: &mut Book,
        role: Role,
        name: &str,
        classes: Vec<RuntimeClass>,
    ) -> Result<Credential, BookError> {
        check_name(role, name)?;
        let signer = Signer::generate();
        for e in book
            .identities
            .iter_mut()
            .filter(|e| e.role == role && e.name == name)
        {
            e.revoked = true;
        }
        book.identities.push(Entry {
            role,
            name: name.to_owned(),
            key: signer.public_key().to_owned(),
            classes,
            revoked: false,
            xkey: Some(bulkhead_actors::secrets::xkey_of(&signer).public_key()),
        });
        let admins = if role == Role::Admin {
            let mut a = book.admins();
            a.retain(|k| k != signer.public_key());
            a.push(signer.public_key().to_owned());
            a
        } else {
            book.admins()
        };
        let creds = Credential {
            role,
            name: name.to_owned(),
            seed: signer.seed().map_err(|e| BookError::Format {
                path: self.creds_path(role, name),
                reason: e.to_string(),
            })?,
            admins,
            nats: None,
            ca: self.ca(),
        };
        creds.save(&self.creds_path(role, name))?;
        // The seed alone, as the `nats` CLI takes it (`nats --nkey FILE`).
        let nk = self.seed_path(role, name);
        super::creds::write_secret(&nk, format!("{}\n", creds.seed).as_bytes())
            .map_err(|source| BookError::Io { path: nk, source })?;
        Ok(creds)
    }

    /// Marks `role` `name` revoked (its credential file is removed). Returns its entry.
    pub fn revoke(&self, role: Role, name: &str) -> Result<Entry, BookError> {
        let mut book = self.book()?;
        let mut found = None;
        for e in book
            .identities
            .iter_mut()
            .filter(|e| e.role == role && e.name == name && !e.revoked)
        {
            e.revoked = true;
            found = Some(e.clone());
        }
        let entry = found.ok_or_else(|| BookError::Unknown {
            role,
            name: name.to_owned(),
        })?;
        self.save(&book)?;
        let _ = std::fs::remove_file(self.creds_path(role, name));
        let _ = std::fs::remove_file(self.seed_path(role, name));
        Ok(entry)
    }

    /// The CA certificate of the server's TLS, once made (PEM).
    pub fn ca(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("tls").join("ca.pem")).ok()
    }

    /// Puts `ca` into every credential written so far (the server just began to speak TLS).
    pub fn set_ca(&self, ca: &str) -> Result<(), BookError> {
        for e in self.book()?.live() {
            let path = self.creds_path(e.role, &e.name);
            let Ok(mut c) = Credential::load(&path) else {
                continue; // handed over and removed: the CA travels with the next one
            };
            if c.ca.as_deref() != Some(ca) {
                c.ca = Some(ca.to_owned());
                c.save(&path)?;
            }
        }
        Ok(())
    }

    /// The credential written for `role` `name`.
    pub fn creds(&self, role: Role, name: &str) -> Result<Credential, BookError> {
        Ok(Credential::load(&self.creds_path(role, name))?)
    }
}

fn check_name(role: Role, name: &str) -> Result<(), BookError> {
    let ok = match role {
        Role::Tenant => subjects::is_valid_tenant(name),
        _ => subjects::is_valid_token(name),
    };
    if ok {
        return Ok(());
    }
    let reserved = match role {
        Role::Tenant => format!(", and none of {:?}", subjects::RESERVED_TENANTS),
        _ => String::new(),
    };
    Err(BookError::BadName {
        role,
        name: name.to_owned(),
        reserved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_one_key_per_identity_and_enrolling_again_replaces_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let book = data.init().unwrap();
        let roles: Vec<Role> = book.live().map(|e| e.role).collect();
        assert_eq!(
            roles,
            [
                Role::Admin,
                Role::Scheduler,
                Role::Failover,
                Role::Api,
                Role::Scanner,
                Role::Tenant
            ]
        );
        let keys: std::collections::BTreeSet<&str> = book.live().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), 6, "one key each");
        let scheduler = data.creds(Role::Scheduler, "scheduler").unwrap();
        assert_eq!(scheduler.admins, book.admins());
        let n1 = data
            .enroll(Role::Node, "n1", vec![RuntimeClass::Runc])
            .unwrap();
        let again = data
            .enroll(Role::Node, "n1", vec![RuntimeClass::Runc])
            .unwrap();
        assert_ne!(n1.seed, again.seed);
        let book = data.book().unwrap();
        assert_eq!(
            book.get(Role::Node, "n1").unwrap().key,
            again.signer().unwrap().public_key()
        );
        assert!(
            data.enroll(Role::Node, "a.b", vec![]).is_err(),
            "a dotted name"
        );
        assert!(
            data.enroll(Role::Tenant, "sys", vec![]).is_err(),
            "a reserved tenant"
        );
        data.revoke(Role::Node, "n1").unwrap();
        assert!(data.book().unwrap().get(Role::Node, "n1").is_none());
        assert!(!data.creds_path(Role::Node, "n1").exists());
    }
}
