//! [`SiteCache`]: a `DatabaseMetrics`' handles of each call site, indexed by
//! [`CallSite::id`](crate::CallSite::id).

use std::sync::OnceLock;

use super::series::SiteHandles;

/// Lock-free reads; one allocation per chunk of 64 sites on first use.
pub(crate) struct SiteCache {
    chunks: Box<[OnceLock<Chunk>]>,
}

type Chunk = Box<[OnceLock<SiteHandles>]>;

const CHUNK: usize = 64;
const CHUNKS: usize = 256;

impl SiteCache {
    pub(crate) fn new() -> Self {
        Self {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The handles of site `id`, made by `init` on first use; `None` when `id` is beyond what
    /// the cache holds.
    #[inline]
    pub(crate) fn get_or_init(
        &self,
        id: u32,
        init: impl FnOnce() -> SiteHandles,
    ) -> Option<&SiteHandles> {
        let id = id as usize;
        let chunk = self.chunks.get(id / CHUNK)?;
        let slots = chunk.get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        Some(slots[id % CHUNK].get_or_init(init))
    }
}
