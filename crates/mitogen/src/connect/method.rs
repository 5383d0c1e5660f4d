//! What a connection method is, to the rest of `connect`: a set of
//! parameters (a "spec") that can start a context from the current one
//! ([`Method::connect_here`]) and can travel to an intermediate for
//! `.via()` (serde, named by [`Method::TAG`]).
//!
//! A method's module implements the trait on its spec and calls [`start`]
//! from its builder's `connect()`; the intermediate finds the spec again by
//! its tag in `registry.rs`, the one list of methods. Neither this module
//! nor `via` names any method, so the methods depend on them and never
//! the other way round.

use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::Core;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// A connection method's parameters.
pub(crate) trait Method: Serialize + DeserializeOwned {
    /// The method's name on the wire (and in `registry.rs`): stable,
    /// unique.
    const TAG: &'static str;

    /// Starts context `id` by this method from this context.
    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context>;
}

/// Starts a context by `method`: from here, or through the intermediate
/// named by `opts.via`. Every builder's `connect` ends here (but fork's,
/// whose hooks cannot travel).
pub(crate) fn start<M: Method>(core: &Arc<Core>, opts: &Options, method: &M) -> Result<Context> {
    opts.validate()?;
    match &opts.via {
        Some(v) => crate::connect::via::connect(core, v, M::TAG, method, opts),
        None => {
            let id = core.allocate_id()?;
            method.connect_here(core, id, opts)
        }
    }
}
