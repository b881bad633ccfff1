//! The classes of the enabled drivers' errors, for [`crate::classify::classify`].

/// The class of a driver error found in a `source()` chain, if `error` is one of an enabled
/// driver's types.
pub(crate) fn classify(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    #[cfg(feature = "deadpool")]
    if let Some(class) = super::deadpool::classify_dyn(error) {
        return Some(class);
    }
    #[cfg(any(feature = "deadpool", feature = "bb8"))]
    if let Some(class) = super::postgres::classify_dyn(error) {
        return Some(class);
    }
    #[cfg(feature = "sqlx")]
    if let Some(class) = super::sqlx::classify_dyn(error) {
        return Some(class);
    }
    #[cfg(feature = "bb8")]
    if let Some(class) = super::bb8::classify_dyn(error) {
        return Some(class);
    }
    let _ = error;
    None
}

/// The class of an error whose message is one of an enabled driver's fixed texts (what a
/// `#[error(transparent)]` wrapper shows of a driver error that has no source).
pub(crate) fn classify_message(message: &str) -> Option<&'static str> {
    #[cfg(feature = "deadpool")]
    if let Some(class) = super::deadpool::classify_message(message) {
        return Some(class);
    }
    #[cfg(any(feature = "deadpool", feature = "bb8"))]
    if let Some(class) = super::postgres::classify_message(message) {
        return Some(class);
    }
    #[cfg(feature = "sqlx")]
    if let Some(class) = super::sqlx::classify_message(message) {
        return Some(class);
    }
    #[cfg(feature = "bb8")]
    if let Some(class) = super::bb8::classify_message(message) {
        return Some(class);
    }
    let _ = message;
    None
}
