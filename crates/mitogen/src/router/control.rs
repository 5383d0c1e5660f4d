//! The control plane: handlers for the reserved handles that keep the tree
//! consistent (`ADD_ROUTE`, `DEL_ROUTE`, `ALLOCATE_ID`, `SHUTDOWN`,
//! `FORWARD_LOG`).
//!
//! Routes are announced upwards: when a context gains a child it tells its
//! parent, which records that the child is reachable through the announcing
//! stream and tells its own parent, up to the master. Losses travel the same
//! way, so a waiter anywhere above a dead context gets a dead message.

use super::table::{ID_BLOCK, MAX_BLOCKS_PER_BRANCH};
use super::Core;
use crate::error::Result;
use crate::frame::handle;
use crate::latch::Latch;
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
pub(crate) struct RouteNote {
    id: u32,
    name: String,
}

impl RouteNote {
    #[cfg(test)]
    pub(crate) fn new(id: u32, name: &str) -> RouteNote {
        RouteNote {
            id,
            name: name.to_string(),
        }
    }
}

/// Is `src` a descendant of `core` (reachable through a child stream)?
fn from_descendant(core: &Core, src: u32) -> bool {
    src != core.id
        && !core.parent_ids.contains(&src)
        && core.table.stream_for(src).is_some_and(|s| !s.is_parent)
}

/// Is `src` a direct child of `core` (the peer of one of its streams)?
/// Only a direct child may announce or withdraw routes: a grandchild must
/// not be able to cut its parent off.
fn from_immediate_child(core: &Core, src: u32) -> bool {
    from_descendant(core, src)
        && core
            .table
            .stream_for(src)
            .is_some_and(|s| s.remote_id == src)
}

/// Is `auth` one of `core`'s parents?
fn from_parent(core: &Core, auth: u32) -> bool {
    core.parent_ids.contains(&auth)
}

pub(crate) fn install(core: &Arc<Core>) {
    let weak = Arc::downgrade(core);
    let w = weak.clone();
    core.add_handler_at(
        handle::ADD_ROUTE,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            let Ok(note) = msg.decode::<RouteNote>() else {
                return;
            };
            if !from_immediate_child(&core, msg.src_id)
                || note.id == core.id
                || core.parent_ids.contains(&note.id)
            {
                tracing::warn!(
                    "mitogen: refused route announcement {} from {}",
                    note.id,
                    msg.src_id
                );
                return;
            }
            let Some(via) = core.table.stream_for(msg.src_id) else {
                return;
            };
            // The master knows which branch each id was handed out for: an
            // announcement from any other branch is a hijack attempt.
            if core.id == crate::identity::MASTER_ID && !core.table.allocated_behind(note.id, &via)
            {
                tracing::warn!(
                    "mitogen: refused route to {} from {}: not allocated behind it",
                    note.id,
                    msg.src_id
                );
                return;
            }
            if core
                .table
                .stream_for(note.id)
                .is_some_and(|s| !s.is_parent && s.id != via.id)
            {
                tracing::warn!(
                    "mitogen: refused route to {} from {}: already routed elsewhere",
                    note.id,
                    msg.src_id
                );
                return;
            }
            core.table.add_route(note.id, &via);
            core.table.set_name(note.id, &note.name);
            announce_added(&core, note.id, &note.name);
        }),
        true,
        None,
        None,
    );
    let w = weak.clone();
    core.add_handler_at(
        handle::DEL_ROUTE,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            let Ok((id, why)) = msg.decode::<(u32, String)>() else {
                return;
            };
            // From a parent: a context that sent messages down here is
            // gone; whoever waits on it below must hear (egress ids).
            if from_parent(&core, msg.auth_id) && msg.src_id == msg.auth_id {
                if id != core.id && !core.parent_ids.contains(&id) {
                    core.forget(&[id], &why);
                    announce_lost_down(&core, &[id], &why, None);
                }
                return;
            }
            let (Some(via), Some(route)) =
                (core.table.stream_for(msg.src_id), core.table.stream_for(id))
            else {
                return;
            };
            // A child withdraws its descendants, never itself (its link
            // says that) and never a route through another stream.
            if !from_immediate_child(&core, msg.src_id) || id == msg.src_id || via.id != route.id {
                tracing::warn!("mitogen: refused route removal {id} from {}", msg.src_id);
                return;
            }
            core.forget(&[id], &why);
            announce_lost_why(&core, &[id], &why);
            announce_lost_down(&core, &[id], &why, Some(via.id));
        }),
        true,
        None,
        None,
    );
    let w = weak.clone();
    core.add_handler_at(
        handle::ALLOCATE_ID,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            if core.id != crate::identity::MASTER_ID || !from_descendant(&core, msg.src_id) {
                core.bounce(&msg, crate::error::reasons::REFUSED);
                return;
            }
            if let Some(branch) = core.table.stream_for(msg.src_id) {
                match core.table.allocate_block_behind(&branch, ID_BLOCK) {
                    Some(block) => {
                        let _ = msg.reply(&(block.start, block.end));
                    }
                    None => {
                        tracing::warn!(
                            "mitogen: refused ALLOCATE_ID from {}: its branch ({}) holds \
                             {MAX_BLOCKS_PER_BRANCH} blocks of ids already",
                            core.table.context_name(msg.src_id),
                            branch.name
                        );
                        core.bounce(
                            &msg,
                            &format!(
                                "{}: too many context ids handed out behind {}",
                                crate::error::reasons::REFUSED,
                                branch.name
                            ),
                        );
                    }
                }
            }
        }),
        true,
        None,
        None,
    );
    let w = weak.clone();
    core.add_handler_at(
        handle::SHUTDOWN,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            if from_parent(&core, msg.auth_id) {
                tracing::debug!("mitogen: shutdown requested by {}", msg.auth_id);
                core.broker.shutdown();
            } else {
                tracing::warn!("mitogen: refused SHUTDOWN from {}", msg.auth_id);
            }
        }),
        true,
        None,
        None,
    );
    let w = weak.clone();
    core.add_handler_at(
        handle::DISCONNECT,
        Box::new(move |msg| {
            // Delivered here: this context is the target, or its parent.
            let Some(core) = w.upgrade() else { return };
            core.bounce(
                &msg,
                &format!(
                    "{}: a context cannot disconnect itself or its parent",
                    crate::error::reasons::REFUSED
                ),
            );
        }),
        true,
        None,
        None,
    );
    let w = weak.clone();
    core.add_handler_at(
        handle::DETACHING,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            if !from_immediate_child(&core, msg.src_id) {
                tracing::warn!("mitogen: refused DETACHING from {}", msg.src_id);
                return;
            }
            if let Some(s) = core.table.route(msg.src_id) {
                tracing::debug!("mitogen: {} detaches", s.name);
                s.detached.store(true, std::sync::atomic::Ordering::Release);
            }
            let _ = msg.reply(&());
        }),
        true,
        None,
        None,
    );
    let w = weak;
    core.add_handler_at(
        handle::FORWARD_LOG,
        Box::new(move |msg| {
            let Some(core) = w.upgrade() else { return };
            if from_descendant(&core, msg.src_id) {
                let name = core.table.context_name(msg.src_id);
                crate::logging::record::emit_forwarded(&name, &msg);
            }
        }),
        true,
        None,
        None,
    );
}

