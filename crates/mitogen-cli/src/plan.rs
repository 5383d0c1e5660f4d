//! Connection planning: the targets' paths merged into one tree of hops,
//! so a hop shared by many targets (a bastion, a host under several sudo
//! accounts) is connected once, and a hop that fails fails exactly the
//! targets behind it, each with the reason.
//!
//! Targets are worked on by at most `forks` threads at a time (pdsh's
//! fan-out). A thread that needs a hop another thread is connecting waits
//! for that one connect instead of starting its own (`OnceLock`), so 20
//! hosts behind one bastion make one bastion connection whatever the
//! order the threads arrive in. Every connect is bounded by the
//! connect timeout, so no wait here is unbounded.

use crate::target::{BecomeMethod, ContainerMethod, Hop, Target};
use mitogen::{Context, HostKeyCheck, Router};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// How hops are connected: what the command line said.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Bound on each hop's connect.
    pub connect_timeout: Duration,
    /// Extra ssh arguments (`-F FILE`, `-o OPT`).
    pub ssh_args: Vec<String>,
    /// Host key checking of ssh hops.
    pub host_keys: HostKeyCheck,
    /// Identity file of ssh hops.
    pub identity: Option<PathBuf>,
    /// Password typed to sudo/su/doas hops when they ask.
    pub become_password: Option<mitogen::Secret>,
}

/// A hop connected: its context and how long the connect took.
#[derive(Debug, Clone)]
pub struct Link {
    /// The context at the end of the hop.
    pub ctx: Context,
    /// From asking to ready.
    pub took: Duration,
}

/// One node of the hop tree.
#[derive(Debug)]
pub struct Node {
    /// The hop from the parent (or from this program).
    pub hop: Hop,
    /// The node this hop starts from.
    pub parent: Option<usize>,
    /// The connect's outcome, once known (the error says why).
    pub link: OnceLock<Result<Link, String>>,
    /// Targets whose path goes through this node and that are not done
    /// (see [`Plan::release`]).
    users: AtomicUsize,
}

/// Where targets come from instead of connecting here: a warm master,
/// asked by target name.
pub struct Source(pub Box<SourceFn>);

/// Asks for a target by canonical name.
pub type SourceFn = dyn Fn(&str) -> Result<Context, String> + Send + Sync;

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source(..)")
    }
}

/// The hop tree of a set of targets.
#[derive(Debug)]
pub struct Plan {
    /// Nodes, parents before children.
    pub nodes: Vec<Node>,
    /// The targets, each with its last node.
    pub targets: Vec<(Target, usize)>,
    /// When set, targets are asked of it whole (their hops are the
    /// master's business) instead of connected hop by hop here.
    pub source: Option<Source>,
}

