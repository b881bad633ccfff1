//! [`CallSite`]: one place in the code that is tracked.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use dbmetrics_labels::Operation;

/// What a call site tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// A query: operation and table (when known where the site is declared, else per call).
    Query {
        operation: Operation,
        table: Option<&'static str>,
    },
    /// A transaction, by name.
    Transaction { name: &'static str },
}

/// One place in the code that is tracked: a `#[track_query]` function, a `#[track_transaction]`
/// function, or one distinct (operation, table) given to the tracker API.
///
/// The macros declare one `static` per annotated function; a [`crate::QueryMetrics`] can key
/// a cache by [`CallSite::id`], so that after the first call a site records without building
/// labels.
pub struct CallSite {
    kind: SiteKind,
    name: &'static str,
    module: &'static str,
    id: AtomicU32,
}

static NEXT_SITE_ID: AtomicU32 = AtomicU32::new(1);

/// A query site (generated code: `table: None` takes the table from each call).
pub const fn query_site(
    operation: Operation,
    table: Option<&'static str>,
    name: &'static str,
    module: &'static str,
) -> CallSite {
    CallSite::new(SiteKind::Query { operation, table }, name, module)
}

/// A transaction site (generated code).
pub const fn transaction_site(
    transaction: &'static str,
    name: &'static str,
    module: &'static str,
) -> CallSite {
    CallSite::new(SiteKind::Transaction { name: transaction }, name, module)
}

impl CallSite {
    pub(crate) const fn new(kind: SiteKind, name: &'static str, module: &'static str) -> Self {
        Self {
            kind,
            name,
            module,
            id: AtomicU32::new(0),
        }
    }

    /// What this site tracks.
    pub(crate) fn kind(&self) -> SiteKind {
        self.kind
    }

    /// The operation of a query site (`None` for a transaction).
    pub fn operation(&self) -> Option<Operation> {
        match self.kind {
            SiteKind::Query { operation, .. } => Some(operation),
            SiteKind::Transaction { .. } => None,
        }
    }

    /// The transaction name of a transaction site (`None` for a query).
    pub fn transaction(&self) -> Option<&'static str> {
        match self.kind {
            SiteKind::Transaction { name } => Some(name),
            SiteKind::Query { .. } => None,
        }
    }

    /// The function (or tracker method) name, for logs. Never a label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module path of the site, for logs.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// A process-unique, small, dense number for this site, assigned on first use.
    #[inline]
    pub fn id(&self) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        self.assign_id()
    }

    #[cold]
    fn assign_id(&self) -> u32 {
        let fresh = NEXT_SITE_ID.fetch_add(1, Ordering::Relaxed);
        match self
            .id
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(existing) => existing,
        }
    }
}

impl fmt::Debug for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSite")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("module", &self.module)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_are_stable_and_distinct() {
        static A: CallSite = query_site(Operation::Select, Some("t"), "a", "m");
        static B: CallSite = query_site(Operation::Select, Some("t"), "b", "m");
        assert_eq!(A.id(), A.id());
        assert_ne!(A.id(), B.id());
        assert_eq!(A.operation(), Some(Operation::Select));
        assert_eq!(A.transaction(), None);
    }
}
