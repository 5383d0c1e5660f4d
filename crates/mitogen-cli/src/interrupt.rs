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
use std::sync::{Arc, Mutex};

/// Exit status after an interrupt (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// The terminal settings to put back, shared with the reading thread.
type Saved = Arc<Mutex<Option<Termios>>>;

/// Watches for Ctrl-C while alive; restores the terminal when dropped.
#[derive(Debug)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    saved: Saved,
}

fn restore(saved: &Saved) {
    let mut s = saved.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = s.take() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
    }
}

/// Whether this process is in the terminal's foreground process group.
fn foreground() -> bool {
    let stdin = std::io::stdin();
    stdin.is_terminal() && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|g| g == nix::unistd::getpgrp())
}

impl Interrupt {
    /// Starts watching.
    pub fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let saved: Saved = Arc::new(Mutex::new(None));
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
        if foreground() {
            if let Ok(old) = termios::tcgetattr(std::io::stdin()) {
                let mut raw = old.clone();
                raw.local_flags
                    .remove(LocalFlags::ISIG | LocalFlags::ICANON | LocalFlags::ECHO);
                raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
                raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
                if termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw).is_ok() {
                    *saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(old);
                    let (flag, saved) = (flag.clone(), saved.clone());
                    let _ = std::thread::Builder::new()
                        .name("mitogen-cli-keys".into())
                        .spawn(move || read_keys(&flag, &saved));
                }
            }
        }
        Interrupt { flag, saved }
    }

    /// Whether Ctrl-C (or SIGINT/SIGTERM) arrived.
    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Reads the terminal for Ctrl-C (ETX) bytes; other keys are ignored.
fn read_keys(flag: &AtomicBool, saved: &Saved) {
    let mut stdin = std::io::stdin();
    let mut b = [0u8; 64];
    loop {
        match stdin.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) if b[..n].contains(&3) => {
                if flag.swap(true, Ordering::Relaxed) {
                    restore(saved);
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
        restore(&self.saved);
    }
}
