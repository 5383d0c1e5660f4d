//! The routing table: which link leads to which context, the links this
//! router holds, the names it knows, and (in the master) which ids it
//! handed out behind which branch. Only state and lookups live here; what
//! a change means (waiters failed, the news passed on) is `links.rs`.

use crate::link::Stream;
use crate::sync::{lock, IdHash};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where messages go from this context.
pub(crate) struct Table {
    /// The routes and the parent link, under one lock: a lookup that
    /// falls back to the parent (most of a child's) takes it once.
    routes: RwLock<Routes>,
    /// Every attached link, by link id.
    streams: Mutex<HashMap<u64, Arc<Stream>>>,
    names: Mutex<HashMap<u32, String>>,
    /// Master only: the next context id to hand out.
    next_context_id: AtomicU32,
    /// Master only: the id ranges handed out behind each link (branch),
    /// forgotten with the branch.
    allocated: Mutex<HashMap<u64, Vec<std::ops::Range<u32>>>>,
}

/// Where a context's messages go.
#[derive(Default)]
struct Routes {
    /// Context id → the link towards it (children and their descendants).
    by_id: HashMap<u32, Arc<Stream>, IdHash>,
    /// The link towards the parent, in a child: the default route.
    parent: Option<Arc<Stream>>,
}

/// Ids a child gets per `ALLOCATE_ID`: one round trip per block.
pub(crate) const ID_BLOCK: u32 = 64;

/// Most id blocks one branch may hold: a child that floods allocations is
/// refused, not allowed to grow the master or use up the id space.
pub(crate) const MAX_BLOCKS_PER_BRANCH: usize = 4096;

impl Default for Table {
    fn default() -> Table {
        Table {
            routes: RwLock::default(),
            streams: Mutex::default(),
            names: Mutex::default(),
            next_context_id: AtomicU32::new(1),
            allocated: Mutex::default(),
        }
    }
}

impl Table {
    /// `context "name" (id N)`, or `context id N` for an unknown id.
    pub(crate) fn context_name(&self, id: u32) -> String {
        match lock(&self.names).get(&id) {
            Some(n) => format!("context {n:?} (id {id})"),
            None => format!("context id {id}"),
        }
    }

    pub(crate) fn name_of(&self, id: u32) -> Option<String> {
        lock(&self.names).get(&id).cloned()
    }

    pub(crate) fn set_name(&self, id: u32, name: &str) {
        lock(&self.names).insert(id, name.to_string());
    }

    /// The link leading towards `id`: a route, or else the parent.
    pub(crate) fn stream_for(&self, id: u32) -> Option<Arc<Stream>> {
        let r = read(&self.routes);
        r.by_id.get(&id).or(r.parent.as_ref()).cloned()
    }

    /// Whether a link leads towards `id` ([`Table::stream_for`] without
    /// taking a reference to it: checked on every call).
    pub(crate) fn reaches(&self, id: u32) -> bool {
        let r = read(&self.routes);
        r.parent.is_some() || r.by_id.contains_key(&id)
    }

    /// The link of a route to `id`, not falling back to the parent.
    pub(crate) fn route(&self, id: u32) -> Option<Arc<Stream>> {
        read(&self.routes).by_id.get(&id).cloned()
    }

    /// The id of the link a route to `id` takes ([`Table::route`] without
    /// taking a reference to it: checked on every message from a child).
    pub(crate) fn route_link(&self, id: u32) -> Option<u64> {
        read(&self.routes).by_id.get(&id).map(|s| s.id)
    }

    pub(crate) fn add_route(&self, id: u32, stream: &Arc<Stream>) {
        write(&self.routes).by_id.insert(id, stream.clone());
    }

    /// Forgets the routes to `ids` (their names go once their loss is
    /// announced: [`Table::forget_names_of`]).
    pub(crate) fn forget_routes(&self, ids: &[u32]) {
        write(&self.routes).by_id.retain(|id, _| !ids.contains(id));
    }

    /// The link to the parent, in a child.
    pub(crate) fn parent_stream(&self) -> Option<Arc<Stream>> {
        read(&self.routes).parent.clone()
    }

    /// Every link held, the parent's too.
    pub(crate) fn all_streams(&self) -> Vec<Arc<Stream>> {
        lock(&self.streams).values().cloned().collect()
    }

    /// Links to children.
    pub(crate) fn child_streams(&self) -> Vec<Arc<Stream>> {
        lock(&self.streams)
            .values()
            .filter(|s| !s.is_parent)
            .cloned()
            .collect()
    }

    /// Holds `stream`: as the parent link, or as a child's with a route to
    /// it.
    pub(crate) fn insert(&self, stream: &Arc<Stream>) {
        if stream.is_parent {
            write(&self.routes).parent = Some(stream.clone());
        } else {
            self.add_route(stream.remote_id, stream);
            self.set_name(stream.remote_id, &stream.name);
        }
        lock(&self.streams).insert(stream.id, stream.clone());
    }

