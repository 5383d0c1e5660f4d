//! `copy` and `fetch`: files and directory trees to and from every
//! target, with `mitogen::files` (checksum-verified, atomic per file,
//! resumable, identical files skipped).
//!
//! `fetch` and `copy` to targets that share no hop run one transfer per
//! target as it is reached ([`mitogen::files::put`] or `get`), at most
//! `--forks` at once. Targets that share a first hop (`bastion/web[01-20]`,
//! `host/sudo:alice,host/sudo:bob`) are *pushed* to instead
//! ([`mitogen::files::push`]): every file crosses each link once and the
//! shared hop forwards it. A push needs all its targets at once, so
//! such a `copy` connects every target first, then transfers; the push
//! of a group runs on the worker of its first reachable target, and the
//! group's other targets wait for their share of its results (they come
//! later in the workers' order, so the push is always running when they
//! wait).

mod paths;
mod result;

use crate::cli::{secs, ChecksumArg, CopyArgs, FetchArgs, TransferOpts};
use crate::commands::{session, status, unfinished};
use crate::plan::Plan;
use crate::session::Session;
use mitogen::files::{self, Checksum, FileErrorKind, Options};
use mitogen::Context;
use paths::Pair;
use result::{Way, XferResult};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The library's options from the command line's.
fn options(o: &TransferOpts) -> Result<Options, String> {
    Ok(Options::new()
        .owner(!o.no_owner)
        .skip_identical(!o.no_skip)
        .fsync(!o.no_fsync)
        .checksum(match o.checksum {
            ChecksumArg::Xxh3 => Checksum::Xxh3,
            ChecksumArg::Blake3 => Checksum::Blake3,
        })
        .timeout(secs("--stall-timeout", o.stall_timeout)?))
}

/// `opts` with a progress callback adding the bytes moved to `counter`
/// (the callback reports totals of one transfer; the counter gets the
/// increments).
fn counting(opts: &Options, counter: &Arc<AtomicU64>) -> Options {
    let last = AtomicU64::new(0);
    let counter = counter.clone();
    opts.clone().progress(move |p| {
        let before = last.swap(p.bytes, Ordering::Relaxed);
        counter.fetch_add(p.bytes.saturating_sub(before), Ordering::Relaxed);
    })
}

/// Prints one finished target (its line, or its JSON object).
fn print(json: bool, r: &XferResult, way: Way) {
    let out = std::io::stdout();
    let mut o = out.lock();
    if json {
        let _ = writeln!(o, "{}", r.json());
    } else {
        for l in r.lines(way) {
            let _ = writeln!(o, "{l}");
        }
    }
}

/// Runs `work` for every target, printing each result as it ends, then
/// the summary (the time since `start`); gives the exit status.
fn run_all<W>(s: &Session<'_>, work: W, json: bool, start: Instant, way: Way) -> ExitCode
where
    W: Fn(usize, Result<Context, String>, Duration) -> XferResult + Send + Sync + 'static,
{
    let fin = s.run(
        work,
        |p, _, r: &XferResult| {
            p.suspend(|| print(json, r, way));
            r.ok()
        },
        |_| {},
    );
    let done: Vec<&XferResult> = fin.results.iter().flatten().collect();
    let left = unfinished(&s.plan, &fin);
    eprintln!(
        "mitogen: {}",
        result::summary(&done, &left, start.elapsed(), way)
    );
    let all_ok = left.is_empty() && done.iter().all(|r| r.ok());
    status(all_ok, fin.interrupted)
}

/// The targets' names, in the plan's order.
fn names(plan: &Plan) -> Vec<String> {
    plan.targets.iter().map(|(t, _)| t.name()).collect()
}

/// The hint added to a copy's error: a file sent onto a directory.
fn copy_hint(pair: &Pair) -> impl Fn(&files::FileError) -> String + '_ {
    move |e| {
        if pair.exact && e.kind() == FileErrorKind::IsADirectory {
            " (to copy into that directory, end the destination with /)".into()
        } else {
            String::new()
        }
    }
}

/// Puts every pair to `ctx`.
fn put_all(
    ctx: &Context,
    r: &mut XferResult,
    pairs: &[Pair],
    opts: &Options,
    counter: &Arc<AtomicU64>,
) {
    for pair in pairs {
        let o = counting(opts, counter);
        r.add(files::put(ctx, &pair.from, &pair.to, &o), copy_hint(pair));
    }
}

