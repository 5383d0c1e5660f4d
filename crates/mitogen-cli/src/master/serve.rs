//! The warm master, its side: the `Held` service attached commands call,
//! the hops it holds, and how long it lives.
//!
//! Hops are kept by path name (`bastion/web01/sudo:root`), each in a
//! `OnceLock`, so concurrent commands asking for targets behind the same
//! bastion wait for one connect of it, as within one run (`plan`). A hop
//! that failed, or whose context has since disconnected, is connected
//! again on the next request: a master never hands out a dead context
//! or remembers a failure forever.
//!
//! A master with a persist time exits once no process has been attached
//! for that long; every master exits on Ctrl-C, SIGTERM, or `mitogen
//! master stop`.

use crate::plan::{connect, ConnectOptions, Plan};
use mitogen::service::{BoxError, Service};
use mitogen::unix::{Listener, Reach};
use mitogen::{Context, Router, Secret};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Service threads: concurrent connects of attached commands (each
/// bounded by the connect timeout).
const POOL_THREADS: usize = 64;
/// Requests queued beyond them.
const POOL_QUEUED: usize = 4096;

/// What a master says about itself (`mitogen master status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    /// Its name.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Seconds since it started.
    pub up: f64,
    /// It exits after this many seconds with nobody attached, if set.
    pub persist: Option<f64>,
    /// Seconds since the last process detached; `None` while one is.
    pub idle: Option<f64>,
    /// Processes attached now (the asking one included).
    pub attached: usize,
    /// The targets it holds connected, by path name.
    pub held: Vec<String>,
}

/// A target asked of a master: its context, or why it is unreachable.
/// (A struct rather than a `Result`, which a service method's caller
/// would see as a failed call.)
#[derive(Debug, Serialize, Deserialize)]
pub struct Reached {
    /// The target's context.
    pub context: Option<Context>,
    /// Why there is none.
    pub error: Option<String>,
}

type Cell = Arc<OnceLock<Result<Context, String>>>;

/// The master's state, for its service.
struct State {
    router: Router,
    name: String,
    opts: ConnectOptions,
    started: Instant,
    persist: Option<Duration>,
    stop: AtomicBool,
    /// Where attached processes come in.
    listener: OnceLock<Listener>,
    /// When the last attached process detached (or the master started).
    idle_since: Mutex<Instant>,
    /// Hops by path name.
    hops: Mutex<HashMap<String, Cell>>,
}

static STATE: OnceLock<Arc<State>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// The cell of hop path `key`: the one held, unless it failed or
    /// its context is gone, then a fresh one.
    fn cell(&self, key: &str) -> Cell {
        let mut hops = lock(&self.hops);
        let c = hops.entry(key.to_string()).or_default();
        let stale = match c.get() {
            Some(Ok(ctx)) => !ctx.is_connected(),
            Some(Err(_)) => true,
            None => false,
        };
        if stale {
            *c = Cell::default();
        }
        c.clone()
    }

    /// Reaches `target` hop by hop, connecting what is not held.
    fn reach(&self, target: &str, password: Option<Secret>) -> Result<Context, String> {
        let mut parsed =
            crate::target::parse_chain("target", target, 0, target).map_err(|e| e.to_string())?;
        let t = match (parsed.pop(), parsed.is_empty()) {
            (Some(t), true) => t,
            _ => return Err(format!("{target:?} is not one target")),
        };
        let mut opts = self.opts.clone();
        opts.become_password = password;
        let mut via: Option<Context> = None;
        let mut path = String::new();
        for (k, hop) in t.hops.iter().enumerate() {
            if k > 0 {
                path.push('/');
            }
            path.push_str(&hop.to_string());
            let cell = self.cell(&path);
            let r = cell.get_or_init(|| {
                connect(&self.router, &opts, hop, via.as_ref())
                    .map_err(|e| format!("connect {hop}: {e}"))
            });
            match r {
                Ok(ctx) => via = Some(ctx.clone()),
                Err(e) if k + 1 < t.hops.len() => return Err(format!("via {path}: {e}")),
                Err(e) => return Err(e.clone()),
            }
        }
        via.ok_or_else(|| format!("{target:?} has no hops"))
    }
}

/// The master's service, which attached commands call.
pub struct Held;

impl Service for Held {
    const NAME: &'static str = "mitogen_cli::Held";
    fn new(_: &mitogen::ExternalContext) -> Result<Self, BoxError> {
        Ok(Held)
    }
}

fn state() -> Result<&'static Arc<State>, BoxError> {
    STATE
        .get()
        .ok_or_else(|| "this process is not serving as a master".into())
}

