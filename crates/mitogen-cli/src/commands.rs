//! The commands that work on targets: `run`, `ping`, `facts`, `tree`.
//!
//! Each is a `work` function run per target by a [`Session`] (connect
//! through the shared hop tree, then one call), a way to print each
//! result, and an exit status: 0 when every target succeeded, 1 when any
//! failed or could not be reached, 130 when interrupted.

use crate::cli::{secs, Common, RunArgs};
use crate::interrupt::INTERRUPTED;
use crate::master::Attached;
use crate::output::{self, bytes, Mode, Outcome, TargetResult};
use crate::plan::{Plan, Source};
use crate::remote::{self, CommandSpec, Facts};
use crate::session::{Finished, Session};
use mitogen::Context;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long stopping the commands may take on Ctrl-C.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks every context to stop its commands, all at once, bounded.
fn stop_all(ctxs: &[Context]) {
    let pending: Vec<_> = ctxs
        .iter()
        .filter_map(|c| c.call_async::<remote::stop_commands>(()).ok())
        .collect();
    let until = Instant::now() + STOP_TIMEOUT;
    for p in pending {
        let _ = p.get(Some(until.saturating_duration_since(Instant::now())));
    }
}

/// The warm master a command uses, if any: `--master NAME` (started
/// when missing if `--persist` is given too), or with `--persist` alone
/// the background master of these connect options.
fn warm_master(c: &Common, timeout: Duration) -> Result<Option<Arc<Attached>>, String> {
    let persist = c.persist()?.filter(|d| !d.is_zero());
    let a = match (c.master(), persist) {
        (Some(name), None) => crate::master::attach(name, timeout)?,
        (Some(name), Some(p)) => {
            crate::master::attach_or_start(name, p, &c.connect_args(), timeout)?
        }
        (None, Some(p)) => {
            let args = c.connect_args();
            let name = crate::master::auto_name(&args);
            crate::master::attach_or_start(&name, p, &args, timeout)?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Arc::new(a)))
}

/// The session of a command: its targets planned, attached to the warm
/// master when `--master` or `--persist` says so.
pub(crate) fn session<'r>(router: &'r mitogen::Router, c: &Common) -> Result<Session<'r>, String> {
    let (targets, opts) = c.resolve()?;
    let mut plan = Plan::new(targets);
    let attached = warm_master(c, opts.connect_timeout)?;
    if let Some(a) = &attached {
        let (a, pw) = (a.clone(), opts.become_password.clone());
        // Connecting a new hop may take the master a connect timeout
        // per hop; a dead master fails the call at once.
        let wait = opts.connect_timeout * 8;
        plan.source = Some(Source(Box::new(move |name| {
            a.acquire(name, pw.as_ref(), wait)
        })));
    }
    Ok(Session {
        router,
        plan: Arc::new(plan),
        opts,
        forks: c.forks()?,
        quiet: c.quiet(),
        _attached: attached,
        keep: false,
        bytes: None,
    })
}

/// The names of the targets that did not finish.
pub(crate) fn unfinished<T>(plan: &Plan, f: &Finished<T>) -> Vec<String> {
    plan.targets
        .iter()
        .zip(&f.results)
        .filter(|(_, r)| r.is_none())
        .map(|((t, _), _)| t.name())
        .collect()
}

/// The exit status: 130 after Ctrl-C, else 0 when every target
/// succeeded, else 1.
pub(crate) fn status(all_ok: bool, interrupted: bool) -> ExitCode {
    match (interrupted, all_ok) {
        (true, _) => ExitCode::from(INTERRUPTED),
        (false, true) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(1),
    }
}

/// `mitogen run TARGETS -- COMMAND…`
pub fn run(router: &mitogen::Router, args: &RunArgs) -> Result<ExitCode, String> {
    let s = session(router, &args.common)?;
    let mode = args.shown.mode(args.common.json());
    let spec = CommandSpec {
        script: args.command.join(" "),
        timeout: args
            .bounds
            .timeout
            .map(|t| secs("--timeout", t))
            .transpose()?,
        max_output: args.bounds.max_output,
    };
    // The call's own bound: the command's, plus room for the answer.
    let wait = spec.timeout.map(|t| t + s.opts.connect_timeout);
    let each = move |ctx: &Context| match ctx
        .call_async::<remote::run_command>((spec.clone(),))
        .and_then(|p| p.get(wait))
    {
        Ok(o) => Outcome::Ran(o),
        Err(e) => Outcome::Failed(e.to_string()),
    };
    Ok(outputs(&s, mode, each, stop_all))
}