impl Plan {
    /// Merges the targets' paths.
    pub fn new(targets: Vec<Target>) -> Plan {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<(Option<usize>, Hop), usize> = HashMap::new();
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let mut parent = None;
            for hop in &t.hops {
                let key = (parent, hop.clone());
                let i = *index.entry(key).or_insert_with(|| {
                    nodes.push(Node {
                        hop: hop.clone(),
                        parent,
                        link: OnceLock::new(),
                        users: AtomicUsize::new(0),
                    });
                    nodes.len() - 1
                });
                nodes[i].users.fetch_add(1, Ordering::Relaxed);
                parent = Some(i);
            }
            if let Some(leaf) = parent {
                out.push((t, leaf));
            }
        }
        Plan {
            nodes,
            targets: out,
            source: None,
        }
    }

    /// The path of node `i` as a target name (`bastion/web01`).
    pub fn path_name(&self, i: usize) -> String {
        let mut hops = vec![self.nodes[i].hop.to_string()];
        let mut p = self.nodes[i].parent;
        while let Some(j) = p {
            hops.push(self.nodes[j].hop.to_string());
            p = self.nodes[j].parent;
        }
        hops.reverse();
        hops.join("/")
    }

    /// Connects node `i` and every hop before it (each at most once in
    /// the whole plan) and returns its context, or why it is unreachable.
    pub fn reach(
        &self,
        router: &Router,
        opts: &ConnectOptions,
        i: usize,
    ) -> Result<Context, String> {
        let node = &self.nodes[i];
        // Known already: connected by another target.
        if let Some(r) = node.link.get() {
            return r.as_ref().map(|l| l.ctx.clone()).map_err(Clone::clone);
        }
        if let Some(src) = &self.source {
            let r = node.link.get_or_init(|| {
                let t = Instant::now();
                (src.0)(&self.path_name(i)).map(|ctx| Link {
                    ctx,
                    took: t.elapsed(),
                })
            });
            return r.as_ref().map(|l| l.ctx.clone()).map_err(Clone::clone);
        }
        let via = match node.parent {
            Some(p) => match self.reach(router, opts, p) {
                Ok(ctx) => Some(ctx),
                Err(e) if e.starts_with("via ") => return Err(e),
                Err(e) => return Err(format!("via {}: {e}", self.path_name(p))),
            },
            None => None,
        };
        let r = node.link.get_or_init(|| {
            let t = Instant::now();
            connect(router, opts, &node.hop, via.as_ref())
                .map(|ctx| Link {
                    ctx,
                    took: t.elapsed(),
                })
                .map_err(|e| format!("connect {}: {e}", node.hop))
        });
        r.as_ref().map(|l| l.ctx.clone()).map_err(Clone::clone)
    }

    /// Every context connected so far and not released, leaves last.
    pub fn connected(&self) -> Vec<Context> {
        self.nodes
            .iter()
            .filter(|n| n.users.load(Ordering::Relaxed) > 0)
            .filter_map(|n| n.link.get()?.as_ref().ok().map(|l| l.ctx.clone()))
            .collect()
    }

    /// Target `leaf`'s work is done: every hop on its path that no other
    /// target still needs is shut down now, without waiting (the leaf
    /// first), so the contexts' teardown (their ssh exiting, their
    /// processes reaped) overlaps the other targets' work instead of
    /// following it all, as pdsh's ssh processes exit with their commands.
    pub fn release(&self, leaf: usize) {
        let mut at = Some(leaf);
        while let Some(i) = at {
            let node = &self.nodes[i];
            let before = node
                .users
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1));
            if before == Ok(1) {
                if let Some(Ok(l)) = node.link.get() {
                    // A context already gone has nothing to stop.
                    let _ = l.ctx.shutdown(false, None);
                }
            }
            at = node.parent;
        }
    }
}

/// Connects one hop, from `via` or from here.
pub(crate) fn connect(
    router: &Router,
    opts: &ConnectOptions,
    hop: &Hop,
    via: Option<&Context>,
) -> mitogen::Result<Context> {
    let password = opts
        .become_password
        .as_ref()
        .map(|s| s.expose().to_string());
    macro_rules! finish {
        ($b:expr) => {{
            let mut b = $b.connect_timeout(opts.connect_timeout);
            if let Some(v) = via {
                b = b.via(v);
            }
            b.connect()
        }};
    }
    macro_rules! become_ {
        ($b:expr, $user:expr) => {{
            let mut b = $b.username($user.as_str());
            if let Some(pw) = &password {
                b = b.password(pw.as_str());
            }
            finish!(b)
        }};
    }
    match hop {
        Hop::Local { name } => finish!(router.local().remote_name(name.as_str())),
        Hop::Ssh { user, host, port } => {
            let mut b = router
                .ssh(host.as_str())
                .ssh_args(opts.ssh_args.clone())
                .check_host_keys(opts.host_keys);
            if let Some(u) = user {
                b = b.username(u.as_str());
            }
            if let Some(p) = port {
                b = b.port(*p);
            }
            if let Some(f) = &opts.identity {
                b = b.identity_file(f);
            }
            finish!(b)
        }
        Hop::Container { method, user, name } => match method {
            ContainerMethod::Docker => {
                let mut b = router.docker().container(name.as_str());
                if let Some(u) = user {
                    b = b.username(u.as_str());
                }
                finish!(b)
            }
            ContainerMethod::Podman => {
                let mut b = router.podman().container(name.as_str());
                if let Some(u) = user {
                    b = b.username(u.as_str());
                }
                finish!(b)
            }
            ContainerMethod::Lxc => finish!(router.lxc(name.as_str())),
            ContainerMethod::Kubectl => finish!(router.kubectl(name.as_str())),
        },
        Hop::Become { method, user } => match method {
            BecomeMethod::Sudo => become_!(router.sudo(), user),
            BecomeMethod::Su => become_!(router.su(), user),
            BecomeMethod::Doas => become_!(router.doas(), user),
        },
    }
}