/// A push group: targets sharing a first hop.
#[derive(Debug)]
struct Group {
    /// The targets (plan indexes), ascending.
    members: Vec<usize>,
    /// The first reachable member, which runs the push.
    leader: Option<usize>,
    /// The results, once the push ended.
    results: Mutex<Option<HashMap<usize, XferResult>>>,
    ended: Condvar,
}

impl Group {
    /// Stores the results and wakes the members waiting for theirs.
    fn publish(&self, results: HashMap<usize, XferResult>) {
        *self.results.lock().unwrap_or_else(|p| p.into_inner()) = Some(results);
        self.ended.notify_all();
    }

    /// Waits for the push's results and takes target `i`'s.
    fn take(&self, i: usize) -> Option<XferResult> {
        let mut g = self.results.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(m) = g.as_mut() {
                return m.remove(&i);
            }
            g = self.ended.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Publishes an answer for every member even when the push panics, so
/// no member waits forever.
struct PublishGuard<'a> {
    group: &'a Group,
    names: &'a [String],
    done: bool,
}

impl Drop for PublishGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let m = self
                .group
                .members
                .iter()
                .map(|&i| {
                    let mut r = XferResult::new(self.names[i].clone(), Duration::ZERO);
                    r.fail("the push ended without a result".into());
                    (i, r)
                })
                .collect();
            self.group.publish(m);
        }
    }
}

/// The targets grouped by their first hop, groups of two or more only:
/// targets that share any hop share the first one.
fn push_groups(plan: &Plan) -> Vec<Vec<usize>> {
    let mut by_root: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (_, leaf)) in plan.targets.iter().enumerate() {
        let mut n = *leaf;
        while let Some(p) = plan.nodes[n].parent {
            n = p;
        }
        by_root.entry(n).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = by_root.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

/// The context of target `i`, if it was reached.
fn reached(plan: &Plan, i: usize) -> Option<Context> {
    let leaf = plan.targets[i].1;
    match plan.nodes[leaf].link.get() {
        Some(Ok(l)) => Some(l.ctx.clone()),
        _ => None,
    }
}

/// Runs the push of `group` (on its leader's worker): every pair to every
/// reachable member at once; one result per member.
fn push_group(
    plan: &Plan,
    group: &Group,
    names: &[String],
    connect: &[Duration],
    pairs: &[Pair],
    opts: &Options,
    counter: &Arc<AtomicU64>,
) {
    let mut guard = PublishGuard {
        group,
        names,
        done: false,
    };
    let start = Instant::now();
    let members: Vec<(usize, Context)> = group
        .members
        .iter()
        .filter_map(|&i| reached(plan, i).map(|c| (i, c)))
        .collect();
    let ctxs: Vec<Context> = members.iter().map(|(_, c)| c.clone()).collect();
    let mut results: HashMap<usize, XferResult> = members
        .iter()
        .map(|(i, _)| {
            let mut r = XferResult::new(names[*i].clone(), connect[*i]);
            r.pushed = true;
            (*i, r)
        })
        .collect();
    for pair in pairs {
        let o = counting(opts, counter);
        let got = files::push(&ctxs, &pair.from, &pair.to, &o);
        for ((i, _), (_, answer)) in members.iter().zip(got) {
            if let Some(r) = results.get_mut(i) {
                r.add(answer, copy_hint(pair));
            }
        }
    }
    for r in results.values_mut() {
        r.took = Some(start.elapsed());
    }
    group.publish(results);
    guard.done = true;
}

/// `mitogen copy TARGETS SRC... DEST`
pub fn copy(router: &mitogen::Router, args: &CopyArgs) -> Result<ExitCode, String> {
    let start = Instant::now();
    let pairs = Arc::new(paths::copy_pairs(&args.paths)?);
    let opts = options(&args.opts)?;
    let mut s = session(router, &args.common)?;
    let counter = Arc::new(AtomicU64::new(0));
    s.bytes = Some(counter.clone());
    let names: Arc<Vec<String>> = Arc::new(names(&s.plan));
    let json = args.common.json();
    let n = names.len();
    // Through a warm master the targets hang below the master, not
    // below this process: a push would still send one stream per target
    // (and skip nothing), so each target gets its own transfer.
    let groups = if args.no_push || s._attached.is_some() {
        Vec::new()
    } else {
        push_groups(&s.plan)
    };
    // A push needs its targets at once: connect everything first.
    let mut connect = vec![Duration::ZERO; n];
    if !groups.is_empty() {
        // Connected only: the contexts are needed by the pass below.
        s.keep = true;
        let fin = s.run(|_, _, took| took, |_, _, _| true, |_| {});
        s.keep = false;
        if fin.interrupted {
            let left = unfinished(&s.plan, &fin);
            eprintln!(
                "mitogen: interrupted while connecting: nothing was copied ({} of {n} targets connected)",
                n - left.len()
            );
            return Ok(status(false, true));
        }
        for (i, t) in fin.results.iter().enumerate() {
            connect[i] = t.unwrap_or_default();
        }
    }
    let mut member_of: HashMap<usize, Arc<Group>> = HashMap::new();
    for members in groups {
        let leader = members
            .iter()
            .copied()
            .find(|&i| reached(&s.plan, i).is_some());
        let g = Arc::new(Group {
            members,
            leader,
            results: Mutex::new(None),
            ended: Condvar::new(),
        });
        for &i in &g.members {
            member_of.insert(i, g.clone());
        }
    }
    let plan = s.plan.clone();
    let names2 = names.clone();
    let work = move |i: usize, ctx: Result<Context, String>, took: Duration| {
        let name = names2[i].clone();
        let took = connect[i].max(took);
        let ctx = match ctx {
            Ok(c) => c,
            Err(e) => return XferResult::unreachable(name, took, e),
        };
        if let Some(g) = member_of.get(&i) {
            if g.leader == Some(i) {
                push_group(&plan, g, &names2, &connect, &pairs, &opts, &counter);
            }
            return g.take(i).unwrap_or_else(|| {
                let mut r = XferResult::new(name, took);
                r.fail("no result came back from the push".into());
                r
            });
        }
        let start = Instant::now();
        let mut r = XferResult::new(name, took);
        put_all(&ctx, &mut r, &pairs, &opts, &counter);
        r.took = Some(start.elapsed());
        r
    };
    Ok(run_all(&s, work, json, start, Way::Sent))
}

/// Gets every pair from `ctx` into `dir` (made first).
fn get_all(
    ctx: &Context,
    r: &mut XferResult,
    pairs: &[Pair],
    dir: &Path,
    opts: &Options,
    counter: &Arc<AtomicU64>,
) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        r.fail(format!("mkdir {}: {e}", dir.display()));
        return;
    }
    for pair in pairs {
        let o = counting(opts, counter);
        r.add(files::get(ctx, &pair.from, dir.join(&pair.to), &o), |_| {
            String::new()
        });
    }
}

