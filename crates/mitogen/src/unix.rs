//! Attaching a separate local process to a running master over a Unix
//! socket (the seed's `mitogen.unix`).
//!
//! Why: a master that has connected its contexts (ssh sessions, sudo,
//! containers) is worth keeping warm. A short-lived command of the same
//! program, run later by the same user, attaches to it ([`connect`]) and
//! gets a [`Context`] for the master, and through it (by the listener's
//! [`Reach`]) the master's tree, instead of connecting everything again.
//!
//! Security, since a socket is a door:
//!
//! - Never TCP: a Unix socket in a directory of the user's own, not
//!   writable by anyone else (checked when binding and when connecting;
//!   [`default_path`] makes one), the socket itself mode 0600.
//! - Both ends check the other's credentials (`SO_PEERCRED`): only the
//!   same user attaches, and a client only talks to a master of its own
//!   user.
//! - The attached process becomes a child-like context of the master: the
//!   master allocates its id and routes to it, and every message from it
//!   passes the router's reverse-path checks. What it sends then carries
//!   the master's authority (as in the seed: it is the same user acting
//!   through the master), so it may call the master's services, parents
//!   only ones included; with [`Reach::Tree`] it may call the master's
//!   contexts too, with [`Reach::Master`] (the default) anything not for
//!   the master is refused.
//!
//! Liveness of a master is its lock: the listener holds an exclusive
//! `flock` on `<socket>.lock` for as long as it listens. A socket file
//! whose lock is free was left by a master that died; binding replaces
//! it, and connecting to it is a [`StreamError`] of kind
//! `ConnectionRefused`. A lock that is held means a live master: binding
//! is refused (`AddrInUse`). Every wait of [`connect`] is bounded by its
//! timeout: a frozen master is a [`crate::TimeoutError`], never a hang.
//!
//! ```no_run
//! # #[mitogen::remote] fn uptime() -> u64 { 0 }
//! # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
//! use mitogen::unix::{self, Listener, Reach};
//!
//! // In the long-lived master:
//! let web = router.ssh("web1").connect()?;
//! let path = unix::default_path("myapp")?;
//! let listener = Listener::bind(router, &path, Reach::Tree)?;
//! listener.publish(&web)?;
//!
//! // In a later command of the same program, as the same user:
//! let (_attached, master) = unix::connect(&path, None)?;
//! for ctx in unix::published(&master)? {
//!     println!("{}: up {} s", ctx.name(), ctx.call::<uptime>(())?);
//! }
//! // `master` is a Context too: call the master's own services.
//! # Ok(()) }
//! ```

use crate::context::Context;
use crate::error::{Result, StreamError, TimeoutError};
use crate::identity::MASTER_ID;
use crate::link::{FrameReader, Stream};
use crate::router::{Core, Reach as RouterReach, Router};
use crate::service::{Service, Services};
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How far an attached process may reach through the master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// The master only (its services and handlers): messages to any
    /// other context are answered dead, "refused by policy".
    #[default]
    Master,
    /// Every context the master may call (the seed's behaviour).
    Tree,
}

/// Most processes attached to one listener at a time; more are turned
/// away (their connect fails), so a loop of connects cannot exhaust the
/// master.
pub const MAX_ATTACHED: usize = 64;

/// Largest handshake accepted by [`connect`].
const MAX_HELLO: usize = 64 * 1024;

/// What a master tells a process attaching to it, before any frame.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    version: String,
    protocol: u32,
    /// The id the master allocated for the attaching process.
    context_id: u32,
    /// The master's id, then its parents.
    parent_ids: Vec<u32>,
    master_name: String,
    max_message_size: u64,
}

/// A Unix socket on which a master accepts processes of its own user.
///
/// It stops listening (and removes its socket and lock files) when
/// closed, dropped, or when the broker stops; processes already attached
/// stay attached.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<Shared>,
    /// Closes it when the broker stops; removed when closed first.
    on_exit: crate::events::Subscription,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    lock_path: PathBuf,
    core: Weak<Core>,
    reach: Reach,
    /// The socket, until closed.
    socket: Mutex<Option<UnixListener>>,
    /// The liveness lock, held while listening.
    lock: Mutex<Option<nix::fcntl::Flock<std::fs::File>>>,
    token: Mutex<Option<mio::Token>>,
    closed: AtomicBool,
}