/// (Parents only, the default: an attached process of the same user acts
/// as the master.)
#[mitogen::service(pub(crate))]
impl Held {
    /// The context of `target` (a canonical name), connected first if it
    /// is not held; `password` answers become prompts of new hops.
    #[expose]
    fn acquire(&self, target: String, password: Option<Secret>) -> Result<Reached, BoxError> {
        Ok(match state()?.reach(&target, password) {
            Ok(c) => Reached {
                context: Some(c),
                error: None,
            },
            Err(e) => Reached {
                context: None,
                error: Some(e),
            },
        })
    }

    /// What the master holds and how long it has to live.
    #[expose]
    fn info(&self) -> Result<Info, BoxError> {
        let s = state()?;
        // Not counting the asking process.
        let others = s
            .listener
            .get()
            .map_or(0, |l| l.attached().saturating_sub(1));
        let mut held: Vec<String> = lock(&s.hops)
            .iter()
            .filter(|(_, c)| matches!(c.get(), Some(Ok(ctx)) if ctx.is_connected()))
            .map(|(k, _)| k.clone())
            .collect();
        held.sort();
        Ok(Info {
            name: s.name.clone(),
            pid: std::process::id(),
            up: s.started.elapsed().as_secs_f64(),
            persist: s.persist.map(|d| d.as_secs_f64()),
            idle: (others == 0).then(|| lock(&s.idle_since).elapsed().as_secs_f64()),
            attached: others,
            held,
        })
    }

    /// Stops the master.
    #[expose]
    fn stop(&self) -> Result<(), BoxError> {
        state()?.stop.store(true, Ordering::Release);
        Ok(())
    }
}

/// Serves as master `name` until Ctrl-C, SIGTERM, `mitogen master stop`
/// or, with `persist`, that long with nobody attached. `plan`'s connected
/// hops are held from the start.
pub fn serve(
    router: &Router,
    name: &str,
    persist: Option<Duration>,
    opts: &ConnectOptions,
    plan: &Plan,
) -> Result<ExitCode, String> {
    let path = super::socket(name)?;
    let mut hops = HashMap::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        if let Some(Ok(link)) = node.link.get() {
            hops.insert(
                plan.path_name(i),
                Arc::new(OnceLock::from(Ok(link.ctx.clone()))),
            );
        }
    }
    let held = plan
        .targets
        .iter()
        .filter(|(_, leaf)| matches!(plan.nodes[*leaf].link.get(), Some(Ok(_))))
        .count();
    let mut opts = opts.clone();
    opts.become_password = None;
    let state = Arc::new(State {
        router: router.clone(),
        name: name.to_string(),
        opts,
        started: Instant::now(),
        persist,
        stop: AtomicBool::new(false),
        listener: OnceLock::new(),
        idle_since: Mutex::new(Instant::now()),
        hops: Mutex::new(hops),
    });
    if STATE.set(state.clone()).is_err() {
        return Err("this process serves as a master already".into());
    }
    mitogen::service::Services::of(router)
        .set_pool_size(POOL_THREADS, POOL_QUEUED)
        .map_err(|e| format!("master {name:?}: {e}"))?;
    let listener = Listener::bind(router, &path, Reach::Tree)
        .map_err(|e| format!("master {name:?}: cannot listen on {}: {e}", path.display()))?;
    let listener = state.listener.get_or_init(|| listener);
    let until = match persist {
        Some(d) => format!("{} with nothing attached", super::show_duration(d)),
        None => "Ctrl-C or `mitogen master stop`".to_string(),
    };
    eprintln!(
        "mitogen: master {name:?} holds {held} of {} targets on {} (until {until})",
        plan.targets.len(),
        path.display()
    );
    let interrupt = crate::interrupt::Interrupt::install();
    let mut busy = false;
    let why = loop {
        if interrupt.fired() {
            break "interrupted";
        }
        if state.stop.load(Ordering::Acquire) {
            break "asked to stop";
        }
        // Any attached process (`status` too) keeps the master alive;
        // the persist time counts from the last one's leaving.
        let n = listener.attached();
        if n > 0 {
            busy = true;
        } else if busy {
            busy = false;
            *lock(&state.idle_since) = Instant::now();
        } else if persist.is_some_and(|d| lock(&state.idle_since).elapsed() >= d) {
            break "idle";
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(interrupt);
    listener.close();
    eprintln!("mitogen: master {name:?} stopped ({why})");
    Ok(ExitCode::SUCCESS)
}
