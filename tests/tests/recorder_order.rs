//! Order does not matter: monitoring set up, and tracked calls made, before the exporter is
//! installed through `dbmetrics::exporter` reach it from then on — descriptions, pool gauges,
//! checkout series, every call site's series. One test function: the global recorder is
//! installed once per process, so the order of these steps is the test.

use std::time::Duration;

use dbmetrics::{
    DatabaseMetrics, Operation, QueryPerformanceTracker, TrackedRepository,
    create_infrastructure_enhancer, track_query, track_transaction,
};
use dbmetrics_tests::{Exposition, database};

#[derive(Clone, TrackedRepository)]
struct Repo {
    metrics: DatabaseMetrics,
}

impl Repo {
    #[track_query(select, "early")]
    async fn lookup(&self) -> Result<u8, std::io::Error> {
        Ok(1)
    }

    #[track_transaction("early_tx")]
    async fn transaction(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

const SERVICE: &str = "order_late";

fn query_count(e: &Exposition, table: &str) -> f64 {
    e.get(
        &format!("{SERVICE}_database_query_duration_seconds_count"),
        &[
            ("operation", "select"),
            ("table", table),
            ("result", "success"),
        ],
    )
    .unwrap_or(-1.0)
}

#[test]
fn a_recorder_installed_after_setup_receives_everything_from_then_on() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Before any recorder: set up, check out, call every kind of tracked site.
        let pool = database().pool(2);
        let metrics = DatabaseMetrics::builder(&pool, SERVICE)
            // No tick during the test: what is rendered was published at setup or install.
            .poll_interval(Duration::from_secs(10))
            .build()
            .unwrap();
        let tracked = create_infrastructure_enhancer(metrics.clone()).enhance_pool(pool, "default");
        let repo = Repo {
            metrics: metrics.clone(),
        };
        let tracker = QueryPerformanceTracker::new(metrics.clone());
        for _ in 0..3 {
            repo.lookup().await.unwrap();
            repo.transaction().await.unwrap();
            let _: Result<(), std::io::Error> = tracker
                .track_query(Operation::Select, "early_tracker", async { Ok(()) })
                .await;
            drop(tracked.get().await.unwrap());
        }

        let held = tracked.get().await.unwrap();

        // Now the exporter: the pool gauges are published to it at once, as the pool is now.
        let prometheus = dbmetrics::exporter::install_recorder().unwrap();
        let e = Exposition::parse(&prometheus.render());
        let gauge = |g: &str| e.get(&format!("{SERVICE}_database_{g}"), &[("pool", "default")]);
        assert_eq!(gauge("connections_active"), Some(1.0));
        assert_eq!(gauge("connections_max"), Some(2.0));
        assert_eq!(gauge("connections_acquired_total"), Some(0.0));

        drop(tracked.get().await.unwrap());
        for _ in 0..2 {
            repo.lookup().await.unwrap();
            repo.transaction().await.unwrap();
            let _: Result<(), std::io::Error> = tracker
                .track_query(Operation::Select, "early_tracker", async { Ok(()) })
                .await;
        }

        let e = Exposition::parse(&prometheus.render());

        // Descriptions reached the recorder installed later.
        for suffix in [
            "database_query_duration_seconds",
            "database_connections_active",
            "database_transactions_total",
        ] {
            let name = format!("{SERVICE}_{suffix}");
            assert!(e.help.contains_key(&name), "no HELP for {name}");
        }
        assert_eq!(
            e.types[&format!("{SERVICE}_database_query_duration_seconds")],
            "histogram"
        );
        // Checkout series: the one checkout made after the install.
        let counter = |c: &str| e.get(&format!("{SERVICE}_database_{c}"), &[("pool", "default")]);
        assert_eq!(counter("connections_acquired_total"), Some(1.0));
        assert_eq!(counter("connections_released_total"), Some(1.0));
        // Call sites resolved before the install record into the new recorder: the calls made
        // after it, exactly.
        assert_eq!(query_count(&e, "early"), 2.0);
        assert_eq!(query_count(&e, "early_tracker"), 2.0);
        assert_eq!(
            e.get(
                &format!("{SERVICE}_database_transactions_total"),
                &[("transaction", "early_tx"), ("result", "success")]
            ),
            Some(2.0)
        );
        drop(held);
    });
}