/// `mitogen fetch TARGETS REMOTE... LOCALDIR`
pub fn fetch(router: &mitogen::Router, args: &FetchArgs) -> Result<ExitCode, String> {
    let start = Instant::now();
    let (pairs, local) = paths::fetch_pairs(&args.paths)?;
    let opts = options(&args.opts)?;
    let mut s = session(router, &args.common)?;
    let counter = Arc::new(AtomicU64::new(0));
    s.bytes = Some(counter.clone());
    let names = names(&s.plan);
    let dirs: Vec<PathBuf> = paths::target_dirs(&names)?
        .into_iter()
        .map(|d| local.join(d))
        .collect();
    let json = args.common.json();
    let work = move |i: usize, ctx: Result<Context, String>, took: Duration| {
        let name = names[i].clone();
        let ctx = match ctx {
            Ok(c) => c,
            Err(e) => return XferResult::unreachable(name, took, e),
        };
        let start = Instant::now();
        let mut r = XferResult::new(name, took);
        r.dir = Some(dirs[i].display().to_string());
        get_all(&ctx, &mut r, &pairs, &dirs[i], &opts, &counter);
        r.took = Some(start.elapsed());
        r
    };
    Ok(run_all(&s, work, json, start, Way::Received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;

    #[test]
    fn targets_sharing_a_first_hop_are_pushed_together() {
        let t = Inventory::default()
            .resolve("local[1-2],b/web[1-3],b/web1/sudo,c,c/sudo:bob")
            .unwrap();
        let plan = Plan::new(t);
        // local1, local2 alone; b's four; c and c/sudo:bob.
        assert_eq!(push_groups(&plan), vec![vec![2, 3, 4, 5], vec![6, 7]]);
    }
}
