//! [`LabelBudget`]: how many distinct names given at run time one service admits as label
//! values (tables, transaction names, function names); the rest record under `_overflow`.
//! Every `DatabaseMetrics` handle of a service shares one budget (the registry of the metrics
//! hands it out).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::intern::intern;

/// The label value of every run-time name beyond the budget.
pub(crate) const OVERFLOW: &str = "_overflow";

/// The kinds of run-time names, each with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameKind {
    Table = 0,
    Transaction = 1,
    Function = 2,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::Table => "table",
            NameKind::Transaction => "transaction",
            NameKind::Function => "function",
        }
    }
}

/// The run-time names one service admits: at most `limit` of each kind, interned once; every
/// further one is [`OVERFLOW`], with one warning per kind naming the first name refused.
#[doc(hidden)]
pub struct LabelBudget {
    /// Tells budgets apart in per-thread caches.
    id: u64,
    /// The service, for the warning.
    service: Box<str>,
    /// Set once more when the first setup of the service comes after `DatabaseMetrics::new`.
    limit: AtomicUsize,
    admitted: RwLock<[HashSet<&'static str>; 3]>,
    warned: [AtomicBool; 3],
}

impl std::fmt::Debug for LabelBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelBudget")
            .field("service", &self.service)
            .field("limit", &self.limit())
            .finish_non_exhaustive()
    }
}

impl LabelBudget {
    /// A budget of `limit` names of each kind for `service`.
    pub(crate) fn new(service: &str, limit: usize) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            service: service.into(),
            limit: AtomicUsize::new(limit),
            admitted: RwLock::new(Default::default()),
            warned: Default::default(),
        }
    }

    /// How many names of each kind it admits.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Admits `limit` names of each kind from now on (names admitted already stay).
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A number no other budget has (never 0).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The label value for `name`: the name itself (interned) while the budget lasts, else
    /// [`OVERFLOW`].
    pub(crate) fn admit(&self, kind: NameKind, name: &str) -> &'static str {
        let set = kind as usize;
        if let Some(admitted) =
            self.admitted.read().unwrap_or_else(PoisonError::into_inner)[set].get(name)
        {
            return admitted;
        }
        let mut admitted = self
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = admitted[set].get(name) {
            return name;
        }
        if admitted[set].len() < self.limit() {
            let name = intern(name);
            admitted[set].insert(name);
            return name;
        }
        drop(admitted);
        if !self.warned[set].swap(true, Ordering::Relaxed) {
            let kind = kind.label();
            tracing::warn!(
                target: "dbmetrics",
                service = &*self.service,
                kind,
                limit = self.limit(),
                first_overflowed = name,
                "more distinct {kind} names given at run time than this service's label limit \
                 ({}): {name:?}, the first over it, and every further new {kind} name record as \
                 \"_overflow\" (DatabaseMetricsBuilder::label_limit); logged once",
                self.limit(),
            );
        }
        OVERFLOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beyond_the_limit_overflow() {
        let budget = LabelBudget::new("svc", 2);
        assert_eq!(budget.admit(NameKind::Table, "a"), "a");
        assert_eq!(budget.admit(NameKind::Table, "b"), "b");
        assert_eq!(budget.admit(NameKind::Table, "c"), OVERFLOW);
        assert_eq!(budget.admit(NameKind::Table, "a"), "a");
        // each kind has its own budget
        assert_eq!(budget.admit(NameKind::Transaction, "c"), "c");
        assert_ne!(LabelBudget::new("svc", 1).id(), budget.id());
    }
}