/// Runs `each` on every target of `s` that was reached (timed), prints
/// each result as `mode` says as it comes, then the gathered output and
/// the summary; the exit status. `on_stop` gets the contexts on Ctrl-C.
pub(crate) fn outputs(
    s: &Session<'_>,
    mode: Mode,
    each: impl Fn(&Context) -> Outcome + Send + Sync + 'static,
    on_stop: impl FnOnce(&[Context]),
) -> ExitCode {
    let names: Vec<String> = s.plan.targets.iter().map(|(t, _)| t.name()).collect();
    let work = move |i: usize, ctx: Result<Context, String>, took: Duration| {
        let name = names[i].clone();
        match ctx {
            Ok(ctx) => {
                let t = Instant::now();
                let outcome = each(&ctx);
                TargetResult {
                    name,
                    connect: took,
                    run: Some(t.elapsed()),
                    outcome,
                }
            }
            Err(e) => TargetResult {
                name,
                connect: took,
                run: None,
                outcome: Outcome::Unreachable(e),
            },
        }
    };
    let fin = s.run(
        work,
        |p, _, r: &TargetResult| {
            p.suspend(|| output::print_one(mode, r));
            r.ok()
        },
        on_stop,
    );
    let results: Vec<TargetResult> = fin.results.iter().flatten().cloned().collect();
    if mode == Mode::Gather {
        let out = std::io::stdout();
        output::print_gathered(&mut out.lock(), &results);
    }
    let left = unfinished(&s.plan, &fin);
    eprintln!("mitogen: {}", output::summary(&results, &left, fin.took));
    let all_ok = left.is_empty() && results.iter().all(TargetResult::ok);
    status(all_ok, fin.interrupted)
}

/// One line of `ping`, `facts` or `tree`: shown as text or JSON.
#[derive(Debug)]
struct Row {
    name: String,
    error: Option<String>,
    text: String,
    json: serde_json::Value,
}

/// Runs `f` on each reachable target, prints a line per target as it
/// finishes, then the summary.
fn rows<F>(router: &mitogen::Router, c: &Common, f: F) -> Result<ExitCode, String>
where
    F: Fn(&Context, Duration) -> Result<(String, serde_json::Value), String>
        + Send
        + Sync
        + 'static,
{
    let s = session(router, c)?;
    let names: Vec<String> = s.plan.targets.iter().map(|(t, _)| t.name()).collect();
    let json = c.json();
    let work = move |i: usize, ctx: Result<Context, String>, took: Duration| {
        let name = names[i].clone();
        let r = ctx.and_then(|ctx| f(&ctx, took));
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        match r {
            Ok((text, mut json)) => {
                json["target"] = name.clone().into();
                json["ok"] = true.into();
                json["connect_ms"] = ms.into();
                Row {
                    name,
                    error: None,
                    text,
                    json,
                }
            }
            Err(e) => Row {
                json: serde_json::json!({
                    "target": name, "ok": false, "connect_ms": ms, "error": e,
                }),
                name,
                text: String::new(),
                error: Some(e),
            },
        }
    };
    let fin = s.run(
        work,
        |p, _, r: &Row| {
            p.suspend(|| {
                let out = std::io::stdout();
                let mut o = out.lock();
                let _ = match (&r.error, json) {
                    (_, true) => writeln!(o, "{}", r.json),
                    (None, false) => writeln!(o, "{}: {}", r.name, r.text),
                    (Some(e), false) => writeln!(o, "{}: [failed] {e}", r.name),
                };
            });
            r.error.is_none()
        },
        |_| {},
    );
    let done: Vec<&Row> = fin.results.iter().flatten().collect();
    let ok = done.iter().filter(|r| r.error.is_none()).count();
    let left = unfinished(&s.plan, &fin);
    let n = s.plan.targets.len();
    let mut summary = format!(
        "{n} target{}: {ok} ok, {} failed",
        if n == 1 { "" } else { "s" },
        done.len() - ok
    );
    if !left.is_empty() {
        summary.push_str(&format!(
            ", {} not finished ({})",
            left.len(),
            crate::nodeset::fold_str(&left)
        ));
    }
    eprintln!("mitogen: {summary} in {:.2}s", fin.took.as_secs_f64());
    Ok(status(ok == s.plan.targets.len(), fin.interrupted))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `mitogen ping TARGETS`: start each target and time a round trip.
pub fn ping(router: &mitogen::Router, c: &Common) -> Result<ExitCode, String> {
    let timeout = c.call_timeout()?;
    rows(router, c, move |ctx, took| {
        let t = Instant::now();
        ctx.call_async::<remote::ping>(())
            .and_then(|p| p.get(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let rtt = t.elapsed();
        Ok((
            format!(
                "reached in {:.1} ms, round trip {:.3} ms",
                ms(took),
                ms(rtt)
            ),
            serde_json::json!({ "rtt_ms": ms(rtt) }),
        ))
    })
}

fn gib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 30) as f64)
}

