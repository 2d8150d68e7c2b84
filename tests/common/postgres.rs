//! A private PostgreSQL server for one test: `initdb` into a temporary directory, then `postgres` on a
//! free port of 127.0.0.1 (its Unix socket in that directory too), with a fresh database per
//! [`PgServer::create_database`]. Dropping it (at the end of the test, or as a panicking test unwinds)
//! stops the server and removes the directory. It never touches a system service or a fixed port.
//!
//! Shared by the integration tests (`tests/common/mod.rs`) and the store's unit tests
//! (`src/server/store/tests.rs`, through `#[path]`), so it uses nothing of the crate.
//!
//! **Binaries.** `$PG_BIN` if set, else the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! layout; `tools/test.sh` installs the `postgresql` package when `initdb` is missing), else `initdb`
//! on `PATH`. None: the test fails, saying so; it never skips.
//!
//! **As root.** `initdb` and `postgres` refuse to run as root, so then they run as the `postgres` user
//! (the temporary directory is handed to it): the same as `runuser -u postgres`, but with `postgres`
//! itself as our child, so the pid we signal to stop it is the server's own.
//!
//! **Orphans.** The server is started from a thread that only waits for it, with a parent-death
//! signal: should the test process die without unwinding (a `SIGKILL`, an abort), the kernel stops the
//! server too (its directory is then left in the temporary directory).
//!
//! **Speed over durability.** `fsync=off` and `full_page_writes=off`: a test's commits need not reach
//! the disk (nothing here survives the test). [`PgServer::start_durable`] keeps PostgreSQL's defaults,
//! for measurements.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// A running private server; stopped and removed when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    pid: libc::pid_t,
    /// The server's exit status, once its keeper thread has waited for it.
    exited: mpsc::Receiver<std::io::Result<ExitStatus>>,
    /// Databases created so far (each test database gets the next number).
    databases: AtomicU32,
}

/// How long the server may take to accept connections (initdb excluded).
const STARTUP: Duration = Duration::from_secs(60);

impl PgServer {
    /// A server for tests: commits are not synced to disk.
    pub async fn start() -> PgServer {
        Self::start_with(&[("fsync", "off"), ("full_page_writes", "off")]).await
    }

    /// A server with PostgreSQL's durable defaults (`fsync=on`, `synchronous_commit=on`): each commit
    /// waits for its WAL to reach the disk, as in production.
    pub async fn start_durable() -> PgServer {
        Self::start_with(&[]).await
    }

    async fn start_with(settings: &[(&str, &str)]) -> PgServer {
        let bin = bin_dir();
        let owner = server_user();
        let dir = tempfile::Builder::new()
            .prefix("groupchat-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid)).expect("hand the directory to postgres");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        run_as(&mut initdb, owner);
        let output = initdb.output().expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        // A free port may be taken by someone else before the server binds it: then try another.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let (pid, exited) = spawn_server(&bin, dir.path(), &data, port, settings, owner);
            match wait_until_ready(dir.path(), port, &exited).await {
                Ok(()) => {
                    return PgServer {
                        dir,
                        port,
                        pid,
                        exited,
                        databases: AtomicU32::new(0),
                    }
                }
                Err(log) => {
                    stop(pid, &exited);
                    if attempts < 5 && log.contains("could not bind") {
                        continue;
                    }
                    panic!("PostgreSQL did not start on port {port}:\n{log}");
                }
            }
        }
    }

