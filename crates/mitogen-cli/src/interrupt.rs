//! Ctrl-C: the first one stops the run gracefully (no new targets, the
//! running commands stopped, what finished printed); a second one exits
//! at once with status 130.
//!
//! On a terminal, the line discipline sends SIGINT to the whole
//! foreground process group, which includes the local contexts and the
//! `ssh` clients this program started: they would die before we could
//! ask them to stop their commands and send back what they gathered. So
//! when this program owns the terminal, it turns signal generation off
//! (`ISIG`) and reads the Ctrl-C byte itself, restoring the terminal when
//! the guard is dropped. Off a terminal (or in the background), SIGINT
//! and SIGTERM are caught instead.

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

/// Exit status after an interrupt (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// The terminal settings to put back while a watch is on.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Whether Ctrl-C (or SIGINT/SIGTERM) arrived: one flag for the whole
/// process, so a command that watches twice (`copy`: connecting, then
/// transferring) sees a Ctrl-C whichever watch was on.
static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The one thread reading the terminal's keys.
static READER: Once = Once::new();

/// Watches for Ctrl-C while alive; restores the terminal when dropped.
/// Watches may follow one another: the signal handlers and the key
/// reader are set up once, and the flag, once set, stays set (the
/// command is ending).
#[derive(Debug)]
pub struct Interrupt {
    _private: (),
}

fn restore() {
    let mut s = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = s.take() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
    }
}

/// Whether this process is in the terminal's foreground process group.
fn foreground() -> bool {
    let stdin = std::io::stdin();
    stdin.is_terminal() && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|g| g == nix::unistd::getpgrp())
}

/// The process's flag, its signal handlers registered on first use.
fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The first signal sets the flag; with the flag set, the next
            // one exits.
            let _ = signal_hook::flag::register_conditional_shutdown(
                sig,
                i32::from(INTERRUPTED),
                flag.clone(),
            );
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        flag
    })
}

impl Interrupt {
    /// Starts watching.
    pub fn install() -> Interrupt {
        let flag = flag();
        if foreground() {
            if let Ok(old) = termios::tcgetattr(std::io::stdin()) {
                let mut raw = old.clone();
                raw.local_flags
                    .remove(LocalFlags::ISIG | LocalFlags::ICANON | LocalFlags::ECHO);
                raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
                raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
                let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
                if saved.is_none()
                    && termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw).is_ok()
                {
                    *saved = Some(old);
                    READER.call_once(|| {
                        let flag = flag.clone();
                        let _ = std::thread::Builder::new()
                            .name("mitogen-cli-keys".into())
                            .spawn(move || read_keys(&flag));
                    });
                }
            }
        }
        Interrupt { _private: () }
    }

    /// Whether Ctrl-C (or SIGINT/SIGTERM) arrived.
    pub fn fired(&self) -> bool {
        flag().load(Ordering::Relaxed)
    }
}

/// Reads the terminal for Ctrl-C (ETX) bytes; other keys are ignored.
/// Between watches the terminal is back to normal and Ctrl-C is a
/// signal again (caught by the handlers).
fn read_keys(flag: &AtomicBool) {
    let mut stdin = std::io::stdin();
    let mut b = [0u8; 64];
    loop {
        match stdin.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) if b[..n].contains(&3) => {
                if flag.swap(true, Ordering::Relaxed) {
                    restore();
                    eprintln!("\nmitogen: interrupted twice, exiting");
                    std::process::exit(i32::from(INTERRUPTED));
                }
            }
            Ok(_) => {}
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        restore();
    }
}
