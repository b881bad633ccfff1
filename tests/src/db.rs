//! Finding a PostgreSQL for tests and the demo.
//!
//! In order:
//! 1. `DATABASE_URL`, when set (it must answer: a set but broken URL is an error, not a
//!    fallback);
//! 2. the server on `127.0.0.1:5432` (user `postgres`, database `postgres`), when it answers;
//! 3. a throwaway cluster started with the machine's PostgreSQL binaries (`initdb`, `pg_ctl`),
//!    run as the `postgres` OS user when we are root; it stops by itself when this process
//!    exits;
//! 4. otherwise an error that says what to install or set.
//!
//! `DBMETRICS_TEST_PG=throwaway` skips steps 1 and 2 (CI uses it to prove step 3 works).
//! Nothing here prints a connection string: it may hold a password.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::{Config, NoTls};

/// Where the database came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `DATABASE_URL` environment variable.
    DatabaseUrl,
    /// The server on 127.0.0.1:5432.
    LocalServer,
    /// A throwaway cluster this process started.
    Throwaway,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::DatabaseUrl => "DATABASE_URL",
            Source::LocalServer => "the PostgreSQL server on 127.0.0.1:5432",
            Source::Throwaway => "a throwaway PostgreSQL cluster started for this process",
        })
    }
}

/// A PostgreSQL that answered.
#[derive(Clone, Debug)]
pub struct Database {
    /// How to connect (may hold a password: never print it).
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// For a throwaway cluster: its data directory.
    pub data_dir: Option<PathBuf>,
}

impl Database {
    /// A deadpool pool of at most `max_size` connections to this database.
    pub fn pool(&self, max_size: usize) -> deadpool_postgres::Pool {
        pool_for(self.config.clone(), max_size)
    }

    /// The host and port (never user or password), for messages.
    pub fn address(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

/// A deadpool pool over `config` with `max_size` connections and fast recycling.
pub fn pool_for(config: Config, max_size: usize) -> deadpool_postgres::Pool {
    let manager = deadpool_postgres::Manager::from_config(
        config,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime always builds")
}

/// The database of this process: found (or started) once, then shared.
///
/// # Panics
/// When no PostgreSQL can be found or started; the message says exactly what to do.
pub fn database() -> &'static Database {
    static DB: OnceLock<Database> = OnceLock::new();
    DB.get_or_init(|| match provision() {
        Ok(db) => {
            eprintln!("dbmetrics tests: using {} at {}", db.source, db.address());
            db
        }
        Err(e) => panic!("{e}"),
    })
}

/// Why no database could be had, with what to do about it.
#[derive(Debug)]
pub struct ProvisionError(String);

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProvisionError {}

const WHAT_TO_DO: &str = "Do one of:\n  \
    - set DATABASE_URL=postgres://USER[:PASSWORD]@HOST:PORT/DATABASE to a server you can use;\n  \
    - start PostgreSQL on 127.0.0.1:5432 with user `postgres` and trust authentication;\n  \
    - install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`), \
      so that a throwaway cluster can be started with initdb and pg_ctl.";

/// Finds or starts a database, as described in the module documentation.
pub fn provision() -> Result<Database, ProvisionError> {
    let throwaway_only = std::env::var("DBMETRICS_TEST_PG").is_ok_and(|v| v == "throwaway");
    if !throwaway_only {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let config: Config = url.parse().map_err(|_| {
                ProvisionError(format!(
                    "DATABASE_URL is set but is not a valid PostgreSQL connection string \
                     (postgres://USER[:PASSWORD]@HOST:PORT/DATABASE).\n{WHAT_TO_DO}"
                ))
            })?;
            return match check(&config) {
                Ok(()) => Ok(Database {
                    config,
                    source: Source::DatabaseUrl,
                    data_dir: None,
                }),
                Err(why) => Err(ProvisionError(format!(
                    "DATABASE_URL is set but the server does not answer ({why}); fix it or \
                     unset it.\n{WHAT_TO_DO}"
                ))),
            };
        }
        let local = local_config(5432);
        if check(&local).is_ok() {
            return Ok(Database {
                config: local,
                source: Source::LocalServer,
                data_dir: None,
            });
        }
    }
    start_throwaway()
}

fn local_config(port: u16) -> Config {
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    config
}

/// Connects once and runs `SELECT 1`; the error is a class, never the server's text.
fn check(config: &Config) -> Result<(), String> {
    let config = config.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let attempt = async {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await?;
                Ok::<_, tokio_postgres::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(match e.code() {
                    Some(code) => format!("SQLSTATE {}", code.code()),
                    None if e.is_closed() => "connection closed".into(),
                    None => "cannot connect".into(),
                }),
                Err(_) => Err("no answer within 5 s".into()),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the check panicked".into()))
}

/// The directory of `initdb` and `pg_ctl`: `PG_BINDIR`, the newest `/usr/lib/postgresql/*/bin`,
/// `pg_config --bindir`, or the `PATH`.
fn find_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from)
        && has_tools(&dir)
    {
        return Some(dir);
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, dir)| has_tools(dir))
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return Some(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_tools(dir)))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, ProvisionError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProvisionError(format!("no free TCP port on 127.0.0.1: {e}")))
}