/// Tells the parent (if any) that `id` is now reachable through us.
pub(crate) fn announce_added(core: &Arc<Core>, id: u32, name: &str) {
    if let Some(parent) = core.parent_ids.first() {
        let note = RouteNote {
            id,
            name: name.to_string(),
        };
        if let Ok(m) = Message::encode(&note) {
            let _ = core.send(m.to(*parent, handle::ADD_ROUTE));
        }
    }
}

/// Tells the parent (if any) that `lost` are gone.
pub(crate) fn announce_lost(core: &Arc<Core>, lost: &[u32]) {
    announce_lost_why(core, lost, "disconnected");
}

fn announce_lost_why(core: &Arc<Core>, lost: &[u32], why: &str) {
    let Some(parent) = core.parent_ids.first() else {
        return;
    };
    for id in lost {
        let reason = format!("{} {why}", core.table.context_name(*id));
        if let Ok(m) = Message::encode(&(*id, reason)) {
            let _ = core.send(m.to(*parent, handle::DEL_ROUTE));
        }
    }
}

/// Tells each child link that carried messages from one of `lost` (its
/// egress ids) that it is gone, except the link `skip` the news came
/// from: a context waiting on a sibling or a cousin learns of its death
/// at once, not only its ancestors.
pub(crate) fn announce_lost_down(core: &Arc<Core>, lost: &[u32], reason: &str, skip: Option<u64>) {
    for s in core.table.child_streams() {
        if Some(s.id) == skip {
            continue;
        }
        for id in lost.iter().filter(|id| s.carried_from(**id)) {
            if let Ok(m) = Message::encode(&(*id, reason)) {
                let _ = core.send(m.to(s.remote_id, handle::DEL_ROUTE));
            }
        }
    }
}

/// Asks the master for a block of fresh context ids (children only;
/// blocks the caller for one round trip).
pub(crate) fn request_ids(core: &Arc<Core>) -> Result<std::ops::Range<u32>> {
    crate::broker::refuse_wait_on_broker("a new context id")?;
    let latch = Latch::new();
    let h = core.add_latch_handler(latch.clone(), Some(crate::identity::MASTER_ID));
    let mut m = Message::encode(&())?.to(crate::identity::MASTER_ID, handle::ALLOCATE_ID);
    m.reply_to = h;
    core.send(m)?;
    let reply = latch.get(Some(Duration::from_secs(30)));
    core.del_handler(h);
    let (start, end): (u32, u32) = reply?.decode()?;
    Ok(start..end.max(start))
}
