//! The recording path: what a tracked call is ([`CallSite`]), how it ended ([`Outcome`]), the
//! [`Sample`] a [`QueryMetrics`] receives, and the guard the macros expand into.

pub mod autoref;
mod budget;
pub(crate) mod clock;
mod guard;
mod outcome;
mod sample;
pub(crate) mod site;
#[cfg(feature = "tracing")]
pub(crate) mod span;
pub(crate) mod unfinished;

pub use budget::LabelBudget;
pub(crate) use budget::NameKind;
#[cfg(test)]
pub(crate) use budget::OVERFLOW;
pub use dbmetrics_labels::{Operation, UnknownOperation};
pub use guard::{Body, CallGuard};
pub use outcome::{CallResult, Outcome};
pub use sample::{NoopMetrics, QueryMetrics, Sample};
pub use site::CallSite;

pub(crate) use site::SiteKind;
#[cfg(feature = "tracing")]
pub(crate) use span::{acquire_span, record_error};

/// What only generated code uses: site constructors and the outcome of a returned value.
pub(crate) mod private {
    pub use super::autoref as outcome;
    pub use super::site::{query_site, transaction_site};
}
