//! This program run as the fake `ssh` of a tool.
//!
//! Why the program itself: nothing needs to be installed or written
//! beside it. [`super::Tool`] puts a link named `ssh` to this executable
//! first on the tool's `PATH`, and sets [`SOCKET_ENV`] and [`TOKEN_ENV`];
//! `mitogen::main` calls [`enter_if_invoked`] before anything else, which
//! recognises the invocation (argument 0 named `ssh` and the socket
//! variable set), reads ssh's command line, hands the process's standard
//! input, output and error to the master over the socket, waits for the
//! remote command's status and ends with it. Failures of its own are
//! ssh's: a message on stderr and exit status 255.

use super::argv::{self, Mode};
use super::wire::{self, Request, Status};
use serde_bytes::ByteBuf;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The rendezvous socket's path, in the tool's environment.
pub const SOCKET_ENV: &str = "MITOGEN_FAKESSH_SOCKET";
/// The run's token, in the tool's environment.
pub const TOKEN_ENV: &str = "MITOGEN_FAKESSH_TOKEN";
/// The fake `ssh`'s full path, in the tool's environment: for tools
/// that run a fixed path unless told otherwise (`scp -S "$MITOGEN_FAKESSH_SSH"`).
pub const SSH_ENV: &str = "MITOGEN_FAKESSH_SSH";

/// Set once `mitogen::main` has passed [`enter_if_invoked`]: a program
/// that did not enter through it would run its own `main` as the tool's
/// `ssh`, so a run refuses to start without it.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Whether this program entered through `mitogen::main`.
pub(crate) fn entered() -> bool {
    ENTERED.load(Ordering::Acquire)
}

/// Runs the fake `ssh` and exits, if this process is one; returns at
/// once otherwise.
pub(crate) fn enter_if_invoked() {
    ENTERED.store(true, Ordering::Release);
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let mut args = std::env::args_os();
    let Some(argv0) = args.next() else { return };
    if Path::new(&argv0).file_name() != Some("ssh".as_ref()) {
        return;
    }
    let args: Vec<OsString> = args.collect();
    let code = match shim(Path::new(&socket), &args) {
        Ok(Status::Exited(c)) => c,
        Ok(Status::Signaled(sig)) => die_by(sig),
        Ok(Status::Failed(why)) | Err(why) => {
            eprintln!("ssh (mitogen fakessh): {why}");
            255
        }
    };
    std::process::exit(code)
}

fn shim(socket: &Path, args: &[OsString]) -> Result<Status, String> {
    let inv = argv::parse(args).map_err(|e| e.to_string())?;
    match inv.mode {
        Mode::Version => {
            eprintln!("mitogen fakessh {}", crate::VERSION);
            return Ok(Status::Exited(0));
        }
        Mode::PrintConfig => {
            println!("host {}", inv.host.as_deref().unwrap_or(""));
            println!("hostname {}", inv.host.as_deref().unwrap_or(""));
            println!("user {}", inv.user.as_deref().unwrap_or(""));
            println!("port {}", inv.port.as_deref().unwrap_or("22"));
            return Ok(Status::Exited(0));
        }
        Mode::Run => {}
    }
    let token = std::env::var(TOKEN_ENV).map_err(|_| format!("{TOKEN_ENV} is not set"))?;
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let req = Request {
        token,
        command: ByteBuf::from(inv.command.clone()),
        subsystem: inv.subsystem,
        env: argv::environment(&inv, &env)
            .into_iter()
            .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
            .collect(),
    };
    let mut sock = UnixStream::connect(socket)
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let creds = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("checking the master's credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if creds.uid() != me {
        return Err(format!(
            "{} is served by uid {}, not by this user ({me})",
            socket.display(),
            creds.uid()
        ));
    }
    // Closed standard descriptors go as /dev/null.
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let fds: Vec<RawFd> = (0..3)
        .map(|fd| {
            let open = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok();
            if open {
                fd
            } else {
                null.as_raw_fd()
            }
        })
        .collect();
    wire::send_request(&mut sock, &req, &fds).map_err(|e| format!("sending the request: {e}"))?;
    wire::recv_status(&mut sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the fakessh master closed the connection (run stopped, or too many sessions)".into()
        }
        _ => format!("waiting for the remote command: {e}"),
    })
}

/// Ends this process by `sig`, as the remote command ended, without a
/// core dump; 128 + `sig` if the signal does not end it.
fn die_by(sig: i32) -> i32 {
    use nix::sys::signal::{raise, signal, SigHandler, Signal};
    if let Ok(s) = Signal::try_from(sig) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal(s, SigHandler::SigDfl) };
        let _ = raise(s);
    }
    128 + sig
}
