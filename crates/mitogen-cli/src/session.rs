//! One run over many targets: the plan's workers started, their reports
//! taken as they come, the progress display kept up to date, and Ctrl-C
//! turned into an orderly stop.
//!
//! The main thread never waits on a target: it waits on the reports
//! channel with a short timeout, so it notices an interrupt within
//! ~50 ms however long the connects or commands take.

use crate::interrupt::Interrupt;
use crate::plan::{run_all, ConnectOptions, Plan, Report};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mitogen::{Context, Router};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long, after Ctrl-C, results of the stopped commands are awaited.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The progress display: a bar on a terminal, nothing otherwise.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    connected: u64,
    done: u64,
    failed: u64,
    /// Bytes moved so far (transfers), shown when set.
    bytes: Option<Arc<AtomicU64>>,
}

impl Progress {
    /// A display for `total` targets, drawn on stderr when it is a
    /// terminal (and `quiet` is off); with `bytes`, the bytes moved so
    /// far too.
    pub fn new(total: usize, quiet: bool, bytes: Option<Arc<AtomicU64>>) -> Progress {
        let target = if !quiet && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed:>3} [{bar:30}] {pos}/{len} done  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        let p = Progress {
            bar,
            connected: 0,
            done: 0,
            failed: 0,
            bytes,
        };
        p.update();
        p
    }

    fn update(&self) {
        let running = self.connected.saturating_sub(self.done);
        let mut msg = format!(
            "connected {} · running {running} · failed {}",
            self.connected, self.failed
        );
        if let Some(b) = &self.bytes {
            let n = b.load(Ordering::Relaxed);
            let secs = self.bar.elapsed().as_secs_f64();
            msg.push_str(&format!(" · {}", crate::output::bytes(n)));
            if secs > 0.5 {
                msg.push_str(&format!(
                    " ({}/s)",
                    crate::output::bytes((n as f64 / secs) as u64)
                ));
            }
        }
        self.bar.set_message(msg);
        self.bar.set_position(self.done);
    }

    /// Runs `f` with the bar hidden (for printing results).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Says something on the bar's line.
    pub fn note(&self, s: &str) {
        self.bar.set_message(s.to_string());
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The result of one run: per target, what `work` produced, if it ended.
#[derive(Debug)]
pub struct Finished<T> {
    /// Indexed like the plan's targets.
    pub results: Vec<Option<T>>,
    /// Whether Ctrl-C ended the run.
    pub interrupted: bool,
    /// Wall time of the run.
    pub took: Duration,
}

/// Everything a run needs.
#[derive(Debug)]
pub struct Session<'r> {
    /// The router contexts are started from.
    pub router: &'r Router,
    /// The hop tree.
    pub plan: Arc<Plan>,
    /// How hops connect.
    pub opts: ConnectOptions,
    /// At most this many targets at once.
    pub forks: usize,
    /// No progress display even on a terminal.
    pub quiet: bool,
    /// The warm master whose contexts the plan uses, kept attached.
    pub _attached: Option<std::sync::Arc<crate::master::Attached>>,
    /// Contexts are kept when their targets are done (a master's), not
    /// shut down as each target finishes.
    pub keep: bool,
    /// Bytes moved so far, counted by the work (transfers): shown in the
    /// progress display when set.
    pub bytes: Option<Arc<AtomicU64>>,
}

impl Session<'_> {
    /// Runs `work` on every target. `on_done` sees each result as it
    /// arrives (to print it) and says whether the target succeeded;
    /// `on_stop` is called once on Ctrl-C with every connected context.
    pub fn run<T, W>(
        &self,
        work: W,
        mut on_done: impl FnMut(&Progress, usize, &T) -> bool,
        on_stop: impl FnOnce(&[Context]),
    ) -> Finished<T>
    where
        T: Send + 'static,
        W: Fn(usize, Result<Context, String>, Duration) -> T + Send + Sync + 'static,
    {
        let start = Instant::now();
        let n = self.plan.targets.len();
        let interrupt = Interrupt::install();
        let stop = Arc::new(AtomicBool::new(false));
        let mut progress = Progress::new(n, self.quiet, self.bytes.clone());
        let rx = run_all(
            self.plan.clone(),
            self.router,
            &self.opts,
            // A warm master's contexts are its own to keep.
            (self.forks, !self.keep && self.plan.source.is_none()),
            stop.clone(),
            work,
        );
        let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
        let mut deadline: Option<Instant> = None;
        let mut on_stop = Some(on_stop);
        let mut left = n;
        while left > 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if deadline.is_none() && interrupt.fired() {
                stop.store(true, Ordering::Relaxed);
                progress.note("interrupted: stopping the commands (Ctrl-C again to quit now)");
                if let Some(f) = on_stop.take() {
                    f(&self.plan.connected());
                }
                deadline = Some(Instant::now() + STOP_GRACE);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Report::Connected) => {
                    progress.connected += 1;
                    progress.update();
                }
                Ok(Report::Done(i, t)) => {
                    let ok = on_done(&progress, i, &t);
                    results[i] = Some(t);
                    left -= 1;
                    progress.done += 1;
                    progress.failed += u64::from(!ok);
                    progress.update();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if progress.bytes.is_some() && deadline.is_none() {
                        progress.update();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        progress.finish();
        Finished {
            results,
            interrupted: deadline.is_some(),
            took: start.elapsed(),
        }
    }
}
