//! The warm master: `mitogen master --name N TARGETS` connects the
//! targets once and stays up; later commands given `--master N` attach
//! to it over a private Unix socket (`mitogen::unix`) and use its
//! contexts instead of connecting again, so a run costs round trips, not
//! ssh handshakes.
//!
//! The master serves one service, [`Held`]: the canonical target names
//! it holds, each with its context. An attached command fills its plan's
//! leaves with those contexts before its workers start, so the planner
//! and the commands are the same code with or without a master; a target
//! the master does not hold is reported as such, not connected behind the
//! master's back.

use crate::plan::{Link, Plan};
use mitogen::service::{BoxError, Service};
use mitogen::unix::{self, Listener, Reach};
use mitogen::{Context, Router};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// What the master holds: (target name, context), set once it has
/// connected.
static HELD: Mutex<Vec<(String, Context)>> = Mutex::new(Vec::new());

/// The master's targets, for attached commands.
struct Held;

impl Service for Held {
    const NAME: &'static str = "mitogen_cli::Held";
    fn new(_: &mitogen::ExternalContext) -> Result<Self, BoxError> {
        Ok(Held)
    }
}

#[mitogen::service]
impl Held {
    /// Every target held, with its context (parents only: an attached
    /// process of the same user acts as the master).
    #[expose]
    fn targets(&self) -> Vec<(String, Context)> {
        let held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .filter(|(_, c)| c.is_connected())
            .cloned()
            .collect()
    }
}

/// The socket of master `name`.
pub fn socket(name: &str) -> Result<PathBuf, String> {
    unix::default_path(&format!("mitogen-cli-{name}")).map_err(|e| format!("master {name:?}: {e}"))
}

/// Listens for attaching commands and publishes what the plan reached.
/// Returns the listener (closed when dropped) and how many targets are
/// held.
pub fn serve(router: &Router, name: &str, plan: &Plan) -> Result<(Listener, usize), String> {
    let path = socket(name)?;
    let listener = Listener::bind(router, &path, Reach::Tree)
        .map_err(|e| format!("master {name:?}: cannot listen on {}: {e}", path.display()))?;
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    for (t, leaf) in &plan.targets {
        if let Some(Ok(link)) = plan.nodes[*leaf].link.get() {
            held.push((t.name(), link.ctx.clone()));
            let _ = listener.publish(&link.ctx);
        }
    }
    Ok((listener, held.len()))
}

/// An attachment to a master: keep it alive while its contexts are used.
#[derive(Debug)]
pub struct Attached {
    /// The attached process's router, kept for its lifetime (dropping
    /// it detaches).
    _router: Router,
}

/// Attaches to master `name` and fills `plan`'s leaves with its
/// contexts; a target it does not hold fails with that reason.
pub fn attach(name: &str, plan: &Plan, timeout: Duration) -> Result<Attached, String> {
    let path = socket(name)?;
    let (router, master) =
        unix::connect(&path, Some(timeout)).map_err(|e| format!("master {name:?}: {e}"))?;
    let held = master
        .call_service::<held::targets>(())
        .map_err(|e| format!("master {name:?}: {e}"))?;
    for (t, leaf) in &plan.targets {
        let name_t = t.name();
        let got = held.iter().find(|(n, _)| *n == name_t);
        let r = match got {
            Some((_, ctx)) => Ok(Link {
                ctx: ctx.clone(),
                took: Duration::ZERO,
            }),
            None => Err(format!("master {name:?} does not hold {name_t}")),
        };
        let _ = plan.nodes[*leaf].link.set(r);
    }
    Ok(Attached { _router: router })
}