fn perm(message: String) -> crate::Error {
    StreamError::with_kind(message, ErrorKind::PermissionDenied).into()
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> crate::Error {
    move |e| StreamError::io(format!("{what}: {e}"), e).into()
}

/// Checks that `dir` is a real directory of this user that nobody else
/// may write to (so nobody else can swap the socket).
fn check_dir(dir: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(dir)
        .map_err(io(format!("the socket's directory {}", dir.display())))?;
    if !md.is_dir() {
        return Err(perm(format!("{} is not a directory", dir.display())));
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me {
        return Err(perm(format!(
            "{} belongs to uid {}, not to this user ({me})",
            dir.display(),
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(perm(format!(
            "{} is writable by others (mode {:o}): a socket there could be replaced",
            dir.display(),
            md.mode() & 0o777
        )));
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<dir>/<name>.sock` in a private directory of this user, created mode
/// 0700 if missing: `$XDG_RUNTIME_DIR/mitogen` when that is set, else
/// `/tmp/mitogen-<uid>`. Fails if the directory exists with another
/// owner or open permissions, or `name` is not a plain file name.
pub fn default_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(StreamError::with_kind(
            format!("{name:?} is not a plain socket name"),
            ErrorKind::InvalidInput,
        )
        .into());
    }
    let uid = nix::unistd::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("mitogen"),
        _ => PathBuf::from(format!("/tmp/mitogen-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("cannot create {}", dir.display()))(e)),
    }
    check_dir(&dir)?;
    Ok(dir.join(format!("{name}.sock")))
}

impl Listener {
    /// Listens on `path` for processes of this user, attaching each as a
    /// context of this master that may reach as far as `reach` says.
    ///
    /// `path`'s directory must belong to this user and be writable by no
    /// one else. A socket file left by a master that died is replaced; a
    /// live master on `path` is a [`StreamError`] of kind `AddrInUse`.
    /// Only the master (context 0) listens.
    pub fn bind(router: &Router, path: impl AsRef<Path>, reach: Reach) -> Result<Listener> {
        let core = router.core();
        if core.id != MASTER_ID {
            return Err(StreamError::new(
                "only the master listens for processes to attach: this is a child context",
            )
            .into());
        }
        let path = path.as_ref().to_path_buf();
        check_dir(parent_of(&path))?;
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let held = take_lock(&lock_path, &path)?;
        // The lock is ours: any socket file there is a dead master's.
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_socket() => {
                tracing::info!("mitogen: replacing the stale socket {}", path.display());
                std::fs::remove_file(&path).map_err(io(format!(
                    "cannot remove the stale socket {}",
                    path.display()
                )))?;
            }
            Ok(_) => {
                return Err(StreamError::with_kind(
                    format!("{} exists and is not a socket", path.display()),
                    ErrorKind::AlreadyExists,
                )
                .into())
            }
            Err(_) => {}
        }
        let socket = UnixListener::bind(&path)
            .map_err(io(format!("cannot listen on {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("cannot make {} private", path.display())))?;
        socket
            .set_nonblocking(true)
            .map_err(io("cannot make the listening socket non-blocking".into()))?;
        // A fork()ed child must not keep the socket or the lock.
        crate::process::track_fd(socket.as_raw_fd());
        crate::process::track_fd(held.as_raw_fd());
        let shared = Arc::new(Shared {
            path,
            lock_path,
            core: Arc::downgrade(core),
            reach,
            socket: Mutex::new(Some(socket)),
            lock: Mutex::new(Some(held)),
            token: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let fd = lock(&shared.socket).as_ref().map(|s| s.as_raw_fd());
        let s = shared.clone();
        core.broker.defer_loop(Box::new(move |lp| {
            let Some(fd) = fd else { return };
            if s.closed.load(Ordering::Acquire) {
                return;
            }
            let s2 = s.clone();
            let token = lp.register(
                fd,
                mio::Interest::READABLE,
                Box::new(move |_, _| s2.accept_all()),
            );
            *lock(&s.token) = Some(token);
        }));
        let s = shared.clone();
        // Closed with the broker, if not before.
        let on_exit = router.broker().on_exit(move || s.close_files());
        Ok(Listener { shared, on_exit })
    }

    /// Makes `ctx` (a context of this master) visible to attached
    /// processes, which list it with [`published`]. Contexts that have
    /// disconnected drop out of the list.
    pub fn publish(&self, ctx: &Context) -> Result<()> {
        let core = self
            .shared
            .core
            .upgrade()
            .ok_or_else(|| StreamError::new("the listener's router is gone"))?;
        let published = Services::of(&Router::borrowed(core)).get::<Published>()?;
        let mut list = lock(&published.0);
        if !list.iter().any(|c| c.context_id() == ctx.context_id()) {
            list.push(ctx.clone());
        }
        Ok(())
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How many processes are attached to this master now (through any
    /// listener of its router). A master that expires when idle (the
    /// command-line tool's warm master) counts these.
    pub fn attached(&self) -> usize {
        self.shared.core.upgrade().map_or(0, |c| c.foreign_links())
    }

    /// Stops listening and removes the socket and lock files. Processes
    /// already attached stay attached. Closing twice does nothing more.
    pub fn close(&self) {
        self.on_exit.unsubscribe();
        let s = self.shared.clone();
        s.closed.store(true, Ordering::Release);
        // The files go now: a new master may bind at once.
        s.remove_files();
        match s.core.upgrade() {
            Some(core) if !core.broker.is_stopped() => {
                // The socket is the broker's to stop watching.
                let s2 = s.clone();
                core.broker.defer_loop(Box::new(move |lp| {
                    let token = lock(&s2.token).take();
                    let fd = lock(&s2.socket).as_ref().map(|l| l.as_raw_fd());
                    if let (Some(t), Some(fd)) = (token, fd) {
                        lp.deregister(fd, t);
                    }
                    s2.close_files();
                }));
            }
            _ => s.close_files(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the liveness lock of `socket`; held means a live master.
///
/// A master that closes removes the lock file before letting the lock go,
/// so a lock taken on a file that is no longer at `lock_path` is worth
/// nothing: it is taken again on the new file.
fn take_lock(lock_path: &Path, socket: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    for _ in 0..8 {
        let held = lock_once(lock_path, socket)?;
        let here = std::fs::symlink_metadata(lock_path).map(|m| (m.dev(), m.ino()));
        let mine = held.metadata().map(|m| (m.dev(), m.ino()));
        if let (Ok(a), Ok(b)) = (here, mine) {
            if a == b {
                return Ok(held);
            }
        }
    }
    Err(StreamError::new(format!(
        "the lock {} keeps changing: masters racing to bind",
        lock_path.display()
    ))
    .into())
}

fn lock_once(lock_path: &Path, socket: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(lock_path)
        .map_err(io(format!("cannot open the lock {}", lock_path.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    let owner = file.metadata().map(|m| m.uid()).unwrap_or(u32::MAX);
    if owner != me {
        return Err(perm(format!(
            "{} belongs to uid {owner}, not to this user ({me})",
            lock_path.display()
        )));
    }
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                StreamError::with_kind(
                    format!("a live master is already listening on {}", socket.display()),
                    ErrorKind::AddrInUse,
                )
                .into()
            } else {
                io(format!("cannot lock {}", lock_path.display()))(errno.into())
            }
        },
    )
}

impl Shared {
    /// Accepts every pending connection (the broker thread); `true` keeps
    /// the listener registered.
    fn accept_all(self: &Arc<Self>) -> bool {
        let Some(core) = self.core.upgrade() else {
            return false;
        };
        loop {
            let accepted = match lock(&self.socket).as_ref() {
                Some(l) => l.accept(),
                None => return false,
            };
            match accepted {
                Ok((conn, _)) => {
                    if let Err(e) = self.admit(&core, conn) {
                        tracing::warn!(
                            "mitogen: {}: turned a process away: {e}",
                            self.path.display()
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("mitogen: {}: accept failed: {e}", self.path.display());
                    return true;
                }
            }
        }
    }

    /// Checks who connected, tells it its id and attaches its link.
    fn admit(&self, core: &Arc<Core>, conn: UnixStream) -> Result<()> {
        let creds = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| io("cannot read the peer's credentials".into())(e.into()))?;
        let me = nix::unistd::geteuid().as_raw();
        if creds.uid() != me {
            return Err(perm(format!(
                "pid {} runs as uid {}, not as this user ({me})",
                creds.pid(),
                creds.uid()
            )));
        }
        if core.foreign_links() >= MAX_ATTACHED {
            return Err(
                StreamError::new(format!("{MAX_ATTACHED} processes are attached already")).into(),
            );
        }
        let id = core.table.allocate();
        let max = core.limits.max_message_size();
        let mut parent_ids = vec![core.id];
        parent_ids.extend(&core.parent_ids);
        let hello = Hello {
            version: crate::VERSION.to_string(),
            protocol: crate::frame::PROTOCOL_VERSION,
            context_id: id,
            parent_ids,
            master_name: core.name.clone(),
            max_message_size: max as u64,
        };
        let body = rmp_serde::to_vec_named(&hello)
            .map_err(|e| StreamError::new(format!("cannot encode the handshake: {e}")))?;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        // A fresh socket's buffer takes a few hundred bytes at once; a
        // short write means a peer not worth waiting for.
        let mut conn = conn;
        match conn.write(&frame) {
            Ok(n) if n == frame.len() => {}
            Ok(_) => return Err(StreamError::new("the handshake did not fit the socket").into()),
            Err(e) => return Err(io("cannot send the handshake".into())(e)),
        }
        let name = format!("attached:{}", creds.pid());
        let fd: OwnedFd = conn.into();
        let stream = Stream::new(name.clone(), id, false, fd, None, max, None)
            .map_err(io("cannot set up the attached link".into()))?;
        let reach = match self.reach {
            Reach::Master => RouterReach::Here,
            Reach::Tree => RouterReach::Tree,
        };
        core.attach_foreign(Arc::new(stream), FrameReader::new(max), reach);
        tracing::debug!("mitogen: {name} attached as context {id}");
        Ok(())
    }

    /// Drops the socket and the lock, and removes their files.
    fn close_files(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(s) = lock(&self.socket).take() {
            crate::process::untrack_fd(s.as_raw_fd());
        }
        self.remove_files();
    }

    /// Removes the files while the lock is still held (so no new master
    /// can have bound there yet), then lets the lock go.
    fn remove_files(&self) {
        let held = lock(&self.lock).take();
        if let Some(l) = held {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.lock_path);
            crate::process::untrack_fd(l.as_raw_fd());
            drop(l);
        }
    }
}

/// Attaches this process to the master listening on `path` and returns a
/// router for it (this process's new identity in the master's tree, with
/// a broker of its own) and the master as a [`Context`].
///
/// Every wait is bounded by `timeout` (default
/// [`crate::DEFAULT_CONNECT_TIMEOUT`]). Errors: no socket at `path`
/// ([`StreamError`], `NotFound`); a socket left by a master that died
/// (`ConnectionRefused`); a directory or master of another user
/// (`PermissionDenied`); a master that does not answer in time
/// ([`crate::TimeoutError`]); a master of another mitogen version.
///
/// The attached router lives until its last handle is dropped, which
/// detaches the process. It serves no calls: the attached process calls,
/// it is not called.
pub fn connect(path: impl AsRef<Path>, timeout: Option<Duration>) -> Result<(Router, Context)> {
    let path = path.as_ref();
    let timeout = timeout.unwrap_or(crate::DEFAULT_CONNECT_TIMEOUT);
    check_dir(parent_of(path))?;
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            return Err(StreamError::io(
                format!(
                    "no master is listening on {}: the socket was left by one that exited",
                    path.display()
                ),
                e,
            )
            .into())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StreamError::io(
                format!(
                    "no master is listening on {}: no such socket",
                    path.display()
                ),
                e,
            )
            .into())
        }
        Err(e) => return Err(io(format!("cannot connect to {}", path.display()))(e)),
    };
    let creds = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io("cannot read the master's credentials".into())(e.into()))?;
    let me = nix::unistd::geteuid().as_raw();
    if creds.uid() != me {
        return Err(perm(format!(
            "the process listening on {} runs as uid {}, not as this user ({me})",
            path.display(),
            creds.uid()
        )));
    }
    let hello = read_hello(&mut conn, path, timeout)?;
    if hello.version != crate::VERSION || hello.protocol != crate::frame::PROTOCOL_VERSION {
        return Err(StreamError::new(format!(
            "the master on {} runs mitogen {} (protocol {}), this process {} (protocol {})",
            path.display(),
            hello.version,
            hello.protocol,
            crate::VERSION,
            crate::frame::PROTOCOL_VERSION
        ))
        .into());
    }
    let Some(&master_id) = hello.parent_ids.first() else {
        return Err(StreamError::new("the master's handshake names no parent").into());
    };
    conn.set_read_timeout(None)
        .map_err(io("cannot reset the socket's timeout".into()))?;
    let broker = crate::Broker::new_detached()?;
    let name = format!("attached:{}", std::process::id());
    let core = Core::new(
        broker,
        true,
        hello.context_id,
        hello.parent_ids.clone(),
        Some(name),
    );
    let max = usize::try_from(hello.max_message_size).unwrap_or(usize::MAX);
    core.limits.set_max_message_size(max);
    core.table.set_name(master_id, &hello.master_name);
    let fd: OwnedFd = conn.into();
    let stream = match Stream::new("master".into(), master_id, true, fd, None, max, None) {
        Ok(s) => s,
        Err(e) => {
            core.broker.shutdown();
            return Err(io("cannot set up the link to the master".into())(e));
        }
    };
    core.attach(Arc::new(stream), FrameReader::new(max));
    let master = Context::new(core.clone(), master_id, &hello.master_name);
    Ok((Router::from_core(core), master))
}

/// The contexts the master published ([`Listener::publish`]), as handles
/// of the attached router that `master` belongs to. With
/// [`Reach::Master`] they are listed, but calls to them are refused.
pub fn published(master: &Context) -> Result<Vec<Context>> {
    master.call_service::<published::list>(())
}

/// The master's published contexts: a service of the master, parents
/// only (an attached process acts with the master's authority; the
/// master's own children may not list their siblings).
struct Published(Mutex<Vec<Context>>);

impl Service for Published {
    const NAME: &'static str = "mitogen::unix::Published";
    fn new(_: &crate::ExternalContext) -> std::result::Result<Self, crate::service::BoxError> {
        Ok(Published(Mutex::new(Vec::new())))
    }
}

#[crate::service]
impl Published {
    #[expose]
    fn list(&self) -> Vec<Context> {
        let mut list = lock(&self.0);
        list.retain(Context::is_connected);
        list.clone()
    }
}

/// Reads the master's handshake, within `timeout`.
fn read_hello(conn: &mut UnixStream, path: &Path, timeout: Duration) -> Result<Hello> {
    conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io("cannot bound the handshake".into()))?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let read = |conn: &mut UnixStream, buf: &mut [u8]| -> Result<()> {
        conn.read_exact(buf).map_err(|e| {
            if timed_out(&e) {
                TimeoutError::new(format!("waiting for the master on {}", path.display()), timeout)
                    .into()
            } else if e.kind() == ErrorKind::UnexpectedEof {
                StreamError::io(
                    format!(
                        "the master on {} closed the connection (too many processes attached, or not this user's)",
                        path.display()
                    ),
                    e,
                )
                .into()
            } else {
                io(format!("reading the handshake from {}", path.display()))(e)
            }
        })
    };
    let mut len = [0u8; 4];
    read(conn, &mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_HELLO {
        return Err(StreamError::new(format!(
            "the handshake from {} is {n} bytes: not a mitogen master",
            path.display()
        ))
        .into());
    }
    let mut body = vec![0u8; n];
    read(conn, &mut body)?;
    rmp_serde::from_slice(&body).map_err(|e| {
        StreamError::new(format!(
            "the handshake from {} does not decode ({e}): not a mitogen master",
            path.display()
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mitogen-unix-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
        d
    }

    #[test]
    fn an_open_directory_is_refused() {
        let d = tempdir("open");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let router = Router::new().unwrap();
        let e = Listener::bind(&router, d.join("s.sock"), Reach::Master).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        let e = connect(d.join("s.sock"), Some(Duration::from_secs(1))).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bind_twice_then_close_and_rebind() {
        let d = tempdir("twice");
        let router = Router::new().unwrap();
        let path = d.join("m.sock");
        let first = Listener::bind(&router, &path, Reach::Master).unwrap();
        let md = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        match Listener::bind(&router, &path, Reach::Master) {
            Err(crate::Error::Stream(e)) => assert_eq!(e.kind(), Some(ErrorKind::AddrInUse), "{e}"),
            other => panic!("{other:?}"),
        }
        first.close();
        assert!(!path.exists());
        let again = Listener::bind(&router, &path, Reach::Master).unwrap();
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn not_a_socket_is_not_replaced() {
        let d = tempdir("file");
        let path = d.join("x.sock");
        std::fs::write(&path, "mine").unwrap();
        let router = Router::new().unwrap();
        assert!(Listener::bind(&router, &path, Reach::Master).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn default_path_is_private() {
        let p = default_path("unit-test").unwrap();
        let dir = p.parent().unwrap();
        let md = std::fs::metadata(dir).unwrap();
        assert_eq!(md.mode() & 0o077, 0, "{}", dir.display());
        assert!(default_path("../escape").is_err());
        assert!(default_path("").is_err());
    }
}
