//! The closed label vocabularies of [dbmetrics](https://docs.rs/dbmetrics), in one place.
//!
//! The macros check an operation written in `#[track_query(...)]` against [`Operation::ALL`] at
//! compile time, and the runtime records [`Operation::as_str`] as the `operation` label: both
//! read this one list. Users reach [`Operation`] as `dbmetrics::Operation`.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::fmt;
use std::str::FromStr;

/// Declares [`Operation`] and everything derived from its one list.
macro_rules! operations {
    ($($(#[$doc:meta])* $variant:ident => $label:literal, $sql:literal;)+) => {
        /// The operation of a tracked query: a closed set, checked at compile time by the macros.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Operation {
            $($(#[$doc])* $variant,)+
        }

        impl Operation {
            /// Every operation, in declaration order (`Operation::ALL[op as usize] == op`).
            pub const ALL: [Operation; Operation::COUNT] = [$(Operation::$variant),+];

            /// How many operations there are.
            pub const COUNT: usize = [$($label),+].len();

            /// The label value (`"select"`, `"insert"`, ...).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Operation::$variant => $label,)+
                }
            }

            /// The variant's name in Rust (`"Select"`, ...), for generated code.
            pub const fn variant_name(self) -> &'static str {
                match self {
                    $(Operation::$variant => stringify!($variant),)+
                }
            }

            /// The operation whose label is `label`, if any.
            ///
            /// Labels are at most 7 bytes, so this packs `label` and its length into one
            /// `u64` and compares integers: a handful of instructions on the tracker's hot
            /// path instead of one string comparison per operation.
            #[inline]
            pub fn from_label(label: &str) -> Option<Operation> {
                let key = pack(label)?;
                $(if key == const { match pack($label) { Some(k) => k, None => panic!("an operation label longer than 7 bytes") } } {
                    return Some(Operation::$variant);
                })+
                None
            }

            /// The SQL keyword OpenTelemetry calls `db.operation.name` (`"SELECT"`, ...).
            pub const fn sql_keyword(self) -> &'static str {
                match self {
                    $(Operation::$variant => $sql,)+
                }
            }
        }
    };
}

/// `label`'s bytes and its length in one integer, for labels of at most 7 bytes.
#[inline]
const fn pack(label: &str) -> Option<u64> {
    let bytes = label.as_bytes();
    if bytes.len() > 7 {
        return None;
    }
    let mut key = (bytes.len() as u64) << 56;
    let mut i = 0;
    while i < bytes.len() {
        key |= (bytes[i] as u64) << (8 * i);
        i += 1;
    }
    Some(key)
}

operations! {
    /// `SELECT`
    Select => "select", "SELECT";
    /// `INSERT`
    Insert => "insert", "INSERT";
    /// `UPDATE`
    Update => "update", "UPDATE";
    /// `DELETE`
    Delete => "delete", "DELETE";
    /// `INSERT ... ON CONFLICT` and friends
    Upsert => "upsert", "UPSERT";
    /// `COPY`
    Copy => "copy", "COPY";
    /// `CALL` of a procedure or a function call
    Call => "call", "CALL";
    /// schema changes
    Ddl => "ddl", "DDL";
    /// anything else
    Other => "other", "OTHER";
}

impl Operation {
    /// Every label value, comma separated: `"select, insert, ..., other"` (for messages).
    pub fn list() -> String {
        Operation::ALL.map(Operation::as_str).join(", ")
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an [`Operation`] from a string that is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownOperation(pub String);

impl fmt::Display for UnknownOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown operation {:?}: expected one of {}",
            self.0,
            Operation::list()
        )
    }
}

impl std::error::Error for UnknownOperation {}

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::from_label(s).ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
            assert_eq!(op.as_str().parse::<Operation>().unwrap(), op);
            assert_eq!(op.variant_name().to_ascii_lowercase(), op.as_str());
        }
        for near in [
            "selec", "select\0", "selects", "SELECT", "", "other_", "\0select",
        ] {
            assert_eq!(Operation::from_label(near), None, "{near:?}");
        }
        let err = "selct".parse::<Operation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown operation \"selct\": expected one of select, insert, update, delete, upsert, copy, call, ddl, other"
        );
    }
}
