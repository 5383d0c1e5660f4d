//! The routing table: which link leads to which context, the links this
//! router holds, the names it knows, and (in the master) which ids it
//! handed out behind which branch. Only state and lookups live here; what
//! a change means (waiters failed, the news passed on) is `links.rs`.

use crate::link::Stream;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where messages go from this context.
pub(crate) struct Table {
    /// Context id → the link towards it (children and their descendants).
    routes: RwLock<HashMap<u32, Arc<Stream>>>,
    /// The link towards the parent, in a child: the default route.
    parent: RwLock<Option<Arc<Stream>>>,
    /// Every attached link, by link id.
    streams: Mutex<HashMap<u64, Arc<Stream>>>,
    names: Mutex<HashMap<u32, String>>,
    /// Master only: the next context id to hand out.
    next_context_id: AtomicU32,
    /// Master only: id → the link (branch) it was allocated behind.
    allocated: Mutex<HashMap<u32, u64>>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            routes: RwLock::default(),
            parent: RwLock::default(),
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
        if let Some(s) = read(&self.routes).get(&id) {
            return Some(s.clone());
        }
        self.parent_stream()
    }

    /// The link of a route to `id`, not falling back to the parent.
    pub(crate) fn route(&self, id: u32) -> Option<Arc<Stream>> {
        read(&self.routes).get(&id).cloned()
    }

    pub(crate) fn add_route(&self, id: u32, stream: &Arc<Stream>) {
        write(&self.routes).insert(id, stream.clone());
    }

    /// Forgets the routes to `ids`.
    pub(crate) fn forget_routes(&self, ids: &[u32]) {
        write(&self.routes).retain(|id, _| !ids.contains(id));
    }

    /// The link to the parent, in a child.
    pub(crate) fn parent_stream(&self) -> Option<Arc<Stream>> {
        read(&self.parent).clone()
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
            *write(&self.parent) = Some(stream.clone());
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

    /// Drops `s` and every route through it. Returns the ids those routes
    /// led to, and whether `s` was the parent link.
    pub(crate) fn remove(&self, s: &Stream) -> (Vec<u32>, bool) {
        lock(&self.streams).remove(&s.id);
        let mut lost = Vec::new();
        write(&self.routes).retain(|id, r| {
            let keep = r.id != s.id;
            if !keep {
                lost.push(*id);
            }
            keep
        });
        let was_parent = s.is_parent && {
            let mut p = write(&self.parent);
            let was = p.as_ref().is_some_and(|p| p.id == s.id);
            if was {
                *p = None;
            }
            was
        };
        (lost, was_parent)
    }

    /// Empties the table (the broker is exiting); returns the links held.
    pub(crate) fn clear(&self) -> Vec<Arc<Stream>> {
        write(&self.routes).clear();
        *write(&self.parent) = None;
        lock(&self.streams).drain().map(|(_, s)| s).collect()
    }

    /// Master only: a fresh context id.
    pub(crate) fn allocate(&self) -> u32 {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Master only: a fresh id for a context that will appear behind
    /// `branch` (the link towards the context starting it). Only that
    /// branch may later announce a route to it (`ADD_ROUTE`).
    pub(crate) fn allocate_behind(&self, branch: &Stream) -> u32 {
        let id = self.allocate();
        lock(&self.allocated).insert(id, branch.id);
        id
    }

    /// Master only: was `id` handed out for a context behind `branch`?
    pub(crate) fn allocated_behind(&self, id: u32, branch: &Stream) -> bool {
        lock(&self.allocated).get(&id) == Some(&branch.id)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
