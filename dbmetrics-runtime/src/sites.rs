//! Call sites for names given at run time (the tracker, the middleware, `transaction::run`):
//! one static [`CallSite`] per distinct (operation, table, function) or transaction name,
//! interned for the process once the service's [`LabelBudget`] admitted its names. A small
//! per-thread cache answers callers that pass the same names again without locks or hashing.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::intern::intern;
use crate::record::{CallSite, LabelBudget, NameKind, Operation, SiteKind};

/// Module path of every run-time site, for logs.
const MODULE: &str = "dbmetrics::tracker";
/// Function name of transaction sites, for logs.
const TRANSACTION_FUNCTION: &str = "track_transaction";

type Key = (Option<Operation>, &'static str, &'static str);

static SITES: RwLock<Option<HashMap<Key, &'static CallSite>>> = RwLock::new(None);

const RECENT_SLOTS: usize = 16;

thread_local! {
    /// Recently resolved sites, with the id of the budget that admitted them (0: none).
    static RECENT: [Cell<(u64, Option<&'static CallSite>)>; RECENT_SLOTS] =
        const { [const { Cell::new((0, None)) }; RECENT_SLOTS] };
}

/// Who named the function of a query site.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Function<'a> {
    /// dbmetrics itself (`"track_query"`): bounded by our code, never admitted against the
    /// budget, and recognised by address in the per-thread cache.
    Ours(&'static str),
    /// The caller (a middleware method name): admitted against the budget.
    Given(&'a str),
}

impl Function<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Function::Ours(name) => name,
            Function::Given(name) => name,
        }
    }
}

/// `a == b`, answered by address and length first (an interned name compared with itself).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.as_ptr() == b.as_ptr() || a == b)
}

/// The site of `operation` on `table` called from `function`.
#[inline]
pub(crate) fn query_site(
    budget: Option<&LabelBudget>,
    operation: Operation,
    table: &str,
    function: Function<'_>,
) -> &'static CallSite {
    let id = budget.map_or(0, LabelBudget::id);
    let name = function.as_str();
    let slot = (table.as_ptr() as usize >> 3)
        .wrapping_add(name.as_ptr() as usize >> 3)
        .wrapping_add(table.len() * 31 + operation as usize)
        % RECENT_SLOTS;
    if let (cached_id, Some(site)) = RECENT.with(|recent| recent[slot].get())
        && cached_id == id
        && same(site.name(), name)
        && matches!(site.kind(), SiteKind::Query { operation: o, table: Some(t) } if o == operation && same(t, table))
    {
        return site;
    }
    let table = admit(budget, NameKind::Table, table);
    let function = match function {
        Function::Ours(name) => name,
        Function::Given(name) => admit(budget, NameKind::Function, name),
    };
    let site = interned(Some(operation), table, function);
    RECENT.with(|recent| recent[slot].set((id, Some(site))));
    site
}

/// The site of the transaction `name`.
pub(crate) fn transaction_site(budget: Option<&LabelBudget>, name: &str) -> &'static CallSite {
    let id = budget.map_or(0, LabelBudget::id);
    let slot = ((name.as_ptr() as usize >> 3).wrapping_add(name.len() * 17)) % RECENT_SLOTS;
    if let (cached_id, Some(site)) = RECENT.with(|recent| recent[slot].get())
        && cached_id == id
        && site.transaction().is_some_and(|t| same(t, name))
    {
        return site;
    }
    let name = admit(budget, NameKind::Transaction, name);
    let site = interned(None, name, TRANSACTION_FUNCTION);
    RECENT.with(|recent| recent[slot].set((id, Some(site))));
    site
}

fn admit(budget: Option<&LabelBudget>, kind: NameKind, name: &str) -> &'static str {
    match budget {
        Some(budget) => budget.admit(kind, name),
        None => intern(name),
    }
}

/// The one site of `key`'s names (interned already).
fn interned(
    operation: Option<Operation>,
    table: &'static str,
    function: &'static str,
) -> &'static CallSite {
    let key = (operation, table, function);
    if let Some(site) = SITES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|sites| sites.get(&key))
    {
        return site;
    }
    let mut sites = SITES.write().unwrap_or_else(PoisonError::into_inner);
    sites
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| {
            let kind = match operation {
                Some(operation) => SiteKind::Query {
                    operation,
                    table: Some(table),
                },
                None => SiteKind::Transaction { name: table },
            };
            Box::leak(Box::new(CallSite::new(kind, function, MODULE)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OVERFLOW;

    fn site_table(site: &CallSite) -> &'static str {
        match site.kind() {
            SiteKind::Query { table: Some(t), .. } => t,
            other => panic!("not a query site with a table: {other:?}"),
        }
    }

    #[test]
    fn the_per_thread_cache_never_answers_with_another_site() {
        let tables: Vec<String> = (0..100).map(|i| format!("cache_t{i}")).collect();
        for _ in 0..3 {
            for (i, table) in tables.iter().enumerate() {
                let op = Operation::ALL[i % Operation::ALL.len()];
                let function = if i % 2 == 0 { "even" } else { "odd" };
                let site = query_site(None, op, table, Function::Given(function));
                assert_eq!(site.operation(), Some(op));
                assert_eq!(site_table(site), table);
                assert_eq!(site.name(), function);
            }
        }
    }

    #[test]
    fn sites_are_interned() {
        let a = query_site(None, Operation::Select, "t1", Function::Ours("f")) as *const CallSite;
        let b = query_site(
            None,
            Operation::Select,
            &String::from("t1"),
            Function::Given(&String::from("f")),
        ) as *const CallSite;
        let c = query_site(None, Operation::Insert, "t1", Function::Ours("f")) as *const CallSite;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            transaction_site(None, "x") as *const CallSite,
            transaction_site(None, &String::from("x")) as *const CallSite
        );
    }

    #[test]
    fn a_full_budget_overflows_even_names_another_budget_admitted() {
        let roomy = LabelBudget::new("svc", 10);
        let full = LabelBudget::new("svc", 1);
        assert_eq!(
            site_table(query_site(
                Some(&full),
                Operation::Select,
                "first",
                Function::Ours("f")
            )),
            "first"
        );
        // admitted (and cached on this thread) through `roomy`...
        let shared = query_site(
            Some(&roomy),
            Operation::Select,
            "second",
            Function::Ours("f"),
        );
        assert_eq!(site_table(shared), "second");
        // ...but beyond `full`'s limit
        let over = query_site(
            Some(&full),
            Operation::Select,
            "second",
            Function::Ours("f"),
        );
        assert_eq!(site_table(over), OVERFLOW);
        assert_eq!(
            transaction_site(Some(&full), "tx_a").transaction(),
            Some("tx_a")
        );
        assert_eq!(
            transaction_site(Some(&full), "tx_b").transaction(),
            Some(OVERFLOW)
        );
    }
}
