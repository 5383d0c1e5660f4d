//! The last step every method shares: run the first stage and handshake
//! on a started transport (`bootstrap`), then attach the new stream to
//! the router. Also where a connect in flight becomes the bootstrap's
//! [`Bounds`] (deadline and cancellation).

use crate::bootstrap::{self, AgentBinary, Bounds, Config, Spawned};
use crate::connect::inflight::Flight;
use crate::context::Context;
use crate::error::Result;
use crate::link::Stream;
use crate::router::Core;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bounds for Flight {
    fn check(&self, who: &str) -> Result<()> {
        Flight::check(self, who)
    }
    fn deadline(&self) -> Instant {
        Flight::deadline(self)
    }
    fn timeout(&self) -> Duration {
        Flight::timeout(self)
    }
    fn wake_fd(&self) -> RawFd {
        Flight::wake_fd(self)
    }
}

/// Bootstraps a started transport and registers the new context. `who`
/// names it in messages (`web1 (ssh to root@web1)`); `classify` is a
/// method's own reading of its tool's failures. The transport's process
/// is killed and reaped on any failure, shutdown included.
pub(crate) fn finish(
    core: &Arc<Core>,
    sp: Spawned,
    agent: &AgentBinary,
    cfg: &Config,
    flight: &Flight,
    who: &str,
    classify: Option<bootstrap::Classify<'_>>,
) -> Result<Context> {
    let booted = match bootstrap::run(&sp, agent, cfg, flight, who, classify) {
        Ok(b) => b,
        Err(e) => {
            kill_and_reap(&sp.child);
            return Err(e);
        }
    };
    tracing::debug!(
        "mitogen: {} up (pid {}, uploaded {} bytes)",
        cfg.name,
        booted.hello.pid,
        booted.uploaded
    );
    let Spawned {
        rfd,
        wfd,
        stderr,
        child,
    } = sp;
    let max = cfg.limits.max_message_size as usize;
    let stream = match Stream::new(
        cfg.name.clone(),
        cfg.context_id,
        false,
        rfd,
        wfd,
        max,
        Some(child.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            kill_and_reap(&child);
            return Err(crate::process::fd_error("cannot set up the stream", e));
        }
    };
    // Attached only if shutdown has not begun; else the stream is dropped.
    let attached = flight.commit(who, || core.attach(Arc::new(stream), booted.reader));
    if let Err(e) = attached {
        kill_and_reap(&child);
        return Err(e);
    }
    // What it said before the agent ran goes to the log like what it says
    // later, not only into error messages.
    for line in booted.early_stderr.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(
            target: "mitogen::child",
            context = cfg.name.as_str(),
            "stderr: {}",
            line.trim_end()
        );
    }
    if let Some(err) = stderr {
        let name = cfg.name.clone();
        core.broker.defer_loop(Box::new(move |lp| {
            crate::logging::watch_lines(lp, err, move |line| {
                tracing::warn!(target: "mitogen::child", context = name.as_str(), "stderr: {line}")
            })
        }));
    }
    crate::router::control::announce_added(core, cfg.context_id, &cfg.name);
    Ok(Context::new(core.clone(), cfg.context_id, &cfg.name).with_upload(booted.uploaded))
}

/// Ends a transport whose bootstrap failed: SIGKILL (unless the bootstrap
/// already reaped it) and reap, within a bound.
pub(crate) fn kill_and_reap(child: &crate::child::ChildProc) {
    child.kill_and_reap(Duration::from_secs(5));
}