    /// Creates a fresh database; returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("test{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test server");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create a test database");
        admin.close().await.expect("disconnect");
        self.url(&name)
    }

    /// Stops the server (a fast shutdown: its clients' connections drop), keeping its data; [`resume`]
    /// starts it again on the same port.
    ///
    /// [`resume`]: PgServer::resume
    pub fn pause(&mut self) {
        stop(self.pid, &self.exited);
    }

    /// Starts a paused server again, on its port and data, and waits until it accepts connections.
    pub async fn resume(&mut self) {
        let data = self.dir.path().join("data");
        let settings = [("fsync", "off"), ("full_page_writes", "off")];
        let (pid, exited) = spawn_server(
            &bin_dir(),
            self.dir.path(),
            &data,
            self.port,
            &settings,
            server_user(),
        );
        if let Err(log) = wait_until_ready(self.dir.path(), self.port, &exited).await {
            stop(pid, &exited);
            panic!("PostgreSQL did not start again:\n{log}");
        }
        self.pid = pid;
        self.exited = exited;
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        url(self.port, database)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        stop(self.pid, &self.exited);
        // `dir` is removed as it drops, after this.
    }
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// Waits until the server on `port` accepts connections; on failure, returns its log.
async fn wait_until_ready(
    dir: &Path,
    port: u16,
    exited: &mpsc::Receiver<std::io::Result<ExitStatus>>,
) -> Result<(), String> {
    let log = || std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let started = Instant::now();
    loop {
        if let Ok(status) = exited.try_recv() {
            return Err(format!("postgres exited ({status:?}):\n{}", log()));
        }
        if let Ok(connection) = PgConnection::connect(&url(port, "postgres")).await {
            let _ = connection.close().await;
            return Ok(());
        }
        if started.elapsed() > STARTUP {
            return Err(format!("not ready after {STARTUP:?}:\n{}", log()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Stops the server `pid` unless it has exited already: a fast shutdown (every client disconnected,
/// what was in flight rolled back), or a kill if that takes too long.
fn stop(pid: libc::pid_t, exited: &mpsc::Receiver<std::io::Result<ExitStatus>>) {
    // Its status came (now or, read by someone, before: then the keeper thread has hung up): it is
    // gone, and reaped, so its pid may be someone else's by now.
    if !matches!(exited.try_recv(), Err(mpsc::TryRecvError::Empty)) {
        return;
    }
    // SAFETY: signalling our own child, which its keeper thread has not reaped yet.
    unsafe { libc::kill(pid, libc::SIGINT) };
    if let Err(mpsc::RecvTimeoutError::Timeout) = exited.recv_timeout(Duration::from_secs(10)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = exited.recv_timeout(Duration::from_secs(5));
    }
}

/// Starts `postgres` from a thread of its own that waits for it; returns its pid and where its exit
/// status will come.
fn spawn_server(
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    settings: &[(&str, &str)],
    owner: Option<(u32, u32)>,
) -> (libc::pid_t, mpsc::Receiver<std::io::Result<ExitStatus>>) {
    let log = std::fs::File::create(dir.join("postgres.log")).expect("a log file");
    let socket_dir = dir.join("socket");
    std::fs::create_dir_all(&socket_dir).expect("a socket directory");
    if let Some((uid, gid)) = owner {
        chown(&socket_dir, Some(uid), Some(gid)).expect("hand the socket directory to postgres");
    }
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&socket_dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "shared_buffers=32MB"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a log file"))
        .stderr(log);
    for (name, value) in settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    run_as(&mut command, owner);
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl` is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let (started, pid) = mpsc::channel();
    let (exited_tx, exited) = mpsc::channel();
    // The parent-death signal fires when the thread that forked the server ends: this one, which ends
    // only when the server does.
    std::thread::Builder::new()
        .name(format!("postgres-{port}"))
        .spawn(move || match command.spawn() {
            Err(error) => {
                let _ = started.send(Err(error));
            }
            Ok(mut child) => {
                let _ = started.send(Ok(child.id()));
                let _ = exited_tx.send(child.wait());
            }
        })
        .expect("a thread to keep postgres");
    let pid = pid
        .recv()
        .expect("the keeper thread reports")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("postgres").display()));
    (pid as libc::pid_t, exited)
}

/// Where `initdb` and `postgres` are (see the module's doc).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file() && dir.join("postgres").is_file(),
            "$PG_BIN ({}) has no initdb and postgres",
            dir.display()
        );
        return dir;
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, newest)) = debian.pop() {
        return newest;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin, $PG_BIN or \
                 PATH): the tests need it. `make test` installs it (Debian's postgresql package)."
            )
        })
}

/// The user and group to run the server as: `postgres`'s when we are root (the server refuses to run
/// as root), else none (we are who runs it).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; `getpwnam`'s result is read at once, before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let entry = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !entry.is_null(),
            "running as root, and there is no `postgres` user to run PostgreSQL as (it refuses root)"
        );
        Some(((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        // `uid` also drops root's supplementary groups.
        command.uid(uid).gid(gid);
    }
}

/// A port nothing listens on just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
