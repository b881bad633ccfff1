//! Leak detection, once per driver: a connection held past the tracked pool's threshold is
//! counted once and logged once with the source location of its checkout. Its own test binary:
//! the warning is captured by a `tracing` subscriber set for the test's thread, and no other
//! test of this process emits it.

use std::time::Duration;

use dbmetrics::{DatabaseMetrics, create_infrastructure_enhancer};
use dbmetrics_tests::Captured;
use dbmetrics_tests::drivers::Driver;
use dbmetrics_tests::{database, per_driver, prometheus, scrape, unique};

per_driver!(a_connection_held_past_the_leak_threshold_is_logged_once_with_its_checkout);

async fn a_connection_held_past_the_leak_threshold_is_logged_once_with_its_checkout<D: Driver>() {
    prometheus();
    let service = unique(&format!("drv_leak_{}", D::NAME));
    let leaks = || {
        scrape()
            .get(
                &format!("{service}_database_connection_leaks_total"),
                &[("pool", "leaky")],
            )
            .expect("the leak counter is rendered")
    };
    let pool = D::pool(&database().config, 2, Duration::from_secs(10));
    // The poller does not tick during the test: the release reports the leak.
    let metrics = DatabaseMetrics::builder(&pool, &service)
        .pool_name("leaky")
        .poll_interval(Duration::from_secs(600))
        .build()
        .unwrap();
    let tracked = create_infrastructure_enhancer(metrics)
        .enhance_pool(pool.clone(), "leaky")
        .leak_threshold(Duration::from_millis(100));
    let captured = Captured::default();
    let _subscriber = tracing::subscriber::set_default(captured.subscriber());

    // Held shorter than the threshold: no leak.
    let conn = tracked.get().await.unwrap();
    drop(conn);
    assert_eq!(leaks(), 0.0);

    let conn = tracked.get().await.unwrap();
    let line = line!() - 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    assert_eq!(leaks(), 1.0);
    let text = captured.text();
    assert_eq!(
        text.matches("leak threshold").count(),
        1,
        "one warning in {text:?}"
    );
    assert!(
        text.contains(&format!("{}:{line}", file!())),
        "the warning names the checkout at {}:{line}: {text}",
        file!()
    );
    assert!(text.contains(&service), "{text}");
    assert!(text.contains("leaky"), "{text}");
}
