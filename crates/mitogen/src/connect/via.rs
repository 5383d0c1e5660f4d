//! Starting a context from another one (`.via(&ctx)`): the intermediate
//! runs the connection itself, with its own copy of the agent, and
//! announces the new route up the tree before it answers.

use super::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Connection methods that can be relayed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Method {
    /// `local()` in the intermediate.
    Local,
    /// `fork()` of the intermediate.
    Fork,
}

/// What the intermediate needs to start the context.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ViaSpec {
    method: Method,
    id: u32,
    opts: Options,
}

/// Runs in the intermediate: starts context `spec.id`, returns its name.
#[crate::remote]
pub(crate) fn connect_via(router: &Router, spec: ViaSpec) -> Result<String> {
    let core = router.core();
    let ctx = match spec.method {
        Method::Local => {
            super::local::connect_here(core, spec.id, spec.opts.remote_name.clone(), &spec.opts)?
        }
        Method::Fork => super::fork::fork_here(core, spec.id, &spec.opts, None, None)?,
    };
    Ok(ctx.name().to_string())
}

/// Asks `via` to start a context and returns it.
pub(crate) fn connect(
    core: &Arc<Core>,
    via: &Context,
    method: Method,
    opts: &Options,
) -> Result<Context> {
    let id = match core.stream_for(via.context_id()) {
        Some(branch) if core.id == crate::identity::MASTER_ID => core.allocate_id_behind(&branch),
        _ => core.allocate_id()?,
    };
    let mut opts = opts.clone();
    opts.via = None;
    let spec = ViaSpec { method, id, opts };
    let name: String = via.call::<connect_via>((spec,))?;
    let full = format!("{}.{name}", via.name());
    core.set_name(id, &full);
    Ok(Context::new(core.clone(), id, &full))
}