/// What a worker reports about one target.
#[derive(Debug)]
pub enum Report<T> {
    /// The target's context is ready (for progress).
    Connected,
    /// The target's work is done (or failed), with what it produced.
    Done(usize, T),
}

/// Runs `work` on every target of `plan`, at most `forks` at once, and
/// returns a receiver of reports in completion order. Workers take no new
/// target once `stop` is set. `work` gets the target's index and its
/// context, or the reason it is unreachable. With `release`, the hops a
/// finished target alone needed are shut down at once ([`Plan::release`]);
/// a master keeps them.
pub fn run_all<T, F>(
    plan: Arc<Plan>,
    router: &Router,
    opts: &ConnectOptions,
    (forks, release): (usize, bool),
    stop: Arc<AtomicBool>,
    work: F,
) -> mpsc::Receiver<Report<T>>
where
    T: Send + 'static,
    F: Fn(usize, Result<Context, String>, Duration) -> T + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel();
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let n = forks.clamp(1, plan.targets.len().max(1));
    for w in 0..n {
        let (plan, next, tx, stop, work) = (
            plan.clone(),
            next.clone(),
            tx.clone(),
            stop.clone(),
            work.clone(),
        );
        let (router, opts) = (router.clone(), opts.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("mitogen-cli-{w}"))
            .spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, leaf)) = plan.targets.get(i) else {
                    return;
                };
                let t = Instant::now();
                let ctx = plan.reach(&router, &opts, *leaf);
                let took = t.elapsed();
                if ctx.is_ok() && tx.send(Report::Connected).is_err() {
                    return;
                }
                let done = work(i, ctx, took);
                if release {
                    plan.release(*leaf);
                }
                if tx.send(Report::Done(i, done)).is_err() {
                    return;
                }
            });
        if let Err(e) = spawned {
            // Fewer workers than asked still finish the work; none at all
            // is reported by the caller seeing no progress.
            eprintln!("mitogen: cannot start a worker thread: {e}");
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;

    #[test]
    fn shared_prefixes_are_one_node() {
        let t = Inventory::default()
            .resolve("ssh:b/web[01-20]/sudo,ssh:b/web01/su:bob,local[1-3],b")
            .unwrap();
        let plan = Plan::new(t);
        assert_eq!(plan.targets.len(), 25);
        // b, 20 web, 20 sudo, 1 su, 3 local; the last `b` (ssh b, no via)
        // is the same hop as the first one's first hop.
        assert_eq!(plan.nodes.len(), 1 + 20 + 20 + 1 + 3);
        assert_eq!(plan.targets[24].1, 0);
        assert_eq!(plan.path_name(plan.targets[0].1), "b/web01/sudo:root");
        let bastion_children = plan.nodes.iter().filter(|n| n.parent == Some(0)).count();
        assert_eq!(bastion_children, 20);
    }

    #[test]
    fn a_hop_is_released_by_the_last_target_that_needs_it() {
        let t = Inventory::default()
            .resolve("ssh:b/web[01-02],ssh:b/web01/su:bob")
            .unwrap();
        let plan = Plan::new(t);
        let users = |i: usize| plan.nodes[i].users.load(Ordering::Relaxed);
        let (web01, web02, su) = (plan.targets[0].1, plan.targets[1].1, plan.targets[2].1);
        assert_eq!(
            (users(0), users(web01), users(web02), users(su)),
            (3, 2, 1, 1)
        );
        assert_eq!(plan.connected().len(), 0, "nothing is connected yet");
        plan.release(web02);
        assert_eq!((users(0), users(web02)), (2, 0));
        plan.release(su);
        assert_eq!((users(0), users(web01), users(su)), (1, 1, 0));
        plan.release(web01);
        assert_eq!((users(0), users(web01)), (0, 0));
        // A second release of a done target finds nothing to count down.
        plan.release(web01);
        assert_eq!((users(0), users(web01)), (0, 0));
    }
}