    /// `true` while `stream` is held (not yet removed).
    pub(crate) fn holds(&self, stream: &Stream) -> bool {
        lock(&self.streams).contains_key(&stream.id)
    }

    /// Drops `s` and every route through it (and, in the master, the ids
    /// handed out behind it). Returns the ids those routes led to, and
    /// whether `s` was the parent link. Names are kept until the lost ids
    /// are announced ([`Table::forget_names_of`]).
    pub(crate) fn remove(&self, s: &Stream) -> (Vec<u32>, bool) {
        lock(&self.streams).remove(&s.id);
        lock(&self.allocated).remove(&s.id);
        let mut lost = Vec::new();
        let mut r = write(&self.routes);
        r.by_id.retain(|id, r| {
            let keep = r.id != s.id;
            if !keep {
                lost.push(*id);
            }
            keep
        });
        let was_parent = s.is_parent && r.parent.as_ref().is_some_and(|p| p.id == s.id);
        if was_parent {
            r.parent = None;
        }
        (lost, was_parent)
    }

    /// Empties the table (the broker is exiting); returns the links held.
    pub(crate) fn clear(&self) -> Vec<Arc<Stream>> {
        *write(&self.routes) = Routes::default();
        lock(&self.streams).drain().map(|(_, s)| s).collect()
    }

    /// Master only: a fresh context id.
    pub(crate) fn allocate(&self) -> u32 {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The names of `ids`, lost and announced, are not needed any more.
    pub(crate) fn forget_names_of(&self, ids: &[u32]) {
        let mut names = lock(&self.names);
        for id in ids {
            names.remove(id);
        }
    }

    /// Master only: a fresh id for a context that will appear behind
    /// `branch` (the link towards the context starting it). Only that
    /// branch may later announce a route to it (`ADD_ROUTE`).
    pub(crate) fn allocate_behind(&self, branch: &Stream) -> Option<u32> {
        self.allocate_block_behind(branch, 1).map(|r| r.start)
    }

    /// Master only: `n` fresh ids behind `branch`, or `None` when the
    /// branch already holds [`MAX_BLOCKS_PER_BRANCH`] blocks.
    pub(crate) fn allocate_block_behind(
        &self,
        branch: &Stream,
        n: u32,
    ) -> Option<std::ops::Range<u32>> {
        let mut allocated = lock(&self.allocated);
        let blocks = allocated.entry(branch.id).or_default();
        if blocks.len() >= MAX_BLOCKS_PER_BRANCH {
            return None;
        }
        let start = self.next_context_id.fetch_add(n, Ordering::Relaxed);
        let range = start..start.saturating_add(n);
        blocks.push(range.clone());
        Some(range)
    }

    /// Master only: was `id` handed out for a context behind `branch`?
    pub(crate) fn allocated_behind(&self, id: u32, branch: &Stream) -> bool {
        lock(&self.allocated)
            .get(&branch.id)
            .is_some_and(|blocks| blocks.iter().any(|r| r.contains(&id)))
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    fn link(remote: u32) -> (Arc<Stream>, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let s = Stream::new(
            "peer".into(),
            remote,
            false,
            OwnedFd::from(a),
            None,
            1 << 20,
            None,
        )
        .expect("stream");
        (Arc::new(s), b)
    }

    #[test]
    fn a_branch_that_goes_takes_its_ids_and_names_along() {
        let t = Table::default();
        let (branch, _peer) = link(1);
        t.insert(&branch);
        let block = t.allocate_block_behind(&branch, ID_BLOCK).expect("a block");
        assert_eq!(block.len(), ID_BLOCK as usize);
        let inner = block.start + 3;
        assert!(t.allocated_behind(inner, &branch));
        t.add_route(inner, &branch);
        t.set_name(inner, "inner");
        let (lost, was_parent) = t.remove(&branch);
        assert!(!was_parent);
        assert!(lost.contains(&inner) && lost.contains(&1), "{lost:?}");
        t.forget_names_of(&lost);
        assert!(
            !t.allocated_behind(inner, &branch),
            "ids kept for a gone branch"
        );
        assert_eq!(t.name_of(inner), None);
        assert!(lock(&t.allocated).is_empty() && lock(&t.names).is_empty());
    }

    #[test]
    fn a_branch_cannot_take_blocks_without_bound() {
        let t = Table::default();
        let (branch, _peer) = link(1);
        t.insert(&branch);
        for _ in 0..MAX_BLOCKS_PER_BRANCH {
            assert!(t.allocate_block_behind(&branch, ID_BLOCK).is_some());
        }
        assert!(t.allocate_block_behind(&branch, ID_BLOCK).is_none());
        let (other, _peer2) = link(2);
        assert!(
            t.allocate_behind(&other).is_some(),
            "another branch is not refused"
        );
    }
}
