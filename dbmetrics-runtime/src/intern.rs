//! The one interner of label values given at run time (pool labels, tracker tables, transaction
//! names, function names): each distinct value is allocated once and lives as long as the
//! process, so that the recording path holds `&'static str` and never counts references.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// The interned copy of `value`.
pub(crate) fn intern(value: &str) -> &'static str {
    static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let set = interned.get_or_insert_with(HashSet::new);
    if let Some(existing) = set.get(value) {
        return existing;
    }
    let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_value() {
        let a = intern("intern_test_a");
        let b = intern(&String::from("intern_test_a"));
        assert!(std::ptr::eq(a, b));
        assert_ne!(intern("intern_test_b"), a);
    }
}
