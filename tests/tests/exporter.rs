//! `dbmetrics::exporter::install_exporter` serves the rendered metrics over HTTP, scraped here
//! through a real socket; installing a second recorder, or the listener outside a runtime, is
//! an error that says what to do. One test function: the global recorder is installed once per
//! process, so the order of these steps is the test.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use dbmetrics::{DatabaseMetrics, track_query};
use dbmetrics_tests::Exposition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[track_query(select, "exported", metrics = metrics)]
async fn lookup(metrics: &DatabaseMetrics) -> Result<u8, std::io::Error> {
    Ok(1)
}

async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

#[test]
fn the_http_exporter_serves_metrics_and_misuse_is_an_error() {
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);

    // Outside a runtime: an error, and nothing installed.
    let err = dbmetrics::exporter::install_exporter(addr).unwrap_err();
    assert!(err.to_string().contains("needs a Tokio runtime"), "{err}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let handle = dbmetrics::exporter::install_exporter(addr).unwrap();
        let metrics = DatabaseMetrics::new("exporter_http").unwrap();
        for _ in 0..3 {
            lookup(&metrics).await.unwrap();
        }

        let (head, body) = tokio::time::timeout(Duration::from_secs(10), scrape(addr))
            .await
            .expect("the exporter answers");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let e = Exposition::parse(&body);
        assert_eq!(
            e.types["exporter_http_database_query_duration_seconds"],
            "histogram"
        );
        assert_eq!(
            e.value(
                "exporter_http_database_query_duration_seconds_count",
                &[
                    ("operation", "select"),
                    ("table", "exported"),
                    ("result", "success")
                ]
            ),
            3.0
        );
        // The handle renders the same series.
        assert!(
            handle
                .render()
                .contains("exporter_http_database_query_duration_seconds_count")
        );

        // A second recorder: refused, with what to do.
        let err = dbmetrics::exporter::install_recorder().unwrap_err();
        assert!(
            matches!(err, dbmetrics::Error::RecorderAlreadyInstalled),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("install the dbmetrics exporter once"),
            "{err}"
        );
    });
}