/// Runs `program args` as the postgres OS user when we are root, else as ourselves.
fn run_as_owner(
    as_postgres: bool,
    program: &Path,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    if as_postgres {
        Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(program)
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    }
}

fn start_throwaway() -> Result<Database, ProvisionError> {
    let Some(bindir) = find_bindir() else {
        return Err(ProvisionError(format!(
            "No PostgreSQL for the tests: DATABASE_URL is not set, nothing answers on \
             127.0.0.1:5432, and no PostgreSQL server binaries (initdb, pg_ctl) were found in \
             PG_BINDIR, /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH.\n{WHAT_TO_DO}"
        )));
    };
    let as_postgres = is_root();
    if as_postgres
        && !Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Err(ProvisionError(format!(
            "Running as root, a throwaway cluster must run as the `postgres` OS user, which does \
             not exist (create it: `useradd --system postgres`).\n{WHAT_TO_DO}"
        )));
    }

    let base = std::env::temp_dir().join(format!("dbmetrics-pg-{}", std::process::id()));
    let data = base.join("data");
    let fail = |what: &str, detail: String| {
        ProvisionError(format!(
            "Starting a throwaway PostgreSQL with {} failed at {what}: {detail}\n{WHAT_TO_DO}",
            bindir.display()
        ))
    };
    std::fs::create_dir_all(&base).map_err(|e| fail("creating its directory", e.to_string()))?;
    if as_postgres {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base)
            .status()
            .map_err(|e| fail("chown", e.to_string()))?;
        if !status.success() {
            return Err(fail("chown", status.to_string()));
        }
    }
    let data_str = data.to_string_lossy().into_owned();
    let base_str = base.to_string_lossy().into_owned();
    let out = run_as_owner(
        as_postgres,
        &bindir.join("initdb"),
        &[
            "-D",
            &data_str,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    )
    .map_err(|e| fail("initdb", e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            "initdb",
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }

    let port = free_port()?;
    let options = format!(
        "-p {port} -k {base_str} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    );
    let log = base.join("postgres.log");
    let out = run_as_owner(
        as_postgres,
        &bindir.join("pg_ctl"),
        &[
            "-D",
            &data_str,
            "-o",
            &options,
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-t",
            "60",
            "start",
        ],
    )
    .map_err(|e| fail("pg_ctl start", e.to_string()))?;
    if !out.status.success() {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(fail(
            "pg_ctl start",
            format!("{}{log_text}", String::from_utf8_lossy(&out.stderr)),
        ));
    }

    // A watchdog stops the cluster and removes its files when this process exits, however it
    // exits (test binaries do not run destructors of statics).
    let pg_ctl = bindir.join("pg_ctl");
    let stop = format!(
        "{} -D {data_str} -m immediate stop >/dev/null 2>&1",
        pg_ctl.display()
    );
    let stop = if as_postgres {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {base_str}",
        pid = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| fail("starting the watchdog", e.to_string()))?;

    let config = local_config(port);
    check(&config).map_err(|why| fail("the first connection", why))?;
    Ok(Database {
        config,
        source: Source::Throwaway,
        data_dir: Some(data),
    })
}
