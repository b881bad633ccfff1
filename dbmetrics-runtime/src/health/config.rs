//! [`HealthConfig`]: timeouts and thresholds of the health checks, and their defaults.

use std::time::Duration;

use crate::error::Error;

/// The error class of a check that did not finish before the deadline
/// ([`HealthConfig::timeout`]): typically a server or network that accepts TCP and never
/// answers. Health only; the error counter records such calls as `result="cancelled"`.
pub const TIMEOUT: &str = "timeout";

/// Default bound of every health call: 800 ms, below Kubernetes' default probe timeout
/// (`timeoutSeconds: 1`), so that a probe gets the JSON answer (503 and `"error": "timeout"`)
/// rather than timing out itself.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);
/// The longest `timeout` a checker accepts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `connectivity` threshold: acquiring a connection plus `SELECT 1` taking 250 ms or
/// more is `degraded` (under a third of [`DEFAULT_TIMEOUT`]).
pub const DEFAULT_SLOW_CONNECTIVITY: Duration = Duration::from_millis(250);
/// Default `query_performance` threshold of the simple query (`SELECT 1`): 125 ms.
pub const DEFAULT_SLOW_SIMPLE_QUERY: Duration = Duration::from_millis(125);
/// Default `query_performance` threshold of the catalog query: 400 ms (half of
/// [`DEFAULT_TIMEOUT`], so that a slow catalog reads `degraded` before the deadline makes it
/// `unhealthy`).
pub const DEFAULT_SLOW_COMPLEX_QUERY: Duration = Duration::from_millis(400);
/// Default pool utilisation (checked-out connections / `max_size`, percent) from which the
/// `connection_pool` check is `degraded`: 80 %.
pub const DEFAULT_POOL_UTILIZATION_DEGRADED: f64 = 80.0;
/// Default server connection usage (client backends / `max_connections`, percent) from which
/// the `database_resources` check is `degraded`: 90 %.
pub const DEFAULT_CONNECTIONS_USAGE_DEGRADED: f64 = 90.0;
/// Default result cache lifetime: zero (off; concurrent calls still share one run).
pub const DEFAULT_CACHE_TTL: Duration = Duration::ZERO;

/// The settings of a [`DatabaseHealthChecker`](crate::DatabaseHealthChecker); every field has a `DEFAULT_*` constant.
///
/// A time threshold marks a check `degraded` when the measured time is at or above it; a
/// percentage threshold when the measured percentage is at or above it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Bound of every health call, from the call to its answer ([`DEFAULT_TIMEOUT`], 800 ms).
    pub timeout: Duration,
    /// `connectivity` is degraded when acquiring a connection plus `SELECT 1` takes this long
    /// ([`DEFAULT_SLOW_CONNECTIVITY`], 250 ms).
    pub slow_connectivity: Duration,
    /// `query_performance` is degraded when `SELECT 1` takes this long
    /// ([`DEFAULT_SLOW_SIMPLE_QUERY`], 125 ms).
    pub slow_simple_query: Duration,
    /// `query_performance` is degraded when the catalog query takes this long
    /// ([`DEFAULT_SLOW_COMPLEX_QUERY`], 400 ms).
    pub slow_complex_query: Duration,
    /// `connection_pool` is degraded at this utilisation, in percent
    /// ([`DEFAULT_POOL_UTILIZATION_DEGRADED`], 80). Also degraded whenever a caller waits for
    /// a connection.
    pub pool_utilization_degraded: f64,
    /// `database_resources` is degraded when the server's client connections reach this
    /// percentage of `max_connections` ([`DEFAULT_CONNECTIONS_USAGE_DEGRADED`], 90).
    pub connections_usage_degraded: f64,
    /// How long a result is reused by later calls ([`DEFAULT_CACHE_TTL`], zero: off).
    pub cache_ttl: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            slow_connectivity: DEFAULT_SLOW_CONNECTIVITY,
            slow_simple_query: DEFAULT_SLOW_SIMPLE_QUERY,
            slow_complex_query: DEFAULT_SLOW_COMPLEX_QUERY,
            pool_utilization_degraded: DEFAULT_POOL_UTILIZATION_DEGRADED,
            connections_usage_degraded: DEFAULT_CONNECTIONS_USAGE_DEGRADED,
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.timeout.is_zero() {
            return Err(Error::HealthConfig(
                "timeout must be above zero (every check would fail at once)".into(),
            ));
        }
        if self.timeout > MAX_TIMEOUT {
            return Err(Error::HealthConfig(format!(
                "timeout must be at most {} s (a health check that waits longer answers no probe), got {:?}",
                MAX_TIMEOUT.as_secs(),
                self.timeout
            )));
        }
        for (name, value) in [
            ("pool_utilization_degraded", self.pool_utilization_degraded),
            (
                "connections_usage_degraded",
                self.connections_usage_degraded,
            ),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(Error::HealthConfig(format!(
                    "{name} is a percentage and must be between 0 and 100, got {value}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_errors() {
        let bad = [
            HealthConfig {
                timeout: Duration::ZERO,
                ..HealthConfig::default()
            },
            HealthConfig {
                pool_utilization_degraded: 120.0,
                ..HealthConfig::default()
            },
            HealthConfig {
                connections_usage_degraded: f64::NAN,
                ..HealthConfig::default()
            },
            HealthConfig {
                // would overflow `Instant + timeout`
                timeout: Duration::MAX,
                ..HealthConfig::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.starts_with("invalid health check configuration"),
                "{err}"
            );
        }
        assert!(HealthConfig::default().validate().is_ok());
    }

    #[test]
    fn the_defaults_answer_a_kubernetes_probe_in_time() {
        let config = HealthConfig::default();
        // Kubernetes' default probe timeout is 1 s: the check must answer before it.
        assert_eq!(config.timeout, Duration::from_millis(800));
        // Every time threshold can be crossed before the deadline makes the check unhealthy.
        for threshold in [
            config.slow_connectivity,
            config.slow_simple_query,
            config.slow_complex_query,
        ] {
            assert!(threshold < config.timeout, "{threshold:?}");
        }
    }
}
