//! Passwords never appear in `ps`, the environment, logs or `Debug`.

use crate::util::*;
use libtest_mimic::Trial;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "secrets::password_never_visible",
        TEST_LIMIT,
        password_never_visible,
    )]
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every process's argv and environment that mention `needle`.
fn scan_proc(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return hits;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        for f in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(format!("/proc/{pid}/{f}")) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(format!("{pid}/{f}: {}", String::from_utf8_lossy(&b)));
                }
            }
        }
    }
    hits
}

fn password_never_visible() -> TestResult {
    let t = tb()?;
    // alice's real password: every test that types it, here or running
    // at the same time, is covered by the scan.
    let pw = t.alice_pw.clone();
    let logs = Buf::default();
    let sink = logs.clone();
    let captured = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .try_init()
        .is_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, needle) = (stop.clone(), pw.clone().into_bytes());
    let scanner = std::thread::spawn(move || {
        let mut hits = Vec::new();
        for _ in 0..3000 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            hits.extend(scan_proc(&needle));
            std::thread::sleep(Duration::from_millis(5));
        }
        hits
    });
    let r = router()?;
    r.enable_debug();
    let builder = ssh_pw(&r, &t.host2, "alice", &pw).debug(true);
    let shown = format!("{builder:?}");
    let res = (|| -> mitogen::Result<String> {
        let h2 = builder.connect()?;
        let sudo = r.sudo().username("bob").password(&pw).debug(true).via(&h2);
        let shown_sudo = format!("{sudo:?}");
        let bob = sudo.connect()?;
        let su = r.su().username("alice").password(&pw).via(&bob);
        let shown_su = format!("{su:?}");
        let alice = su.connect()?;
        let _ = alice.call::<whoami>(())?;
        let wrong = r.sudo().password(format!("{pw}-x")).via(&h2).connect();
        Ok(format!("{shown_sudo} {shown_su} {wrong:?}"))
    })();
    stop.store(true, Ordering::Relaxed);
    let hits = scanner.join().map_err(|_| "scanner panicked")?;
    let more_shown = res?;
    ensure!(hits.is_empty(), "password seen in /proc: {hits:#?}");
    ensure!(
        !shown.contains(&pw) && !more_shown.contains(&pw),
        "password in Debug: {shown} {more_shown}"
    );
    ensure!(shown.contains("redacted"), "builder Debug: {shown}");
    // Debug-enabled contexts also write /tmp/mitogen.<pid>.log files.
    let mut files = 0;
    for e in std::fs::read_dir("/tmp")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("mitogen.") && name.ends_with(".log") {
            let text = std::fs::read(e.path()).unwrap_or_default();
            files += 1;
            ensure!(
                !text.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "password in {}",
                e.path().display()
            );
        }
    }
    ensure!(files > 0, "no debug log files were written");
    if captured {
        let text = String::from_utf8_lossy(&logs.0.lock().map_err(|_| "lock")?).into_owned();
        ensure!(
            text.contains("typed the password"),
            "logs were not captured: {text}"
        );
        ensure!(!text.contains(&pw), "password in the logs");
    } else {
        eprintln!(
            "(a global subscriber was already set: the log check is skipped in this process)"
        );
    }
    Ok(())
}