fn uptime(s: u64) -> String {
    match (s / 86400, s % 86400 / 3600, s % 3600 / 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m:02}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// `mitogen facts TARGETS`.
pub fn facts(router: &mitogen::Router, c: &Common) -> Result<ExitCode, String> {
    let timeout = c.call_timeout()?;
    rows(router, c, move |ctx, _| {
        let f: Facts = ctx
            .call_async::<remote::facts>(())
            .and_then(|p| p.get(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let text = format!(
            "{} ({}) | {} | {} {} | up {} | load {:.2} {:.2} {:.2} | {} cpu | mem {}/{} GiB free | / {}/{} GiB free",
            f.hostname,
            f.user,
            f.os,
            f.kernel,
            f.arch,
            uptime(f.uptime_s),
            f.load[0],
            f.load[1],
            f.load[2],
            f.cpus,
            gib(f.mem_available),
            gib(f.mem_total),
            gib(f.disk_available),
            gib(f.disk_total),
        );
        let json = serde_json::to_value(&f).map_err(|e| e.to_string())?;
        Ok((text, json))
    })
}

/// `mitogen tree TARGETS`: connect everything, then draw the hop tree.
pub fn tree(router: &mitogen::Router, c: &Common) -> Result<ExitCode, String> {
    // The whole tree is asked for its links once every target is in.
    let s = Session {
        keep: true,
        ..session(router, c)?
    };
    let fin = s.run(
        |_, ctx: Result<Context, String>, _| ctx.is_ok(),
        |_, _, ok| *ok,
        |_| {},
    );
    let plan = &s.plan;
    let mut lines = vec![format!(
        "{} (this process, pid {}, context {})",
        std::env::args().next().unwrap_or_else(|| "mitogen".into()),
        std::process::id(),
        router.context_id()
    )];
    let kids = |p: Option<usize>| -> Vec<usize> {
        (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].parent == p)
            .collect()
    };
    // Each link's traffic, as the context holding it counts it: the
    // master for its children, each connected hop for the hops below it.
    let mut held: std::collections::HashMap<u32, Vec<mitogen::LinkStats>> = Default::default();
    held.insert(router.context_id(), router.links());
    for i in 0..plan.nodes.len() {
        if let (Some(Ok(l)), false) = (plan.nodes[i].link.get(), kids(Some(i)).is_empty()) {
            if let Ok(v) = l.ctx.call::<crate::remote::links>(()) {
                held.insert(l.ctx.context_id(), v);
            }
        }
    }
    let traffic = |i: usize, id: u32| -> Option<(u64, u64)> {
        let holder = match plan.nodes[i].parent {
            None => router.context_id(),
            Some(p) => match plan.nodes[p].link.get() {
                Some(Ok(l)) => l.ctx.context_id(),
                _ => return None,
            },
        };
        held.get(&holder)?
            .iter()
            .find(|l| l.context_id == id)
            .map(|l| (l.bytes_sent, l.bytes_received))
    };
    let mut stack: Vec<(usize, String, bool)> = kids(None)
        .into_iter()
        .rev()
        .enumerate()
        .map(|(k, i)| (i, String::new(), k == 0))
        .collect();
    let mut json = Vec::new();
    while let Some((i, indent, last)) = stack.pop() {
        let node = &plan.nodes[i];
        let branch = if last { "└── " } else { "├── " };
        let about = match node.link.get() {
            Some(Ok(l)) => {
                let up = match l.ctx.agent_upload_bytes() {
                    Some(b) if b > 0 => format!(", agent uploaded {:.1} MiB", b as f64 / 1048576.0),
                    _ => String::new(),
                };
                let t = traffic(i, l.ctx.context_id());
                json.push(serde_json::json!({
                    "path": plan.path_name(i), "context_id": l.ctx.context_id(),
                    "name": l.ctx.name(), "connect_ms": ms(l.took),
                    "agent_upload_bytes": l.ctx.agent_upload_bytes(),
                    "link_bytes_down": t.map(|t| t.0), "link_bytes_up": t.map(|t| t.1),
                }));
                let link = match t {
                    Some((down, up)) => format!(", link {} down / {} up", bytes(down), bytes(up)),
                    None => String::new(),
                };
                format!(
                    "context {} {}, connected in {:.1} ms{up}{link}",
                    l.ctx.context_id(),
                    l.ctx.name(),
                    ms(l.took)
                )
            }
            Some(Err(e)) => {
                json.push(serde_json::json!({ "path": plan.path_name(i), "error": e }));
                format!("FAILED: {e}")
            }
            None => "not connected".into(),
        };
        lines.push(format!("{indent}{branch}{}  [{about}]", node.hop));
        let child_indent = format!("{indent}{}", if last { "    " } else { "│   " });
        let ks = kids(Some(i));
        let n = ks.len();
        for (k, j) in ks.into_iter().enumerate().rev() {
            stack.push((j, child_indent.clone(), k + 1 == n));
        }
    }
    let out = std::io::stdout();
    let mut o = out.lock();
    if c.json() {
        for j in json {
            let _ = writeln!(o, "{j}");
        }
    } else {
        for l in lines {
            let _ = writeln!(o, "{l}");
        }
    }
    let reached = fin.results.iter().flatten().filter(|ok| **ok).count();
    eprintln!(
        "mitogen: {} targets: {reached} reached, {} contexts in {:.2}s",
        plan.targets.len(),
        plan.connected().len(),
        fin.took.as_secs_f64()
    );
    Ok(status(reached == plan.targets.len(), fin.interrupted))
}

/// `mitogen master --name NAME [TARGETS]`: connect the targets, then
/// serve them, and whatever attached commands ask for, until stopped.
pub fn master(router: &mitogen::Router, c: &Common, name: &str) -> Result<ExitCode, String> {
    if c.master().is_some() {
        return Err("a master does not attach to another (--master)".into());
    }
    // Fails early, before connecting anything, when the name is bad.
    crate::master::socket(name)?;
    let persist = c.persist()?.filter(|d| !d.is_zero());
    let (targets, opts) = c.resolve_any()?;
    let s = Session {
        router,
        plan: Arc::new(Plan::new(targets)),
        opts,
        forks: c.forks()?,
        quiet: c.quiet(),
        _attached: None,
        keep: true,
        bytes: None,
    };
    let fin = s.run(
        |_, ctx: Result<Context, String>, _| ctx.err(),
        |p, i, err: &Option<String>| {
            if let Some(e) = err {
                let t = s.plan.targets[i].0.name();
                p.suspend(|| eprintln!("mitogen: {t}: [unreachable] {e}"));
            }
            err.is_none()
        },
        |_| {},
    );
    if fin.interrupted {
        return Ok(status(false, true));
    }
    crate::master::serve(router, name, persist, &s.opts, &s.plan)
}

/// How long `master status` and `master stop` wait on a master.
const MASTER_TIMEOUT: Duration = Duration::from_secs(5);

/// `mitogen master status [--name NAME] [--json]`
pub fn master_status(name: Option<&str>, json: bool) -> Result<ExitCode, String> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => crate::master::names()?,
    };
    if names.is_empty() && !json {
        println!("no masters");
    }
    let mut all_up = true;
    for n in names {
        let info = crate::master::attach(&n, MASTER_TIMEOUT).and_then(|a| a.info(MASTER_TIMEOUT));
        all_up &= info.is_ok();
        if json {
            let v = match &info {
                Ok(i) => serde_json::json!({"name": n, "running": true, "info": i}),
                Err(e) => serde_json::json!({"name": n, "running": false, "error": e}),
            };
            println!("{v}");
            continue;
        }
        match info {
            Ok(i) => {
                let life = match (i.persist, i.idle) {
                    (None, _) => "until stopped".to_string(),
                    (Some(p), Some(idle)) => format!(
                        "idle {}, exits after {}",
                        crate::master::show_duration(Duration::from_secs_f64(idle)),
                        crate::master::show_duration(Duration::from_secs_f64(p))
                    ),
                    (Some(p), None) => format!(
                        "in use, exits {} after the last command",
                        crate::master::show_duration(Duration::from_secs_f64(p))
                    ),
                };
                println!(
                    "{n}: pid {}, up {}, {life}, {} attached, holds {} contexts",
                    i.pid,
                    crate::master::show_duration(Duration::from_secs_f64(i.up)),
                    // The asking process itself is not news.
                    i.attached.saturating_sub(1),
                    i.held.len()
                );
                for h in &i.held {
                    println!("  {h}");
                }
            }
            Err(e) => println!("{n}: not running ({e})"),
        }
    }
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `mitogen master stop [--name NAME | --all]`
pub fn master_stop(name: Option<&str>, all: bool) -> Result<ExitCode, String> {
    let names = if all {
        crate::master::names()?
    } else {
        vec![name.unwrap_or("default").to_string()]
    };
    let mut ok = true;
    for n in names {
        let r = crate::master::attach(&n, MASTER_TIMEOUT).and_then(|a| a.stop(MASTER_TIMEOUT));
        match r {
            Ok(()) => {
                // Gone once its socket is: bounded wait.
                let path = crate::master::socket(&n)?;
                let t = Instant::now();
                while path.exists() && t.elapsed() < MASTER_TIMEOUT {
                    std::thread::sleep(Duration::from_millis(20));
                }
                println!("{n}: stopped");
            }
            Err(e) if all => println!("{n}: not running ({e})"),
            Err(e) => {
                eprintln!("mitogen: {e}");
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
